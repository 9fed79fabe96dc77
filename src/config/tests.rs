//! Unit tests of the parent module.
use std::collections::HashMap;

use super::*;

fn parse(args: &[&str]) -> Result<Config, clap::Error> {
    Config::try_parse_from(std::iter::once("agent-registry").chain(args.iter().copied()))
}

use legacy::LegacyEnv;

fn settings(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse(args)
        .unwrap()
        .settings_with(&LegacyEnv::from_lookup(|name| env.get(name).cloned()))
}

fn redis_url(s: &Settings) -> &str {
    match &s.store {
        StoreSettings::Redis {
            topology: RedisTopology::Url(url),
            ..
        } => url,
        other => panic!("not one Redis by URL: {other:?}"),
    }
}

fn topology(s: &Settings) -> &RedisTopology {
    match &s.store {
        StoreSettings::Redis { topology, .. } => topology,
        StoreSettings::Memory => panic!("memory store"),
    }
}

#[test]
fn defaults_match_the_behaviour_table() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.metrics_port, 9090);
    assert_eq!((c.min_ttl, c.max_ttl, c.removal_grace), (1, 3600, 60));
    let s = settings(&[], &[]).unwrap();
    assert_eq!(s.grpc_addr.port(), 50051);
    assert_eq!(s.ttl.default_ttl, 60);
    assert!(s.require_token);
    assert_eq!(s.store, StoreSettings::Memory);
    assert!(!s.legacy.tokens_relaxed && s.legacy.present.is_empty());
}

#[test]
fn booleans_take_a_value() {
    let s = |v: &str| parse(&["--require-token", v]).unwrap().require_token;
    assert_eq!(s("false"), Some(false));
    assert_eq!(s("true"), Some(true));
    assert!(parse(&["--require-token", "maybe"]).is_err());
}

