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
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Telemetry with the given success rate over `total` executions, `failed`
/// of them failed.
fn telemetry(success_rate: f64, total: i64, failed: i64) -> pb::AgentTelemetry {
    pb::AgentTelemetry {
        success_rate,
        avg_duration_ms: 25,
        total_executions: total,
        failed_executions: failed,
        last_execution_at: 0,
    }
}

/// Consistent telemetry of 100 executions at `rate` success.
fn telemetry_at(rate: f64) -> pb::AgentTelemetry {
    let failed = 100 - (rate * 100.0).round() as i64;
    telemetry(rate, 100, failed)
}

/// A url-safe token a client may choose itself (32 chars of `[A-Za-z0-9_-]`).
fn client_token() -> String {
    let raw = uuid::Uuid::new_v4().simple().to_string();
    format!("Ab_-{}", &raw[..28])
}

async fn register(client: &mut Client, req: pb::RegisterRequest) -> pb::RegisterResponse {
    client.register(req).await.unwrap().into_inner()
}

async fn get(client: &mut Client, id: &str) -> pb::AgentInfo {
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

async fn get_code(client: &mut Client, id: &str) -> Code {
    client
        .get_agent(pb::GetAgentRequest {
            agent_id: id.to_string(),
        })
        .await
        .expect_err("GetAgent should have failed")
        .code()
}

async fn list_all(client: &mut Client) -> Vec<pb::AgentInfo> {
    client
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .agents
}

fn heartbeat(id: &str, token: &str, telemetry: Option<pb::AgentTelemetry>) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        agent_id: id.to_string(),
        telemetry,
        registration_token: token.to_string(),
    }
}

/// Waits (at most 2 s) until the wall clock is past unix second `second`, so
/// that a later call gets a strictly larger whole-second timestamp.
async fn wait_past_second(second: i64) {
    wait_until(
        Duration::from_secs(2),
        "the next wall-clock second",
        || async move { now() > second },
    )
    .await;
}

fn status_name(status: i32) -> String {
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

pub async fn reregister_with_id_and_token_replaces_the_agent_in_place(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut first = register_request(&["old-a", "old-b"]);
    first.metadata = HashMap::from([("old-key".to_string(), "v".to_string())]);
    first.namespace = "ns1".into();
    first.endpoint = "127.0.0.1:1000".into();
    let created = register(&mut client, first).await;
    // A later whole second, so a reset registered_at would show.
    wait_past_second(created.registered_at).await;

    let second = pb::RegisterRequest {
        agent_type: pb::AgentType::Scout as i32,
        capabilities: vec!["new".into()],
        metadata: HashMap::from([("new-key".to_string(), "w".to_string())]),
        namespace: "ns2".into(),
        cluster: "c2".into(),
        version: "9.9.9".into(),
        telemetry: Some(telemetry_at(0.4)),
        endpoint: "127.0.0.1:2000".into(),
        ttl_seconds: 40,
        agent_id: created.agent_id.clone(),
        registration_token: created.registration_token.clone(),
        health_check: None,
    };
    let replaced = register(&mut client, second).await;
    assert_eq!(replaced.agent_id, created.agent_id, "same id");
    assert_eq!(
        replaced.registration_token, created.registration_token,
        "same token"
    );
    assert_eq!(
        replaced.registered_at, created.registered_at,
        "registered_at kept"
    );
    assert_eq!(replaced.ttl_seconds, 40);

    let agent = get(&mut client, &created.agent_id).await;
    assert_eq!(
        agent.registered_at, created.registered_at,
        "registered_at kept"
    );
    assert!(
        agent.last_seen > created.registered_at,
        "last_seen refreshed"
    );
    assert_eq!(agent.agent_type, pb::AgentType::Scout as i32);
    assert_eq!(agent.capabilities, vec!["new"]);
    assert_eq!(
        agent.metadata,
        HashMap::from([
            ("new-key".to_string(), "w".to_string()),
            ("endpoint".to_string(), "127.0.0.1:2000".to_string()),
        ]),
        "metadata replaced, not merged (plus the mirrored endpoint)"
    );
    assert_eq!(agent.namespace, "ns2");
    assert_eq!(agent.cluster, "c2");
    assert_eq!(agent.version, "9.9.9");
    assert_eq!(agent.endpoint, "127.0.0.1:2000");
    assert_eq!(agent.telemetry, Some(telemetry_at(0.4)));
    assert_eq!(agent.status, pb::AgentStatus::Degraded as i32);
    assert_eq!(
        list_all(&mut client).await.len(),
        1,
        "no second agent created"
    );

    // The token still works.
    client
        .heartbeat(heartbeat(
            &created.agent_id,
            &created.registration_token,
            None,
        ))
        .await
        .unwrap();
}

pub async fn reregister_under_an_unknown_id_creates_it_keeping_the_clients_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let id = uuid::Uuid::new_v4().to_string();
    let token = client_token();
    let before = now();
    let mut req = register_request(&["a"]);
    req.agent_id = id.clone();
    req.registration_token = token.clone();
    let resp = register(&mut client, req).await;
    assert_eq!(resp.agent_id, id, "created under the requested id");
    assert_eq!(resp.registration_token, token, "the client's token is kept");
    assert!(resp.registered_at >= before && resp.registered_at <= now());

    let agent = get(&mut client, &id).await;
    assert_eq!(agent.agent_id, id);
    client
        .heartbeat(heartbeat(&id, &token, None))
        .await
        .expect("heartbeat with the client-chosen token");
    let other = client_token();
    let err = client
        .heartbeat(heartbeat(&id, &other, None))
        .await
        .expect_err("another token must not be accepted");
    assert_eq!(err.code(), Code::PermissionDenied);
}

