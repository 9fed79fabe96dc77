use super::*;

fn caps(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i}")).collect()
}

#[test]
fn capability_limits_count_after_dedupe() {
    assert_eq!(capabilities(caps(64), true).unwrap().len(), 64);
    assert!(capabilities(caps(65), true).is_err());
    let mut dup = caps(64);
    dup.push("c0".into());
    assert_eq!(capabilities(dup, true).unwrap().len(), 64);
    assert_eq!(
        capabilities(vec!["b".into(), "a".into(), "b".into()], true).unwrap(),
        vec!["b".to_owned(), "a".to_owned()]
    );
    assert!(capabilities(vec![], true).is_err());
    assert!(capabilities(vec![], false).unwrap().is_empty());
    assert!(capabilities(vec!["x".repeat(128)], true).is_ok());
    assert!(capabilities(vec!["x".repeat(129)], true).is_err());
    assert!(capabilities(vec!["a\nb".into()], true).is_err());
}

#[test]
fn endpoints() {
    for ok in ["", "10.0.0.1:8080", "[::1]:80", "svc.ns:65535"] {
        assert!(endpoint(ok.into()).is_ok(), "{ok}");
    }
    for bad in ["host", "host:0", "host:65536", ":80", "host:+80", "a b:1"] {
        assert!(endpoint(bad.into()).is_err(), "{bad}");
    }
}

#[test]
fn telemetry_rules() {
    let t = Telemetry::default();
    assert!(telemetry(t).is_ok());
    for bad in [
        Telemetry {
            success_rate: f64::NAN,
            ..t
        },
        Telemetry {
            success_rate: 1.1,
            ..t
        },
        Telemetry {
            success_rate: -0.1,
            ..t
        },
        Telemetry {
            total_executions: -1,
            ..t
        },
        Telemetry {
            total_executions: 1,
            failed_executions: 2,
            ..t
        },
    ] {
        assert!(telemetry(bad).is_err());
    }
}

#[test]
fn numeric_defaults_and_clamps() {
    assert_eq!(ttl(0, 60, 1, 3600).unwrap(), 60);
    assert_eq!(ttl(99_999, 60, 1, 3600).unwrap(), 3600);
    assert!(ttl(-1, 60, 1, 3600).is_err());
    assert_eq!(max_results(0).unwrap(), 5);
    assert_eq!(max_results(5000).unwrap(), 1000);
    assert_eq!(page_size(0).unwrap(), None);
    assert_eq!(page_size(20_000).unwrap(), Some(10_000));
}

#[test]
fn notification_ids() {
    assert_eq!(after_notification_id("").unwrap(), None);
    assert_eq!(after_notification_id("42").unwrap(), Some(42));
    for bad in ["0", "-1", "abc", "+4", " 4"] {
        assert!(after_notification_id(bad).is_err(), "{bad}");
    }
}
