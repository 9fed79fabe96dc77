//! Active health checks (BEHAVIOUR.md §10) against real probe targets on
//! loopback, on both stores: validation and defaults, the deny list,
//! hysteresis both ways (and a single flap changing nothing) for HTTP, gRPC
//! and TCP, liveness by probes alone, removal after continuous failure; and
//! on Redis, one prober per agent across replicas with takeover.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;
use common::*;

#[path = "checks/replicas.rs"]
mod replicas;
#[path = "checks/targets.rs"]
mod targets;
#[path = "checks/tools.rs"]
mod tools;

use std::time::Duration;

use agent_registry::pb::{
    self, agent_change_event::EventType, health_check::Kind,
    service_registry_client::ServiceRegistryClient,
};
use tonic::{Code, Streaming, transport::Channel};

use targets::{GRPC_SERVICE, GrpcTarget, HttpTarget, TcpTarget};

type Client = ServiceRegistryClient<Channel>;
type Events = Streaming<pb::AgentChangeEvent>;

/// How long a test waits for an event it expects.
const EVENT_WAIT: Duration = Duration::from_secs(8);

/// A check of `kind` against `target`, probing every second.
fn check(kind: Kind, target: &str) -> pb::HealthCheck {
    pb::HealthCheck {
        kind: kind as i32,
        target: target.to_owned(),
        interval_seconds: 1,
        timeout_seconds: 1,
        failures_before_unhealthy: 2,
        successes_before_healthy: 2,
        ..Default::default()
    }
}

async fn register_checked(
    client: &mut Client,
    check: pb::HealthCheck,
    ttl: i32,
) -> pb::RegisterResponse {
    let mut request = register_request(&["probed"]);
    request.ttl_seconds = ttl;
    request.health_check = Some(check);
    client.register(request).await.unwrap().into_inner()
}

async fn get(client: &mut Client, id: &str) -> Result<pb::AgentInfo, tonic::Status> {
    let request = pb::GetAgentRequest {
        agent_id: id.to_owned(),
    };
    client
        .get_agent(request)
        .await
        .map(|r| r.into_inner().agent.unwrap())
}

/// The next event of agent `id` (others skipped), or `None` after `wait`.
async fn next_of(events: &mut Events, id: &str, wait: Duration) -> Option<pb::AgentChangeEvent> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.message()).await {
            Err(_) => return None,
            Ok(Ok(Some(event))) => {
                if event.agent.as_ref().is_some_and(|a| a.agent_id == id) {
                    return Some(event);
                }
            }
            Ok(other) => panic!("watch stream failed: {other:?}"),
        }
    }
}

/// Waits for a STATUS_CHANGED of `id` to `status`; returns the agent.
async fn expect_status(events: &mut Events, id: &str, status: pb::AgentStatus) -> pb::AgentInfo {
    let mut event = next_of(events, id, EVENT_WAIT)
        .await
        .unwrap_or_else(|| panic!("no event within {EVENT_WAIT:?}, expected {status:?}"));
    if event.event_type == EventType::Registered as i32 {
        event = next_of(events, id, EVENT_WAIT)
            .await
            .unwrap_or_else(|| panic!("no event within {EVENT_WAIT:?}, expected {status:?}"));
    }
    assert_eq!(
        event.event_type,
        EventType::StatusChanged as i32,
        "{event:?}"
    );
    let agent = event.agent.unwrap();
    assert_eq!(agent.status, status as i32, "{agent:?}");
    agent
}