pub async fn reregister_under_an_unknown_id_without_token_mints_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut req = register_request(&["a"]);
    req.agent_id = id.clone();
    let resp = register(&mut client, req).await;
    assert_eq!(resp.agent_id, id);
    assert!(
        resp.registration_token.len() >= 22,
        "a token is minted: {:?}",
        resp.registration_token
    );
    client
        .heartbeat(heartbeat(&id, &resp.registration_token, None))
        .await
        .expect("heartbeat with the minted token");
}

pub async fn reregister_under_an_unknown_id_returns_it_in_canonical_form(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let id = uuid::Uuid::new_v4();
    let mut req = register_request(&["a"]);
    req.agent_id = id.hyphenated().to_string().to_uppercase();
    let resp = register(&mut client, req).await;
    assert_eq!(resp.agent_id, id.hyphenated().to_string());
    let agent = get(&mut client, &id.to_string()).await;
    assert_eq!(agent.agent_id, id.hyphenated().to_string());
}

pub async fn heartbeat_advances_last_seen_and_expires_at(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut req = register_request(&["a"]);
    req.ttl_seconds = 30;
    let reg = register(&mut client, req).await;
    let before = get(&mut client, &reg.agent_id).await;
    wait_past_second(reg.registered_at).await;

    let hb = client
        .heartbeat(heartbeat(&reg.agent_id, &reg.registration_token, None))
        .await
        .unwrap()
        .into_inner();
    assert!(
        hb.last_seen > before.last_seen,
        "last_seen {} did not advance past {}",
        hb.last_seen,
        before.last_seen
    );
    assert!(hb.last_seen <= now());
    assert!(
        hb.expires_at > before.expires_at,
        "expires_at {} did not advance past {}",
        hb.expires_at,
        before.expires_at
    );
    assert!(
        (hb.last_seen + 29..=hb.last_seen + 31).contains(&hb.expires_at),
        "expires_at {} is not last_seen {} + 30",
        hb.expires_at,
        hb.last_seen
    );
    let after = get(&mut client, &reg.agent_id).await;
    assert_eq!(after.last_seen, hb.last_seen);
    assert_eq!(after.expires_at, hb.expires_at);
    assert_eq!(
        after.registered_at, before.registered_at,
        "registered_at unchanged"
    );
}

pub async fn heartbeat_with_telemetry_replaces_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut req = register_request(&["a"]);
    req.telemetry = Some(telemetry_at(0.9));
    let reg = register(&mut client, req).await;
    let new = pb::AgentTelemetry {
        success_rate: 0.8,
        avg_duration_ms: 77,
        total_executions: 50,
        failed_executions: 10,
        last_execution_at: 1_700_000_000,
    };
    client
        .heartbeat(heartbeat(&reg.agent_id, &reg.registration_token, Some(new)))
        .await
        .unwrap();
    let agent = get(&mut client, &reg.agent_id).await;
    assert_eq!(agent.telemetry, Some(new));
}

pub async fn heartbeat_without_telemetry_keeps_the_previous_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut req = register_request(&["a"]);
    req.telemetry = Some(telemetry_at(0.4));
    let reg = register(&mut client, req).await;
    let hb = client
        .heartbeat(heartbeat(&reg.agent_id, &reg.registration_token, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status_name(hb.status),
        "DEGRADED",
        "status kept with the telemetry"
    );
    let agent = get(&mut client, &reg.agent_id).await;
    assert_eq!(agent.telemetry, Some(telemetry_at(0.4)));
    assert_eq!(status_name(agent.status), "DEGRADED");
}

