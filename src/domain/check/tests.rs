//! Unit tests of the parent module.
use super::*;

fn req(kind: i32) -> CheckRequest {
    CheckRequest {
        kind,
        ..CheckRequest::default()
    }
}

fn field(e: Error) -> &'static str {
    match e {
        Error::InvalidArgument { field, .. } => field,
        other => panic!("{other}"),
    }
}

#[test]
fn defaults_are_filled_in() {
    assert_eq!(grant(req(0), "a:1").unwrap(), None);
    let http = grant(req(2), "a:1").unwrap().unwrap();
    assert_eq!(
        http,
        HealthCheck {
            kind: CheckKind::Http,
            target: "a:1".into(),
            path: "/health".into(),
            interval_secs: 10,
            timeout_secs: 2,
            failures_before_unhealthy: 3,
            successes_before_healthy: 2,
            deregister_after_secs: 0,
        }
    );
    let grpc = grant(
        CheckRequest {
            interval_seconds: 1,
            target: "b:2".into(),
            ..req(1)
        },
        "",
    )
    .unwrap()
    .unwrap();
    assert_eq!((grpc.path.as_str(), grpc.timeout_secs), ("", 1));
    assert_eq!(grpc.target, "b:2");
}

#[test]
fn each_bad_field_is_named() {
    let bad = |r: CheckRequest, endpoint: &str| field(grant(r, endpoint).unwrap_err());
    assert_eq!(bad(req(9), "a:1"), "health_check.kind");
    assert_eq!(bad(req(3), ""), "health_check.target");
    let t = |target: &str| CheckRequest {
        target: target.into(),
        ..req(3)
    };
    assert_eq!(bad(t("nohost"), ""), "health_check.target");
    assert_eq!(bad(t("h:0"), ""), "health_check.target");
    let with = |f: fn(&mut CheckRequest)| {
        let mut r = req(2);
        f(&mut r);
        bad(r, "a:1")
    };
    assert_eq!(
        with(|r| r.interval_seconds = 3601),
        "health_check.interval_seconds"
    );
    assert_eq!(
        with(|r| r.interval_seconds = -1),
        "health_check.interval_seconds"
    );
    assert_eq!(
        with(|r| {
            r.interval_seconds = 5;
            r.timeout_seconds = 6;
        }),
        "health_check.timeout_seconds"
    );
    assert_eq!(
        with(|r| r.failures_before_unhealthy = 11),
        "health_check.failures_before_unhealthy"
    );
    assert_eq!(
        with(|r| r.successes_before_healthy = -2),
        "health_check.successes_before_healthy"
    );
    assert_eq!(
        with(|r| r.deregister_after_seconds = 5),
        "health_check.deregister_after_seconds"
    );
    assert_eq!(with(|r| r.path = "no-slash".into()), "health_check.path");
}

#[test]
fn deny_list_matches_literals_and_mapped_addresses() {
    let deny = DenyList(vec![
        "169.254.0.0/16".parse().unwrap(),
        "fe80::/10".parse().unwrap(),
    ]);
    assert!(deny.denies("169.254.169.254".parse().unwrap()));
    assert!(deny.denies("::ffff:169.254.1.1".parse().unwrap()));
    assert!(deny.denies("fe80::1".parse().unwrap()));
    assert!(!deny.denies("127.0.0.1".parse().unwrap()));
    assert_eq!(
        literal_host("[fe80::1]:80"),
        Some("fe80::1".parse().unwrap())
    );
    assert_eq!(literal_host("name:80"), None);
    let check = grant(
        CheckRequest {
            target: "169.254.169.254:80".into(),
            ..req(2)
        },
        "",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        field(deny.admit(&check).unwrap_err()),
        "health_check.target"
    );
}

fn check() -> HealthCheck {
    grant(
        CheckRequest {
            interval_seconds: 1,
            deregister_after_seconds: 5,
            ..req(3)
        },
        "a:1",
    )
    .unwrap()
    .unwrap()
}

fn run(c: &HealthCheck, results: &[bool]) -> ProbeStep {
    let mut state = ProbeState::default();
    let mut last = None;
    for (i, passed) in results.iter().enumerate() {
        let step = c.step(
            &state,
            *passed,
            String::new(),
            i64::try_from(i).unwrap() * 1000,
        );
        state = step.state.clone();
        last = Some(step);
    }
    last.unwrap()
}

#[test]
fn hysteresis_both_ways_and_one_flap_changes_nothing() {
    let c = check();
    assert!(!run(&c, &[false, false]).state.failing);
    assert!(run(&c, &[false, false, false]).state.failing);
    assert!(!run(&c, &[false, false, true, false, false]).state.failing);
    assert!(run(&c, &[false, false, false, true]).state.failing);
    assert!(!run(&c, &[false, false, false, true, true]).state.failing);
    assert!(
        run(&c, &[false, false, false, true, false, true])
            .state
            .failing
    );
    assert!(run(&c, &[true]).renews);
    assert!(!run(&c, &[false]).renews);
}

#[test]
fn rendezvous_spreads_and_moves_only_the_leavers_agents() {
    use super::super::AgentId;
    let three: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let two: Vec<String> = three[..2].to_vec();
    let ids: Vec<AgentId> = (0..3000).map(|_| AgentId::new_v4()).collect();
    let mut counts = std::collections::HashMap::new();
    for id in &ids {
        let o = owner(&three, *id).unwrap();
        *counts.entry(o).or_insert(0) += 1;
        if o != "c" {
            assert_eq!(owner(&two, *id), Some(o));
        }
    }
    assert!(counts.values().all(|n| *n > 800), "{counts:?}");
    assert_eq!(owner(&[], ids[0]), None);
}

#[test]
fn removal_after_continuous_failure() {
    let c = check();
    assert!(!run(&c, &[false, false, false, false, false]).remove);
    assert!(run(&c, &[false, false, false, false, false, false]).remove);
    assert!(!run(&c, &[false, false, false, true, false, false]).remove);
    let never = HealthCheck {
        deregister_after_secs: 0,
        ..c
    };
    assert!(!run(&never, &[false; 20]).remove);
}
