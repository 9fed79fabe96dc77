//! Register, re-register, Heartbeat, Deregister and GetAgent (BEHAVIOUR.md §4):
//! ids, tokens, TTLs, defaults, the status rule, and that refused calls change
//! nothing.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use agent_registry::pb::{self, service_registry_client::ServiceRegistryClient};
use tonic::{Code, transport::Channel};

use crate::common::*;

type Client = ServiceRegistryClient<Channel>;

/// Wall-clock unix seconds.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Telemetry with the given success rate over `total` executions, `failed`
/// of them failed.
pub(crate) fn telemetry(success_rate: f64, total: i64, failed: i64) -> pb::AgentTelemetry {
    pb::AgentTelemetry {
        success_rate,
        avg_duration_ms: 25,
        total_executions: total,
        failed_executions: failed,
        last_execution_at: 0,
    }
}

/// Consistent telemetry of 100 executions at `rate` success.
pub(crate) fn telemetry_at(rate: f64) -> pb::AgentTelemetry {
    let failed = 100 - (rate * 100.0).round() as i64;
    telemetry(rate, 100, failed)
}

/// A url-safe token a client may choose itself (32 chars of `[A-Za-z0-9_-]`).
pub(crate) fn client_token() -> String {
    let raw = uuid::Uuid::new_v4().simple().to_string();
    format!("Ab_-{}", &raw[..28])
}

pub(crate) async fn register(
    client: &mut Client,
    req: pb::RegisterRequest,
) -> pb::RegisterResponse {
    client.register(req).await.unwrap().into_inner()
}

pub(crate) async fn get(client: &mut Client, id: &str) -> pb::AgentInfo {
    client
        .get_agent(pb::GetAgentRequest {
            agent_id: id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .expect("GetAgent answered without an agent")
}

pub(crate) async fn get_code(client: &mut Client, id: &str) -> Code {
    client
        .get_agent(pb::GetAgentRequest {
            agent_id: id.to_string(),
        })
        .await
        .expect_err("GetAgent should have failed")
        .code()
}

pub(crate) async fn list_all(client: &mut Client) -> Vec<pb::AgentInfo> {
    client
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .agents
}

pub(crate) fn heartbeat(
    id: &str,
    token: &str,
    telemetry: Option<pb::AgentTelemetry>,
) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        agent_id: id.to_string(),
        telemetry,
        registration_token: token.to_string(),
    }
}

/// Waits (at most 2 s) until the wall clock is past unix second `second`, so
/// that a later call gets a strictly larger whole-second timestamp.
pub(crate) async fn wait_past_second(second: i64) {
    wait_until(
        Duration::from_secs(2),
        "the next wall-clock second",
        || async move { now() > second },
    )
    .await;
}

pub(crate) fn status_name(status: i32) -> String {
    pb::AgentStatus::try_from(status)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("unknown({status})"))
}

pub async fn register_returns_a_fresh_lowercase_hyphenated_uuid_v4(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let a = register(&mut client, register_request(&["a"])).await;
    let b = register(&mut client, register_request(&["a"])).await;
    for id in [&a.agent_id, &b.agent_id] {
        let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id:?}: {e}"));
        assert_eq!(parsed.get_version_num(), 4, "{id} is not a v4 UUID");
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
        assert_eq!(
            id,
            &parsed.hyphenated().to_string(),
            "id must be lowercase hyphenated"
        );
    }
    assert_ne!(a.agent_id, b.agent_id, "two registrations got the same id");
}

pub async fn register_returns_a_url_safe_token_of_at_least_22_characters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let resp = register(&mut client, register_request(&["a"])).await;
    let token = &resp.registration_token;
    assert!(
        (22..=256).contains(&token.len()),
        "token length {} not in 22..=256",
        token.len()
    );
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "token {token:?} is not url-safe [A-Za-z0-9_-]"
    );
}

