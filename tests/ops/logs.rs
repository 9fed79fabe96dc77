//! Logs never contain a secret: neither a registration token nor the Redis
//! password of the start-up line.

use std::time::Duration;

use agent_registry::pb;
use tonic::Code;

use crate::{common::*, support::*};

/// The start-up line shows the effective configuration with the Redis
/// password redacted; the process runs although this Redis never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_line_redacts_the_redis_password() {
    let secret = "s3cretRedisPassw0rd";
    let url = format!("redis://ops:{secret}@127.0.0.1:{}/0", free_port());
    let mut registry = Registry::spawn(&["--store", "redis", "--redis-url", &url], &[]);
    let metrics = registry.metrics;
    wait_until(Duration::from_secs(5), "/healthz 200", || async move {
        http_status(metrics, "/healthz").await == Some(200)
    })
    .await;
    wait_until(Duration::from_secs(5), "start line logged", || {
        let logged = registry.stderr().contains("agent registry started");
        async move { logged }
    })
    .await;
    assert_eq!(http_status(metrics, "/readyz").await, Some(503));
    registry.signal("-TERM");
    let status = registry
        .wait_exit(Duration::from_secs(12))
        .await
        .unwrap_or_else(|| panic!("still running 12 s after SIGTERM\n{}", registry.tail()));
    assert_eq!(status.code(), Some(0), "{}", registry.tail());
    let log = registry.stderr();
    assert!(
        !log.contains(secret),
        "the Redis password is logged:\n{log}"
    );
    let started_line = log
        .lines()
        .find(|l| l.contains("agent registry started"))
        .unwrap();
    assert!(started_line.contains("ops:***@127.0.0.1"), "{started_line}");
}

async fn token_never_logged(store: &[&str]) {
    let mut args = vec!["--require-token", "true", "--log-format", "json"];
    args.extend_from_slice(store);
    let mut registry =
        Registry::start(&args, &[("RUST_LOG", "debug"), ("LOG_FORMAT", "json")]).await;
    let mut client = registry.client().await;
    let wrong_token = "WrongTokenOfSomeoneElse_0123456789abcdefXYZ";
    let client_token = "ClientChosenTokenForRecreate_9876543210zyxw";

    let registered = client
        .register(pb::RegisterRequest {
            metadata: [("team".to_string(), "ops-log-test".to_string())].into(),
            telemetry: Some(pb::AgentTelemetry {
                success_rate: 0.9,
                avg_duration_ms: 12,
                total_executions: 10,
                failed_executions: 1,
                last_execution_at: 1_700_000_000,
            }),
            ..register_request(&["logging"])
        })
        .await
        .unwrap()
        .into_inner();
    let id = registered.agent_id.clone();
    let token = registered.registration_token.clone();
    assert!(token.len() >= 22);

    // Heartbeat with the token in the field, then in the metadata.
    client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: id.clone(),
            registration_token: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .heartbeat(with_token(
            pb::HeartbeatRequest {
                agent_id: id.clone(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap();
    // Re-register in place with id + token.
    let again = client
        .register(pb::RegisterRequest {
            agent_id: id.clone(),
            registration_token: token.clone(),
            ..register_request(&["logging", "again"])
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.agent_id, id);
    // A wrong token, in the field and in the metadata.
    let denied = client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: id.clone(),
            registration_token: wrong_token.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = client
        .deregister(with_token(
            pb::DeregisterRequest {
                agent_id: id.clone(),
                ..Default::default()
            },
            wrong_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Re-creation under an unknown id keeps the client's token.
    let recreated_id = "7b4d1e1a-3c52-4f7e-9a3b-2d8f6c1e0a55";
    client
        .register(pb::RegisterRequest {
            agent_id: recreated_id.into(),
            registration_token: client_token.into(),
            ..register_request(&["logging"])
        })
        .await
        .unwrap();
    // Subscribe, get a notification, unsubscribe.
    let mut notifications = client
        .subscribe_notifications(with_token(
            pb::SubscribeNotificationsRequest {
                agent_id: id.clone(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    client
        .notify_agent(pb::NotifyAgentRequest {
            agent_id: id.clone(),
            message: "hello".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), notifications.message())
        .await
        .expect("notification in time")
        .unwrap()
        .expect("stream open");
    assert_eq!(got.message, "hello");
    drop(notifications);
    // Deregister both.
    for (agent_id, secret) in [(id.as_str(), token.as_str()), (recreated_id, client_token)] {
        let gone = client
            .deregister(pb::DeregisterRequest {
                agent_id: agent_id.into(),
                registration_token: secret.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(gone.success);
    }
    drop(client);

    registry.signal("-TERM");
    let status = registry
        .wait_exit(Duration::from_secs(12))
        .await
        .unwrap_or_else(|| panic!("still running 12 s after SIGTERM\n{}", registry.tail()));
    assert_eq!(status.code(), Some(0));

    let log = registry.stderr();
    assert!(!log.trim().is_empty(), "nothing logged");
    eprintln!(
        "{} log lines; first call finished line: {:?}",
        log.lines().count(),
        log.lines().find(|l| l.contains("call finished"))
    );
    for (n, line) in log
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line = line.trim();
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "log line {} is not a JSON object: {line}",
            n + 1
        );
    }
    assert!(log.contains(&id), "the agent id is not logged");
    let finished: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("call finished"))
        .collect();
    assert!(
        !finished.is_empty(),
        "no \"call finished\" line at debug level"
    );
    assert!(
        finished
            .iter()
            .all(|l| l.contains("\"code\"") && l.contains("\"rpc\"") && l.contains("duration_ms")),
        "call finished lines lack rpc/code/duration_ms: {finished:#?}"
    );
    assert!(
        finished.iter().any(|l| l.contains("\"Heartbeat\"")
            && l.contains("\"PERMISSION_DENIED\"")
            && l.contains(&id)),
        "no call finished line for the denied heartbeat: {finished:#?}"
    );
    assert!(
        finished
            .iter()
            .any(|l| l.contains("\"Register\"") && l.contains("\"ok\"") && l.contains(&id)),
        "no call finished line for the Register: {finished:#?}"
    );
    for (what, secret) in [
        ("registration token", token.as_str()),
        ("wrong token", wrong_token),
        ("client-chosen token", client_token),
    ] {
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "the {what} is logged:\n{}",
            leaks.join("\n")
        );
    }
    // A fragment of the token (e.g. a truncated field) is not logged either.
    assert!(
        !log.contains(&token[..16]),
        "a prefix of the token is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_tokens_memory() {
    token_never_logged(&["--store", "memory"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_tokens_redis() {
    let redis = RedisProcess::start().await;
    token_never_logged(&["--store", "redis", "--redis-url", &redis.url()]).await;
}