pub async fn heartbeat_recomputes_the_status_by_the_rule(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let reg = register(&mut client, register_request(&["a"])).await;
    let steps = [
        (telemetry_at(0.1), "UNHEALTHY"),
        (telemetry_at(0.4), "DEGRADED"),
        (telemetry_at(0.29), "UNHEALTHY"),
        (telemetry_at(0.3), "DEGRADED"),
        (telemetry_at(0.5), "HEALTHY"),
        (telemetry_at(0.2), "UNHEALTHY"),
        (telemetry(0.0, 0, 0), "HEALTHY"),
        (telemetry_at(0.95), "HEALTHY"),
    ];
    for (t, expected) in steps {
        let hb = client
            .heartbeat(heartbeat(&reg.agent_id, &reg.registration_token, Some(t)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status_name(hb.status),
            expected,
            "heartbeat status for {t:?}"
        );
        let agent = get(&mut client, &reg.agent_id).await;
        assert_eq!(
            status_name(agent.status),
            expected,
            "stored status for {t:?}"
        );
    }
}

pub async fn agent_heartbeating_without_telemetry_stays_healthy(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let reg = register(&mut client, register_request(&["a"])).await;
    for _ in 0..3 {
        let hb = client
            .heartbeat(heartbeat(&reg.agent_id, &reg.registration_token, None))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status_name(hb.status), "HEALTHY");
    }
    let agent = get(&mut client, &reg.agent_id).await;
    assert_eq!(status_name(agent.status), "HEALTHY");
}

pub async fn heartbeat_of_an_unknown_agent_is_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let id = uuid::Uuid::new_v4().to_string();
    let err = client
        .heartbeat(heartbeat(&id, &client_token(), None))
        .await
        .expect_err("unknown agent");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

pub async fn heartbeat_of_a_deregistered_agent_is_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let reg = register(&mut client, register_request(&["a"])).await;
    let ok = client
        .deregister(pb::DeregisterRequest {
            agent_id: reg.agent_id.clone(),
            registration_token: reg.registration_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.success);
    let err = client
        .heartbeat(heartbeat(&reg.agent_id, &reg.registration_token, None))
        .await
        .expect_err("deregistered agent");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

pub async fn deregister_removes_the_agent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let gone = register(&mut client, register_request(&["a"])).await;
    let kept = register(&mut client, register_request(&["a"])).await;
    let resp = client
        .deregister(pb::DeregisterRequest {
            agent_id: gone.agent_id.clone(),
            registration_token: gone.registration_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.success, "deregister of a registered agent succeeds");
    assert_eq!(get_code(&mut client, &gone.agent_id).await, Code::NotFound);
    let ids: Vec<String> = list_all(&mut client)
        .await
        .into_iter()
        .map(|a| a.agent_id)
        .collect();
    assert_eq!(ids, vec![kept.agent_id.clone()]);

    // A second deregister finds nothing.
    let again = client
        .deregister(pb::DeregisterRequest {
            agent_id: gone.agent_id.clone(),
            registration_token: gone.registration_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.success, "the agent is already gone");
}

pub async fn deregister_of_an_unknown_agent_answers_success_false(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let resp = client
        .deregister(pb::DeregisterRequest {
            agent_id: uuid::Uuid::new_v4().to_string(),
            registration_token: client_token(),
        })
        .await
        .expect("an unknown id is not an error")
        .into_inner();
    assert!(!resp.success);
}

pub async fn get_agent_accepts_every_standard_uuid_form(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let reg = register(&mut client, register_request(&["a"])).await;
    let id = uuid::Uuid::parse_str(&reg.agent_id).unwrap();
    let forms = [
        id.hyphenated().to_string(),
        id.hyphenated().to_string().to_uppercase(),
        id.braced().to_string(),
        id.braced().to_string().to_uppercase(),
        id.simple().to_string(),
        id.simple().to_string().to_uppercase(),
    ];
    for form in forms {
        let agent = get(&mut client, &form).await;
        assert_eq!(
            agent.agent_id, reg.agent_id,
            "GetAgent({form}) returns the lowercase hyphenated id"
        );
    }
}

pub async fn heartbeat_and_deregister_accept_other_uuid_forms(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let reg = register(&mut client, register_request(&["a"])).await;
    let id = uuid::Uuid::parse_str(&reg.agent_id).unwrap();
    client
        .heartbeat(heartbeat(
            &id.braced().to_string().to_uppercase(),
            &reg.registration_token,
            None,
        ))
        .await
        .expect("heartbeat with a braced uppercase id");
    let resp = client
        .deregister(pb::DeregisterRequest {
            agent_id: id.simple().to_string(),
            registration_token: reg.registration_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.success, "deregister with the simple form");
    assert_eq!(get_code(&mut client, &reg.agent_id).await, Code::NotFound);
}

pub async fn get_agent_of_an_unknown_id_is_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    register(&mut client, register_request(&["a"])).await;
    let code = get_code(&mut client, &uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(code, Code::NotFound);
}

pub async fn get_agent_with_a_malformed_id_is_invalid_argument(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for bad in [
        "",
        "not-a-uuid",
        "1234",
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
    ] {
        let err = client
            .get_agent(pb::GetAgentRequest {
                agent_id: bad.to_string(),
            })
            .await
            .expect_err("malformed id");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "GetAgent({bad:?}): {err:?}"
        );
        assert!(err.message().contains("agent_id"), "{err:?}");
    }
}

pub async fn refused_register_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut req = register_request(&["a"]);
    req.metadata = (0..65)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let err = client.register(req).await.expect_err("65 metadata entries");
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut req = register_request(&["a"]);
    req.agent_type = 0;
    let err = client.register(req).await.expect_err("agent_type 0");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(list_all(&mut client).await.is_empty(), "nothing registered");
}

pub async fn refused_reregister_under_an_unknown_id_creates_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut req = register_request(&["a"]);
    req.agent_id = id.clone();
    req.registration_token = "too-short".into();
    let err = client.register(req).await.expect_err("bad client token");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(get_code(&mut client, &id).await, Code::NotFound);
    assert!(list_all(&mut client).await.is_empty());
}