pub async fn register_sets_registered_at_last_seen_and_expires_at_from_now(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let before = now();
    let mut req = register_request(&["a"]);
    req.ttl_seconds = 30;
    let resp = register(&mut client, req).await;
    let after = now();
    assert!(
        (before..=after).contains(&resp.registered_at),
        "registered_at {} not within [{before}, {after}]",
        resp.registered_at
    );
    let agent = get(&mut client, &resp.agent_id).await;
    assert_eq!(agent.agent_id, resp.agent_id);
    assert_eq!(agent.registered_at, resp.registered_at);
    assert_eq!(agent.last_seen, resp.registered_at);
    assert!(
        (agent.last_seen + 30 - 1..=agent.last_seen + 30 + 1).contains(&agent.expires_at),
        "expires_at {} is not last_seen {} + ttl 30",
        agent.expires_at,
        agent.last_seen
    );
}

pub async fn register_without_ttl_gets_the_heartbeat_timeout(backend: Backend) {
    let server = TestServer::start_with(backend, &["--heartbeat-timeout", "45"]).await;
    let mut client = server.client().await;
    let resp = register(&mut client, register_request(&["a"])).await;
    assert_eq!(resp.ttl_seconds, 45);
    assert_eq!(resp.heartbeat_interval_seconds, 15);
}

pub async fn register_with_default_settings_grants_sixty_seconds(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let resp = register(&mut client, register_request(&["a"])).await;
    assert_eq!(resp.ttl_seconds, 60);
    assert_eq!(resp.heartbeat_interval_seconds, 20);
}

pub async fn register_clamps_a_large_ttl_to_max_ttl(backend: Backend) {
    let server = TestServer::start_with(backend, &["--max-ttl", "100"]).await;
    let mut client = server.client().await;
    let mut req = register_request(&["a"]);
    req.ttl_seconds = 5000;
    let resp = register(&mut client, req).await;
    assert_eq!(resp.ttl_seconds, 100, "ttl not clamped to --max-ttl");
    assert_eq!(resp.heartbeat_interval_seconds, 33);

    let mut req = register_request(&["a"]);
    req.ttl_seconds = 50;
    let resp = register(&mut client, req).await;
    assert_eq!(resp.ttl_seconds, 50, "a ttl within bounds is granted as is");
    assert_eq!(resp.heartbeat_interval_seconds, 16);
}

pub async fn register_clamps_a_small_ttl_to_min_ttl(backend: Backend) {
    let server = TestServer::start_with(backend, &["--min-ttl", "5", "--max-ttl", "100"]).await;
    let mut client = server.client().await;
    let mut req = register_request(&["a"]);
    req.ttl_seconds = 2;
    let resp = register(&mut client, req).await;
    assert_eq!(resp.ttl_seconds, 5, "ttl not clamped to --min-ttl");
    assert_eq!(resp.heartbeat_interval_seconds, 1);
}

pub async fn heartbeat_interval_is_a_third_of_the_ttl_and_at_least_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for (ttl, interval) in [
        (1, 1),
        (2, 1),
        (3, 1),
        (5, 1),
        (6, 2),
        (7, 2),
        (9, 3),
        (3600, 1200),
    ] {
        let mut req = register_request(&["a"]);
        req.ttl_seconds = ttl;
        let resp = register(&mut client, req).await;
        assert_eq!(
            resp.ttl_seconds, ttl,
            "ttl {ttl} is within the default bounds"
        );
        assert_eq!(
            resp.heartbeat_interval_seconds, interval,
            "heartbeat interval for ttl {ttl}"
        );
    }
}

pub async fn register_removes_duplicate_capabilities_keeping_first_occurrence_order(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let resp = register(
        &mut client,
        register_request(&["b", "a", "b", "c", "a", "c"]),
    )
    .await;
    let agent = get(&mut client, &resp.agent_id).await;
    assert_eq!(agent.capabilities, vec!["b", "a", "c"]);
}

