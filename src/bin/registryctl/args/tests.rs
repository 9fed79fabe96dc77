use super::*;

#[test]
fn key_values_parse() {
    assert_eq!(
        parse_key_value("a=b=c"),
        Ok(("a".to_owned(), "b=c".to_owned()))
    );
    assert_eq!(parse_key_value("a="), Ok(("a".to_owned(), String::new())));
    assert!(parse_key_value("=b").is_err());
    assert!(parse_key_value("ab").is_err());
}

#[test]
fn timeouts_must_be_positive() {
    assert_eq!(parse_timeout("1.5"), Ok(Duration::from_millis(1500)));
    assert!(parse_timeout("0").is_err());
    assert!(parse_timeout("-1").is_err());
    assert!(parse_timeout("x").is_err());
}

#[test]
fn tokens_may_start_with_a_hyphen() {
    // Tokens are url-safe base64: one in 64 starts with '-'.
    let cli = Cli::try_parse_from(["registryctl", "heartbeat", "id", "--token", "-Bx"])
        .expect("a token starting with '-' is a value");
    let Command::Heartbeat(args) = cli.command else {
        panic!("parsed as heartbeat");
    };
    assert_eq!(args.token.value.as_deref(), Some("-Bx"));
}

#[test]
fn the_command_line_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}