pub async fn heartbeat_with_a_wrong_token_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut req = register_request(&["a"]);
    req.telemetry = Some(telemetry_at(0.9));
    let reg = register(&mut client, req).await;
    let before = get(&mut client, &reg.agent_id).await;
    wait_past_second(before.last_seen).await;

    let err = client
        .heartbeat(heartbeat(
            &reg.agent_id,
            &client_token(),
            Some(telemetry_at(0.1)),
        ))
        .await
        .expect_err("wrong token");
    assert_eq!(err.code(), Code::PermissionDenied);
    let after = get(&mut client, &reg.agent_id).await;
    assert_eq!(after.last_seen, before.last_seen, "last_seen unchanged");
    assert_eq!(after.expires_at, before.expires_at, "expires_at unchanged");
    assert_eq!(
        after.telemetry,
        Some(telemetry_at(0.9)),
        "telemetry unchanged"
    );
    assert_eq!(status_name(after.status), "HEALTHY", "status unchanged");
}

pub async fn reregister_with_a_wrong_token_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let reg = register(&mut client, register_request(&["original"])).await;
    let mut req = register_request(&["hijacked"]);
    req.agent_id = reg.agent_id.clone();
    req.registration_token = client_token();
    let err = client.register(req).await.expect_err("wrong token");
    assert_eq!(err.code(), Code::PermissionDenied);
    let agent = get(&mut client, &reg.agent_id).await;
    assert_eq!(agent.capabilities, vec!["original"]);
    client
        .heartbeat(heartbeat(&reg.agent_id, &reg.registration_token, None))
        .await
        .expect("the original token still works");
}

pub async fn deregister_with_a_wrong_token_keeps_the_agent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let reg = register(&mut client, register_request(&["a"])).await;
    let err = client
        .deregister(pb::DeregisterRequest {
            agent_id: reg.agent_id.clone(),
            registration_token: client_token(),
        })
        .await
        .expect_err("wrong token");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(get(&mut client, &reg.agent_id).await.agent_id, reg.agent_id);
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
    reregister_with_id_and_token_replaces_the_agent_in_place,
    reregister_under_an_unknown_id_creates_it_keeping_the_clients_token,
    reregister_under_an_unknown_id_without_token_mints_one,
    reregister_under_an_unknown_id_returns_it_in_canonical_form,
    heartbeat_advances_last_seen_and_expires_at,
    heartbeat_with_telemetry_replaces_it,
    heartbeat_without_telemetry_keeps_the_previous_one,
    heartbeat_recomputes_the_status_by_the_rule,
    agent_heartbeating_without_telemetry_stays_healthy,
    heartbeat_of_an_unknown_agent_is_not_found,
    heartbeat_of_a_deregistered_agent_is_not_found,
    deregister_removes_the_agent,
    deregister_of_an_unknown_agent_answers_success_false,
    get_agent_accepts_every_standard_uuid_form,
    heartbeat_and_deregister_accept_other_uuid_forms,
    get_agent_of_an_unknown_id_is_not_found,
    get_agent_with_a_malformed_id_is_invalid_argument,
    refused_register_changes_nothing,
    refused_reregister_under_an_unknown_id_creates_nothing,
    heartbeat_with_a_wrong_token_changes_nothing,
    reregister_with_a_wrong_token_changes_nothing,
    deregister_with_a_wrong_token_keeps_the_agent,
}