async fn validation_and_defaults(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let refused = |c: pb::HealthCheck, endpoint: &str| {
        let mut request = register_request(&["x"]);
        request.endpoint = endpoint.to_owned();
        request.health_check = Some(c);
        request
    };
    let http = check(Kind::Http, "127.0.0.1:9");
    for (c, endpoint, field) in [
        (check(Kind::Http, ""), "", "health_check.target"),
        (check(Kind::Tcp, "no-port"), "", "health_check.target"),
        (
            pb::HealthCheck {
                kind: 7,
                ..http.clone()
            },
            "",
            "health_check.kind",
        ),
        (
            pb::HealthCheck {
                interval_seconds: 3601,
                ..http.clone()
            },
            "",
            "health_check.interval_seconds",
        ),
        (
            pb::HealthCheck {
                timeout_seconds: 2,
                ..http.clone()
            },
            "",
            "health_check.timeout_seconds",
        ),
        (
            pb::HealthCheck {
                failures_before_unhealthy: 11,
                ..http.clone()
            },
            "",
            "health_check.failures_before_unhealthy",
        ),
        (
            pb::HealthCheck {
                successes_before_healthy: -1,
                ..http.clone()
            },
            "",
            "health_check.successes_before_healthy",
        ),
        (
            pb::HealthCheck {
                interval_seconds: 5,
                timeout_seconds: 0,
                deregister_after_seconds: 4,
                ..http.clone()
            },
            "",
            "health_check.deregister_after_seconds",
        ),
        (
            pb::HealthCheck {
                path: "health".into(),
                ..http.clone()
            },
            "",
            "health_check.path",
        ),
        (
            check(Kind::Http, "169.254.169.254:80"),
            "",
            "health_check.target",
        ),
        (check(Kind::Tcp, ""), "[fe80::1]:80", "health_check.target"),
    ] {
        let status = client
            .register(refused(c.clone(), endpoint))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{c:?}: {status:?}");
        assert!(
            status.message().contains(field),
            "{c:?}: {}",
            status.message()
        );
    }
    // Defaults filled in; the endpoint is the target when none is given.
    let mut request = register_request(&["x"]);
    request.endpoint = "127.0.0.1:9".into();
    request.health_check = Some(pb::HealthCheck {
        kind: Kind::Http as i32,
        ..Default::default()
    });
    let agent = client.register(request).await.unwrap().into_inner();
    let info = get(&mut client, &agent.agent_id).await.unwrap();
    assert_eq!(
        info.health_check,
        Some(pb::HealthCheck {
            kind: Kind::Http as i32,
            target: "127.0.0.1:9".into(),
            path: "/health".into(),
            interval_seconds: 10,
            timeout_seconds: 2,
            failures_before_unhealthy: 3,
            successes_before_healthy: 2,
            deregister_after_seconds: 0,
        })
    );
    // Without a check nothing changes.
    let plain = client
        .register(register_request(&["x"]))
        .await
        .unwrap()
        .into_inner();
    let info = get(&mut client, &plain.agent_id).await.unwrap();
    assert_eq!((info.health_check, info.health_output.as_str()), (None, ""));
    server.stop().await;
}

