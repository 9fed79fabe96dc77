//! Prometheus metrics: calls, population (registry-wide across replicas),
//! store failures and aborted streams, expiry.

use std::time::Duration;

use agent_registry::pb;
use tonic::Code;

use crate::{common::*, support::*};

const REGISTER: &str = "service_registry_register_total";
const HEARTBEAT: &str = "service_registry_heartbeat_total";
const DEREGISTER: &str = "service_registry_deregister_total";
const DISCOVER: &str = "service_registry_discover_total";
const NOTIFY: &str = "service_registry_notify_total";
const AGENTS: &str = "service_registry_agents_total";
const EVENTS: &str = "service_registry_events_total";
const WATCHERS: &str = "service_registry_watchers";
const SUBSCRIBERS: &str = "service_registry_subscribers";
const OK: &[(&str, &str)] = &[("result", "ok")];

fn agents(agent_type: &'static str, status: &'static str) -> [(&'static str, &'static str); 2] {
    [("agent_type", agent_type), ("status", status)]
}

async fn metrics_count_calls(backend: Backend) {
    let server = TestServer::start(backend).await;
    let addr = server.metrics_addr;
    let mut client = server.client().await;

    // /metrics answers Prometheus text with the documented families.
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for family in [
        AGENTS,
        WATCHERS,
        SUBSCRIBERS,
        "service_registry_expired_total",
        "service_registry_store_errors_total",
        "service_registry_watch_aborted_total",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "/metrics lacks {family}:\n{body}"
        );
    }
    let before = scrape(addr).await;
    assert_eq!(
        metric(&before, AGENTS, &agents("WORKER", "HEALTHY")),
        Some(0.0)
    );
    let ok_before = counter(&before, REGISTER, OK);
    let invalid = [("result", "INVALID_ARGUMENT")];
    let invalid_before = counter(&before, REGISTER, &invalid);

    // N = 7 successful Registers: 5 workers and 2 scouts.
    let mut workers = Vec::new();
    for i in 0..5 {
        let cap = format!("cap-{i}");
        workers.push(
            client
                .register(worker(&["metrics", &cap]))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    for _ in 0..2 {
        client.register(scout(&["metrics"])).await.unwrap();
    }
    // 3 malformed Registers (agent_type 0).
    for _ in 0..3 {
        let bad = pb::RegisterRequest {
            agent_type: 0,
            ..register_request(&["metrics"])
        };
        let status = client.register(bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let after = scrape(addr).await;
    assert_eq!(
        counter(&after, REGISTER, OK) - ok_before,
        7.0,
        "register_total{{ok}} delta"
    );
    assert_eq!(
        counter(&after, REGISTER, &invalid) - invalid_before,
        3.0,
        "register_total{{INVALID_ARGUMENT}} delta"
    );
    assert_eq!(
        metric(&after, AGENTS, &agents("WORKER", "HEALTHY")),
        Some(5.0)
    );
    assert_eq!(
        metric(&after, AGENTS, &agents("SCOUT", "HEALTHY")),
        Some(2.0)
    );
    assert_eq!(
        metric(&after, AGENTS, &agents("WORKER", "UNHEALTHY")),
        Some(0.0)
    );
    assert_eq!(
        metric(&after, AGENTS, &agents("GUARD", "HEALTHY")),
        Some(0.0)
    );
    assert_eq!(
        counter(&after, EVENTS, &[("event_type", "REGISTERED")]),
        7.0
    );
    let register_count = metric(
        &after,
        "service_registry_latency_seconds_count",
        &[("operation", "register")],
    )
    .expect("latency_seconds_count{operation=register}");
    assert_eq!(register_count, 10.0, "every Register call is timed");
    assert!(
        after
            .iter()
            .any(|s| s.metric == "service_registry_latency_seconds"
                && s.labels.get("operation") == Some("register")
                && matches!(&s.value, prometheus_parse::Value::Histogram(b) if !b.is_empty())),
        "latency_seconds is a histogram with buckets for register"
    );

    // The other counted calls, one ok and one failure each.
    let first = &workers[0];
    let unhealthy = pb::AgentTelemetry {
        success_rate: 0.1,
        total_executions: 10,
        failed_executions: 9,
        ..Default::default()
    };
    client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: first.agent_id.clone(),
            telemetry: Some(unhealthy),
            registration_token: first.registration_token.clone(),
        })
        .await
        .unwrap();
    let missing = client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: "00000000-0000-4000-8000-000000000000".into(),
            registration_token: first.registration_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    client
        .discover_agents(pb::DiscoverRequest {
            capabilities: vec!["metrics".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .notify_agent(pb::NotifyAgentRequest {
            agent_id: first.agent_id.clone(),
            message: "hi".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let wrong = client
        .deregister(pb::DeregisterRequest {
            agent_id: workers[1].agent_id.clone(),
            registration_token: "not-the-token-of-this-agent".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    client
        .deregister(pb::DeregisterRequest {
            agent_id: workers[1].agent_id.clone(),
            registration_token: workers[1].registration_token.clone(),
        })
        .await
        .unwrap();
    let later = scrape(addr).await;
    assert_eq!(
        counter(&later, HEARTBEAT, OK) - counter(&after, HEARTBEAT, OK),
        1.0
    );
    assert_eq!(counter(&later, HEARTBEAT, &[("result", "NOT_FOUND")]), 1.0);
    assert_eq!(
        counter(&later, DISCOVER, OK) - counter(&after, DISCOVER, OK),
        1.0
    );
    assert_eq!(
        counter(&later, NOTIFY, OK) - counter(&after, NOTIFY, OK),
        1.0
    );
    assert_eq!(
        counter(&later, DEREGISTER, OK) - counter(&after, DEREGISTER, OK),
        1.0
    );
    assert_eq!(
        counter(&later, DEREGISTER, &[("result", "PERMISSION_DENIED")]),
        1.0
    );
    assert_eq!(
        counter(&later, REGISTER, OK),
        counter(&after, REGISTER, OK),
        "no extra registers counted"
    );
    // Population follows: one worker UNHEALTHY, one gone.
    assert_eq!(
        metric(&later, AGENTS, &agents("WORKER", "HEALTHY")),
        Some(3.0)
    );
    assert_eq!(
        metric(&later, AGENTS, &agents("WORKER", "UNHEALTHY")),
        Some(1.0)
    );
    assert_eq!(
        counter(&later, EVENTS, &[("event_type", "DEREGISTERED")]),
        1.0
    );
    assert_eq!(counter(&later, EVENTS, &[("event_type", "UPDATED")]), 1.0);
    assert_eq!(
        counter(&later, EVENTS, &[("event_type", "STATUS_CHANGED")]),
        1.0
    );
    for op in ["heartbeat", "deregister", "discover_agents", "notify_agent"] {
        assert!(
            metric(
                &later,
                "service_registry_latency_seconds_count",
                &[("operation", op)]
            )
            .is_some_and(|n| n >= 1.0),
            "latency_seconds_count{{operation={op}}}"
        );
    }
    assert_eq!(
        counter(&later, "service_registry_store_errors_total", &[]),
        0.0
    );

    // Watchers: 3 open WatchAgents streams, then none once dropped.
    assert_eq!(metric(&later, WATCHERS, &[]), Some(0.0));
    let mut watches = Vec::new();
    for _ in 0..3 {
        let stream = client
            .watch_agents(pb::WatchAgentsRequest::default())
            .await
            .unwrap()
            .into_inner();
        watches.push(stream);
    }
    wait_gauge(addr, WATCHERS, &[], 3.0, Duration::from_secs(2)).await;
    drop(watches);
    wait_gauge(addr, WATCHERS, &[], 0.0, Duration::from_secs(2)).await;

    // Subscribers likewise.
    assert_eq!(metric_now(addr, SUBSCRIBERS, &[]).await, Some(0.0));
    let mut subscriptions = Vec::new();
    for agent in [&workers[0], &workers[2], &workers[3]] {
        let stream = client
            .subscribe_notifications(pb::SubscribeNotificationsRequest {
                agent_id: agent.agent_id.clone(),
                registration_token: agent.registration_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        subscriptions.push(stream);
    }
    wait_gauge(addr, SUBSCRIBERS, &[], 3.0, Duration::from_secs(2)).await;
    drop(subscriptions);
    wait_gauge(addr, SUBSCRIBERS, &[], 0.0, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_memory() {
    metrics_count_calls(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_redis() {
    metrics_count_calls(Backend::Redis).await;
}

/// Every replica reports the whole population (read from its view), while
/// call counters are its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_population_is_registry_wide_across_replicas() {
    let redis = RedisProcess::start().await;
    let a = TestServer::replica(&redis, &[]).await;
    let b = TestServer::replica(&redis, &[]).await;
    let mut client = a.client().await;
    let mut registered = Vec::new();
    for _ in 0..4 {
        registered.push(
            client
                .register(worker(&["replicated"]))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    client.register(scout(&["replicated"])).await.unwrap();

    wait_gauge(
        b.metrics_addr,
        AGENTS,
        &agents("WORKER", "HEALTHY"),
        4.0,
        Duration::from_secs(2),
    )
    .await;
    let on_b = scrape(b.metrics_addr).await;
    assert_eq!(
        metric(&on_b, AGENTS, &agents("SCOUT", "HEALTHY")),
        Some(1.0)
    );
    assert_eq!(
        counter(&on_b, REGISTER, OK),
        0.0,
        "B counted calls it did not take"
    );
    assert_eq!(counter(&on_b, EVENTS, &[("event_type", "REGISTERED")]), 5.0);
    assert_eq!(counter(&scrape(a.metrics_addr).await, REGISTER, OK), 5.0);

    // A status change on A shows on B.
    let first = &registered[0];
    client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: first.agent_id.clone(),
            registration_token: first.registration_token.clone(),
            telemetry: Some(pb::AgentTelemetry {
                success_rate: 0.4,
                total_executions: 10,
                failed_executions: 6,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    wait_gauge(
        b.metrics_addr,
        AGENTS,
        &agents("WORKER", "DEGRADED"),
        1.0,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        metric_now(b.metrics_addr, AGENTS, &agents("WORKER", "HEALTHY")).await,
        Some(3.0)
    );

    // A deregistration on B shows on A.
    let mut client_b = b.client().await;
    client_b
        .deregister(pb::DeregisterRequest {
            agent_id: registered[1].agent_id.clone(),
            registration_token: registered[1].registration_token.clone(),
        })
        .await
        .unwrap();
    wait_gauge(
        a.metrics_addr,
        AGENTS,
        &agents("WORKER", "HEALTHY"),
        2.0,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(counter(&scrape(b.metrics_addr).await, DEREGISTER, OK), 1.0);
    assert_eq!(counter(&scrape(a.metrics_addr).await, DEREGISTER, OK), 0.0);
}

/// While Redis is down the failure counters move: writes are counted under
/// UNAVAILABLE and as store errors, and the aborted watch is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_store_failures_and_aborted_streams() {
    let mut redis = RedisProcess::start().await;
    let server = TestServer::replica(&redis, &[]).await;
    let addr = server.metrics_addr;
    let mut client = server.client().await;
    let mut watch = client
        .watch_agents(pb::WatchAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    wait_gauge(addr, WATCHERS, &[], 1.0, Duration::from_secs(2)).await;
    let before = scrape(addr).await;
    assert_eq!(
        counter(&before, "service_registry_watch_aborted_total", &[]),
        0.0
    );
    assert_eq!(
        counter(&before, "service_registry_store_errors_total", &[]),
        0.0
    );

    redis.kill();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(3), watch.message()).await {
            Err(_) => panic!("watch still open 3 s after Redis died"),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("watch ended without a status"),
            Ok(Err(status)) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Aborted);
    let refused = client.register(worker(&["down"])).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    let after = scrape(addr).await;
    assert!(counter(&after, "service_registry_watch_aborted_total", &[]) >= 1.0);
    assert!(counter(&after, "service_registry_store_errors_total", &[]) >= 1.0);
    assert_eq!(counter(&after, REGISTER, &[("result", "UNAVAILABLE")]), 1.0);
    assert_eq!(counter(&after, REGISTER, OK), 0.0);
    wait_gauge(addr, WATCHERS, &[], 0.0, Duration::from_secs(2)).await;
}

/// Expiry is counted: expired_total, events EXPIRED and STATUS_CHANGED, and
/// the population gauges follow the agent from HEALTHY to UNHEALTHY to gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_expiry() {
    let server = TestServer::start(Backend::Memory).await;
    let addr = server.metrics_addr;
    let mut client = server.client().await;
    client
        .register(pb::RegisterRequest {
            ttl_seconds: 1,
            ..worker(&["short-lived"])
        })
        .await
        .unwrap();
    assert_eq!(
        metric_now(addr, AGENTS, &agents("WORKER", "HEALTHY")).await,
        Some(1.0)
    );
    wait_gauge(
        addr,
        AGENTS,
        &agents("WORKER", "UNHEALTHY"),
        1.0,
        Duration::from_secs(3),
    )
    .await;
    wait_gauge(
        addr,
        "service_registry_expired_total",
        &[],
        1.0,
        Duration::from_secs(3),
    )
    .await;
    let after = scrape(addr).await;
    assert_eq!(
        metric(&after, AGENTS, &agents("WORKER", "UNHEALTHY")),
        Some(0.0)
    );
    assert_eq!(
        metric(&after, AGENTS, &agents("WORKER", "HEALTHY")),
        Some(0.0)
    );
    assert_eq!(counter(&after, EVENTS, &[("event_type", "EXPIRED")]), 1.0);
    assert_eq!(
        counter(&after, EVENTS, &[("event_type", "STATUS_CHANGED")]),
        1.0
    );
}