pub async fn register_fills_in_defaults(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let resp = register(&mut client, register_request(&["a"])).await;
    let agent = get(&mut client, &resp.agent_id).await;
    assert_eq!(agent.namespace, "default");
    assert_eq!(agent.cluster, "local");
    assert_eq!(agent.version, "1.0.0");
    assert_eq!(agent.schema_version, 1);
    assert_eq!(agent.agent_type, pb::AgentType::Worker as i32);
    assert_eq!(agent.status, pb::AgentStatus::Healthy as i32);
    assert_eq!(agent.endpoint, "");
    assert!(agent.metadata.is_empty());
}

pub async fn register_stores_every_given_field(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let req = pb::RegisterRequest {
        agent_type: pb::AgentType::Analyst as i32,
        capabilities: vec!["x".into(), "y".into()],
        metadata: HashMap::from([("zone".to_string(), "eu-1".to_string())]),
        namespace: "prod".into(),
        cluster: "c1".into(),
        version: "2.3.4".into(),
        telemetry: Some(telemetry_at(0.9)),
        endpoint: "127.0.0.1:7000".into(),
        ..Default::default()
    };
    let resp = register(&mut client, req).await;
    let agent = get(&mut client, &resp.agent_id).await;
    assert_eq!(agent.agent_type, pb::AgentType::Analyst as i32);
    assert_eq!(agent.capabilities, vec!["x", "y"]);
    assert_eq!(agent.metadata.get("zone").map(String::as_str), Some("eu-1"));
    assert_eq!(
        agent.metadata.get("endpoint").map(String::as_str),
        Some("127.0.0.1:7000"),
        "the endpoint is mirrored for legacy readers (§7)"
    );
    assert_eq!(agent.metadata.len(), 2);
    assert_eq!(agent.namespace, "prod");
    assert_eq!(agent.cluster, "c1");
    assert_eq!(agent.version, "2.3.4");
    assert_eq!(agent.endpoint, "127.0.0.1:7000");
    assert_eq!(agent.telemetry, Some(telemetry_at(0.9)));
    assert_eq!(agent.schema_version, 1);
}

pub async fn register_status_follows_the_initial_telemetry(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let cases: Vec<(Option<pb::AgentTelemetry>, pb::AgentStatus)> = vec![
        (None, pb::AgentStatus::Healthy),
        (Some(telemetry(0.0, 0, 0)), pb::AgentStatus::Healthy),
        (Some(telemetry_at(0.0)), pb::AgentStatus::Unhealthy),
        (Some(telemetry_at(0.29)), pb::AgentStatus::Unhealthy),
        (Some(telemetry_at(0.3)), pb::AgentStatus::Degraded),
        (Some(telemetry_at(0.49)), pb::AgentStatus::Degraded),
        (Some(telemetry_at(0.5)), pb::AgentStatus::Healthy),
        (Some(telemetry_at(1.0)), pb::AgentStatus::Healthy),
    ];
    for (initial, expected) in cases {
        let mut req = register_request(&["a"]);
        req.telemetry = initial;
        let resp = register(&mut client, req).await;
        let agent = get(&mut client, &resp.agent_id).await;
        assert_eq!(
            status_name(agent.status),
            expected.as_str_name(),
            "status for initial telemetry {initial:?}"
        );
        if initial.is_some() {
            assert_eq!(agent.telemetry, initial, "initial telemetry is stored");
        }
    }
}

behaviour_tests! {
    register_returns_a_fresh_lowercase_hyphenated_uuid_v4,
    register_returns_a_url_safe_token_of_at_least_22_characters,
    register_sets_registered_at_last_seen_and_expires_at_from_now,
    register_without_ttl_gets_the_heartbeat_timeout,
    register_with_default_settings_grants_sixty_seconds,
    register_clamps_a_large_ttl_to_max_ttl,
    register_clamps_a_small_ttl_to_min_ttl,
    heartbeat_interval_is_a_third_of_the_ttl_and_at_least_one,
    register_removes_duplicate_capabilities_keeping_first_occurrence_order,
    register_fills_in_defaults,
    register_stores_every_given_field,
    register_status_follows_the_initial_telemetry,
}