async fn a_name_resolving_to_a_denied_address_fails_the_probe(backend: Backend) {
    let target = TcpTarget::start().await;
    let server =
        TestServer::start_with(backend, &["--health-check-deny", "127.0.0.0/8,::1/128"]).await;
    let mut client = server.client().await;
    // An address literal in the list is refused at once.
    let status = client
        .register({
            let mut r = register_request(&["x"]);
            r.health_check = Some(check(Kind::Tcp, &target.addr.to_string()));
            r
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("health_check.target"));
    // A name is resolved at probe time, and refused there.
    let by_name = format!("localhost:{}", target.addr.port());
    let agent = register_checked(&mut client, check(Kind::Tcp, &by_name), 30).await;
    let (mut events, _) = watch_synced(&mut client).await;
    let info = expect_status(&mut events, &agent.agent_id, pb::AgentStatus::Unhealthy).await;
    assert_eq!(info.health_output, "target denied");
    server.stop().await;
}

async fn http_hysteresis_both_ways_and_a_single_flap(backend: Backend) {
    let target = HttpTarget::start().await;
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let (mut events, _) = watch_synced(&mut client).await;
    let agent =
        register_checked(&mut client, check(Kind::Http, &target.addr.to_string()), 30).await;
    let id = agent.agent_id.clone();
    assert_eq!(
        next_of(&mut events, &id, EVENT_WAIT)
            .await
            .unwrap()
            .event_type,
        EventType::Registered as i32
    );
    wait_until(EVENT_WAIT, "a first probe", || {
        let mut client = client.clone();
        let id = id.clone();
        async move { get(&mut client, &id).await.unwrap().health_output == "HTTP 200" }
    })
    .await;

    // One failing probe among passes: no event at all.
    let hits = target.hits();
    target.fail_next(1);
    wait_until(EVENT_WAIT, "three more probes", || async {
        target.hits() >= hits + 4
    })
    .await;
    assert_eq!(
        next_of(&mut events, &id, Duration::from_millis(300)).await,
        None
    );

    // Two consecutive failures: UNHEALTHY, once, saying why.
    target.set_status(503);
    let info = expect_status(&mut events, &id, pb::AgentStatus::Unhealthy).await;
    assert_eq!(info.health_output, "HTTP 503");
    // Good telemetry does not make it HEALTHY while the check fails.
    let beat = client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: id.clone(),
            registration_token: agent.registration_token.clone(),
            telemetry: Some(pb::AgentTelemetry {
                success_rate: 1.0,
                total_executions: 10,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(beat.status, pb::AgentStatus::Unhealthy as i32);
    let updated = next_of(&mut events, &id, EVENT_WAIT).await.unwrap();
    assert_eq!(updated.event_type, EventType::Updated as i32, "{updated:?}");
    let hits = target.hits();
    wait_until(EVENT_WAIT, "more failing probes", || async {
        target.hits() >= hits + 2
    })
    .await;
    assert_eq!(
        next_of(&mut events, &id, Duration::from_millis(300)).await,
        None
    );

    // Two consecutive passes: HEALTHY again, once.
    target.set_status(200);
    let info = expect_status(&mut events, &id, pb::AgentStatus::Healthy).await;
    assert_eq!(info.health_output, "HTTP 200");
    let text = format!("{:?}", get(&mut client, &id).await.unwrap());
    assert!(!text.contains("secret body"), "{text}");
    server.stop().await;
}

async fn grpc_health_flips(backend: Backend) {
    let target = GrpcTarget::start().await;
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let (mut events, _) = watch_synced(&mut client).await;
    let mut wanted = check(Kind::Grpc, &target.addr.to_string());
    wanted.path = GRPC_SERVICE.into();
    let agent = register_checked(&mut client, wanted, 30).await;
    let id = agent.agent_id;
    wait_until(EVENT_WAIT, "a first probe", || {
        let mut client = client.clone();
        let id = id.clone();
        async move { get(&mut client, &id).await.unwrap().health_output == "SERVING" }
    })
    .await;
    target.set_serving(false).await;
    let info = expect_status(&mut events, &id, pb::AgentStatus::Unhealthy).await;
    assert_eq!(info.health_output, "NOT_SERVING");
    target.set_serving(true).await;
    let info = expect_status(&mut events, &id, pb::AgentStatus::Healthy).await;
    assert_eq!(info.health_output, "SERVING");
    server.stop().await;
}

async fn tcp_closed_turns_unhealthy_then_is_removed(backend: Backend) {
    let mut target = TcpTarget::start().await;
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let (mut events, _) = watch_synced(&mut client).await;
    let mut wanted = check(Kind::Tcp, &target.addr.to_string());
    wanted.deregister_after_seconds = 3;
    let agent = register_checked(&mut client, wanted, 60).await;
    let id = agent.agent_id;
    wait_until(EVENT_WAIT, "a first probe", || {
        let mut client = client.clone();
        let id = id.clone();
        async move { get(&mut client, &id).await.unwrap().health_output == "connected" }
    })
    .await;
    target.close().await;
    let started = std::time::Instant::now();
    let info = expect_status(&mut events, &id, pb::AgentStatus::Unhealthy).await;
    assert_eq!(info.health_output, "connection refused");
    let expired = next_of(&mut events, &id, EVENT_WAIT).await.unwrap();
    assert_eq!(expired.event_type, EventType::Expired as i32, "{expired:?}");
    let after = started.elapsed();
    assert!(after >= Duration::from_secs(2), "removed after {after:?}");
    assert_eq!(
        get(&mut client, &id).await.unwrap_err().code(),
        Code::NotFound
    );
    server.stop().await;
}

async fn passing_probes_keep_an_agent_alive_without_heartbeats(backend: Backend) {
    let target = TcpTarget::start().await;
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register_checked(&mut client, check(Kind::Tcp, &target.addr.to_string()), 2).await;
    let (mut events, _) = watch_synced(&mut client).await;
    // 3.5 TTLs with no heartbeat: no event, still there and HEALTHY.
    assert_eq!(
        next_of(&mut events, &agent.agent_id, Duration::from_millis(7000)).await,
        None
    );
    let info = get(&mut client, &agent.agent_id).await.unwrap();
    assert_eq!(info.status, pb::AgentStatus::Healthy as i32);
    assert_eq!(info.health_output, "connected");
    server.stop().await;
}

async fn redirects_are_not_followed(backend: Backend) {
    let target = HttpTarget::start().await;
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut wanted = check(Kind::Http, &target.addr.to_string());
    wanted.path = "/moved".into();
    let agent = register_checked(&mut client, wanted, 30).await;
    let (mut events, _) = watch_synced(&mut client).await;
    let info = expect_status(&mut events, &agent.agent_id, pb::AgentStatus::Unhealthy).await;
    assert_eq!(info.health_output, "HTTP 302");
    server.stop().await;
}

behaviour_tests!(
    redirects_are_not_followed,
    validation_and_defaults,
    a_name_resolving_to_a_denied_address_fails_the_probe,
    http_hysteresis_both_ways_and_a_single_flap,
    grpc_health_flips,
    tcp_closed_turns_unhealthy_then_is_removed,
    passing_probes_keep_an_agent_alive_without_heartbeats,
);