#[test]
fn the_originals_environment_is_understood() {
    let s = settings(
        &[],
        &[
            ("GRPC_PORT", "50070"),
            ("HEARTBEAT_TIMEOUT_SECONDS", "45"),
            ("ETCD_ENDPOINTS", r#"["redis-master:6379","redis-b:6379"]"#),
            ("ETCD_PREFIX", "neural-hive"),
        ],
    )
    .unwrap();
    assert_eq!(s.grpc_addr.port(), 50070);
    assert_eq!(s.ttl.default_ttl, 45);
    assert_eq!(
        s.store,
        StoreSettings::Redis {
            topology: RedisTopology::Url("redis://redis-master:6379".into()),
            prefix: "neural-hive".into(),
            wait_replicas: 0,
        }
    );
    assert!(!s.require_token, "the original's callers send no token");
    assert!(s.legacy.tokens_relaxed);
    assert_eq!(
        s.legacy.used,
        vec![
            "GRPC_PORT",
            "HEARTBEAT_TIMEOUT_SECONDS",
            "ETCD_PREFIX",
            "ETCD_ENDPOINTS"
        ]
    );
}

#[test]
fn ours_win_over_the_originals() {
    let env = [
        ("GRPC_PORT", "50070"),
        ("HEARTBEAT_TIMEOUT_SECONDS", "45"),
        ("ETCD_ENDPOINTS", "old:6379"),
        ("ETCD_PREFIX", "old"),
    ];
    let s = settings(
        &[
            "--port",
            "50080",
            "--heartbeat-timeout",
            "30",
            "--redis-url",
            "redis://new:6379",
            "--redis-prefix",
            "new",
            "--require-token",
            "true",
        ],
        &env,
    )
    .unwrap();
    assert_eq!(s.grpc_addr.port(), 50080);
    assert_eq!(s.ttl.default_ttl, 30);
    assert_eq!(redis_url(&s), "redis://new:6379");
    assert!(
        s.require_token,
        "an explicit REQUIRE_REGISTRATION_TOKEN wins"
    );
    assert!(s.legacy.used.is_empty());
    assert!(!s.legacy.tokens_relaxed);
}

#[test]
fn cluster_nodes_and_password_make_cluster_seed_urls() {
    let s = settings(
        &[],
        &[
            ("REDIS_CLUSTER_NODES", "redis-0:6379,redis-1:6379"),
            ("REDIS_PASSWORD", "s3cr@t"),
        ],
    );
    // REDIS_CLUSTER_NODES and REDIS_PASSWORD are read by clap as ours;
    // here only the legacy lookup sees them, so parse them as flags.
    assert!(s.unwrap().legacy.tokens_relaxed);
    let s = settings(
        &[
            "--redis-cluster-nodes",
            r#"["redis-0:6379"]"#,
            "--redis-password",
            "s3cr@t",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        topology(&s),
        &RedisTopology::Cluster(vec!["redis://:s3cr%40t@redis-0:6379".into()])
    );
    assert!(format!("{s:?}").contains("***"), "{s:?}");
    assert!(!format!("{s:?}").contains("s3cr"), "{s:?}");
}

#[test]
fn one_redis_topology_at_a_time() {
    let err = settings(
        &["--redis-url", "redis://a:1", "--redis-cluster-nodes", "b:1"],
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("--redis-url"));
}

#[test]
fn every_pair_of_topologies_is_refused_naming_the_first() {
    for (args, first) in [
        (
            &["--redis-url", "redis://a:1", "--redis-sentinels", "b:1"][..],
            "--redis-url",
        ),
        (
            &["--redis-sentinels", "b:1", "--redis-cluster-nodes", "c:1"][..],
            "--redis-sentinels",
        ),
        (
            &[
                "--redis-url",
                "redis://a:1",
                "--redis-sentinels",
                "b:1",
                "--redis-cluster-nodes",
                "c:1",
            ][..],
            "--redis-url",
        ),
    ] {
        let err = settings(args, &[]).unwrap_err();
        assert!(err.to_string().starts_with(first), "{args:?}: {err}");
    }
}

#[test]
fn sentinels_resolve_the_named_master_with_their_own_password() {
    let s = settings(
        &[
            "--redis-sentinels",
            "s-0:26379, s-1:26379",
            "--redis-sentinel-master",
            "registry-primary",
            "--redis-sentinel-password",
            "sent:pw",
            "--redis-username",
            "app",
            "--redis-password",
            "data-pw",
            "--redis-tls",
            "true",
            "--redis-wait-replicas",
            "1",
        ],
        &[],
    )
    .unwrap();
    let StoreSettings::Redis { wait_replicas, .. } = &s.store else {
        panic!("memory store");
    };
    assert_eq!(*wait_replicas, 1);
    assert_eq!(
        topology(&s),
        &RedisTopology::Sentinel {
            sentinels: vec![
                "rediss://:sent%3Apw@s-0:26379".into(),
                "rediss://:sent%3Apw@s-1:26379".into(),
            ],
            master: "registry-primary".into(),
            username: Some("app".into()),
            password: Some("data-pw".into()),
            tls: true,
        }
    );
    let logged = format!("{s:?}");
    assert!(
        !logged.contains("sent%3Apw") && !logged.contains("data-pw"),
        "{logged}"
    );
    assert!(logged.contains("registry-primary"), "{logged}");
}

#[test]
fn sentinel_defaults_and_auto() {
    let s = settings(&["--redis-sentinels", "127.0.0.1:26379"], &[]).unwrap();
    assert_eq!(
        topology(&s),
        &RedisTopology::Sentinel {
            sentinels: vec!["redis://127.0.0.1:26379".into()],
            master: "mymaster".into(),
            username: None,
            password: None,
            tls: false,
        },
        "auto picks redis; the master is mymaster; no TLS"
    );
    let StoreSettings::Redis { wait_replicas, .. } = &s.store else {
        panic!("memory store");
    };
    assert_eq!(*wait_replicas, 0);
}

#[test]
fn cluster_nodes_take_tls_and_keep_every_seed() {
    let s = settings(
        &[
            "--redis-cluster-nodes",
            "a:7000,b:7001,rediss://c:7002",
            "--redis-tls",
            "true",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        topology(&s),
        &RedisTopology::Cluster(vec![
            "rediss://a:7000".into(),
            "rediss://b:7001".into(),
            "rediss://c:7002".into(),
        ])
    );
}

#[test]
fn bad_topology_values_name_their_setting() {
    let err = settings(&["--redis-sentinels", "s-0"], &[]).unwrap_err();
    assert!(err.to_string().starts_with("--redis-sentinels"), "{err}");
    let err = settings(&["--redis-cluster-nodes", "a:1,nope"], &[]).unwrap_err();
    assert!(
        err.to_string().starts_with("--redis-cluster-nodes"),
        "{err}"
    );
    let err = settings(
        &["--redis-sentinels", "s:1", "--redis-sentinel-master", " "],
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("--redis-sentinel-master"),
        "{err}"
    );
    assert!(parse(&["--redis-wait-replicas", "-1"]).is_err());
    assert!(parse(&["--redis-tls", "maybe"]).is_err());
}

#[test]
fn bad_legacy_values_name_the_variable() {
    let err = settings(&[], &[("GRPC_PORT", "x")]).unwrap_err();
    assert!(err.to_string().starts_with("GRPC_PORT"));
    let err = settings(&[], &[("ETCD_ENDPOINTS", "[oops")]).unwrap_err();
    assert!(err.to_string().starts_with("ETCD_ENDPOINTS"));
}

#[test]
fn bad_numbers_are_usage_errors_naming_the_flag() {
    let err = parse(&["--port", "http"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().lines().next().unwrap().contains("--port"));
}

#[test]
fn min_above_max_is_refused() {
    let err = parse(&["--min-ttl", "10", "--max-ttl", "5"])
        .unwrap()
        .settings()
        .unwrap_err();
    assert!(err.to_string().starts_with("--min-ttl"));
}

#[test]
fn redis_store_needs_a_url() {
    let err = parse(&["--store", "redis"])
        .unwrap()
        .settings()
        .unwrap_err();
    assert!(err.to_string().starts_with("--store"));
}

#[test]
fn auto_picks_redis_only_with_a_url() {
    let memory = parse(&[]).unwrap().settings().unwrap();
    assert_eq!(memory.store, StoreSettings::Memory);
    let redis = parse(&["--redis-url", "redis://127.0.0.1:6379"])
        .unwrap()
        .settings()
        .unwrap();
    assert!(matches!(redis.store, StoreSettings::Redis { .. }));
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(
        redact_url("redis://user:hunter2@host:6379/0"),
        "redis://user:***@host:6379/0"
    );
    assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
}

#[test]
fn the_http_port_defaults_to_8080_zero_picks_one_and_none_turns_it_off() {
    let port = |args: &[&str]| settings(args, &[]).unwrap().http_addr.map(|a| a.port());
    assert_eq!(port(&[]), Some(8080));
    assert_eq!(port(&["--http-port", "0"]), Some(0));
    assert_eq!(port(&["--http-port", "8081"]), Some(8081));
    assert_eq!(port(&["--http-port", "none"]), None);
    assert_eq!(port(&["--http-port", "NONE"]), None);
    assert!(parse(&["--http-port", "nowhere"]).is_err());
}
