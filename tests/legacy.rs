//! Compatibility with existing clients: a client generated from the original
//! 8-RPC contract (`tests/proto/legacy_service_registry.proto`, fields 1..12
//! only, no tokens sent) drives the whole lifecycle against the registry, and
//! behaves as the original callers do (BEHAVIOUR.md §7): it re-registers only
//! on `NOT_FOUND` saying `não encontrado`, reads endpoints from metadata and
//! filters by `agent_type` and `security_level`. The [`environment`] tests
//! start the real binary with nothing but the original's variables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;
#[path = "legacy/callers.rs"]
mod callers;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::{Code, transport::Channel};

use common::*;

/// The client generated from the legacy contract (client side only).
#[allow(missing_docs, clippy::all, clippy::pedantic, dead_code)]
mod legacy {
    include!(concat!(
        env!("OUT_DIR"),
        "/legacy/neural_hive.service_registry.rs"
    ));
}

use legacy::{
    AgentStatus, AgentTelemetry, AgentType, agent_change_event::EventType,
    service_registry_client::ServiceRegistryClient,
};

type LegacyClient = ServiceRegistryClient<Channel>;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A server that accepts token-less calls, as legacy clients make them.
async fn permissive(backend: Backend) -> TestServer {
    TestServer::start_with(backend, &["--require-token", "false"]).await
}

async fn legacy_client(server: &TestServer) -> LegacyClient {
    ServiceRegistryClient::connect(server.endpoint())
        .await
        .unwrap()
}

fn legacy_register(agent_type: AgentType, caps: &[&str]) -> legacy::RegisterRequest {
    legacy::RegisterRequest {
        agent_type: agent_type as i32,
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    }
}

async fn register(client: &mut LegacyClient, agent_type: AgentType, caps: &[&str]) -> String {
    let resp = client
        .register(legacy_register(agent_type, caps))
        .await
        .expect("legacy Register")
        .into_inner();
    assert!(!resp.agent_id.is_empty());
    resp.agent_id
}

async fn get(client: &mut LegacyClient, id: &str) -> legacy::AgentInfo {
    client
        .get_agent(legacy::GetAgentRequest {
            agent_id: id.to_string(),
        })
        .await
        .expect("legacy GetAgent")
        .into_inner()
        .agent
        .expect("GetAgent answered without an agent")
}

async fn legacy_client_registers_and_gets_its_agent(backend: Backend) {
    let server = permissive(backend).await;
    let mut client = legacy_client(&server).await;
    let before = now();
    let resp = client
        .register(legacy::RegisterRequest {
            agent_type: AgentType::Scout as i32,
            capabilities: vec!["search".into(), "search".into(), "crawl".into()],
            metadata: [("zone".to_string(), "eu".to_string())].into(),
            namespace: "prod".into(),
            cluster: String::new(),
            version: String::new(),
            telemetry: None,
        })
        .await
        .expect("legacy Register")
        .into_inner();
    assert!(
        !resp.registration_token.is_empty(),
        "a token is still handed out"
    );
    assert!(resp.registered_at >= before && resp.registered_at <= now());

    let agent = get(&mut client, &resp.agent_id).await;
    assert_eq!(agent.agent_id, resp.agent_id);
    assert_eq!(agent.agent_type, AgentType::Scout as i32);
    assert_eq!(agent.capabilities, vec!["search", "crawl"]);
    assert_eq!(agent.metadata.get("zone").map(String::as_str), Some("eu"));
    assert_eq!(agent.namespace, "prod");
    assert_eq!(agent.cluster, "local");
    assert_eq!(agent.version, "1.0.0");
    assert_eq!(agent.schema_version, 1);
    assert_eq!(agent.status, AgentStatus::Healthy as i32);
    assert_eq!(agent.registered_at, resp.registered_at);
    assert_eq!(agent.last_seen, resp.registered_at);
}

async fn legacy_heartbeat_without_token_is_accepted_when_tokens_are_optional(backend: Backend) {
    let server = permissive(backend).await;
    let mut client = legacy_client(&server).await;
    let id = register(&mut client, AgentType::Worker, &["a"]).await;
    let resp = client
        .heartbeat(legacy::HeartbeatRequest {
            agent_id: id.clone(),
            telemetry: None,
        })
        .await
        .expect("legacy Heartbeat without token")
        .into_inner();
    // differs: the original turned a telemetry-less agent UNHEALTHY.
    assert_eq!(resp.status, AgentStatus::Healthy as i32);
    assert!(resp.last_seen >= now() - 1 && resp.last_seen <= now());
    assert_eq!(
        get(&mut client, &id).await.status,
        AgentStatus::Healthy as i32
    );
}

async fn legacy_heartbeat_with_telemetry_updates_the_status(backend: Backend) {
    let server = permissive(backend).await;
    let mut client = legacy_client(&server).await;
    let id = register(&mut client, AgentType::Worker, &["a"]).await;
    let telemetry = AgentTelemetry {
        success_rate: 0.4,
        avg_duration_ms: 120,
        total_executions: 10,
        failed_executions: 6,
        last_execution_at: now(),
    };
    let resp = client
        .heartbeat(legacy::HeartbeatRequest {
            agent_id: id.clone(),
            telemetry: Some(telemetry),
        })
        .await
        .expect("legacy Heartbeat with telemetry")
        .into_inner();
    assert_eq!(resp.status, AgentStatus::Degraded as i32);
    let agent = get(&mut client, &id).await;
    assert_eq!(agent.telemetry, Some(telemetry));
    assert_eq!(agent.status, AgentStatus::Degraded as i32);
}

async fn legacy_heartbeat_of_an_unknown_agent_is_not_found(backend: Backend) {
    let server = permissive(backend).await;
    let mut client = legacy_client(&server).await;
    let err = client
        .heartbeat(legacy::HeartbeatRequest {
            agent_id: uuid::Uuid::new_v4().to_string(),
            telemetry: None,
        })
        .await
        .expect_err("unknown agent");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

async fn legacy_client_discovers_by_capability(backend: Backend) {
    let server = permissive(backend).await;
    let mut client = legacy_client(&server).await;
    let searcher = register(&mut client, AgentType::Worker, &["search", "index"]).await;
    let _other = register(&mut client, AgentType::Worker, &["translate"]).await;
    let resp = client
        .discover_agents(legacy::DiscoverRequest {
            capabilities: vec!["search".into()],
            filters: Default::default(),
            max_results: 10,
        })
        .await
        .expect("legacy DiscoverAgents")
        .into_inner();
    let ids: Vec<&str> = resp.agents.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(ids, vec![searcher.as_str()]);
    assert!(resp.ranked, "the default strategy is ranked");

    let none = client
        .discover_agents(legacy::DiscoverRequest {
            capabilities: vec!["search".into(), "translate".into()],
            filters: Default::default(),
            max_results: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.agents.is_empty(), "no agent has both capabilities");
}

async fn legacy_client_lists_agents(backend: Backend) {
    let server = permissive(backend).await;
    let mut client = legacy_client(&server).await;
    let worker = register(&mut client, AgentType::Worker, &["a"]).await;
    let guard = register(&mut client, AgentType::Guard, &["b"]).await;

    let all = client
        .list_agents(legacy::ListAgentsRequest::default())
        .await
        .expect("legacy ListAgents")
        .into_inner();
    let mut ids: Vec<String> = all.agents.into_iter().map(|a| a.agent_id).collect();
    ids.sort();
    let mut expected = vec![worker.clone(), guard.clone()];
    expected.sort();
    assert_eq!(ids, expected);

    let guards = client
        .list_agents(legacy::ListAgentsRequest {
            agent_type: AgentType::Guard as i32,
            filters: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = guards.agents.into_iter().map(|a| a.agent_id).collect();
    assert_eq!(ids, vec![guard]);
}

async fn legacy_watcher_receives_registered(backend: Backend) {
    let server = permissive(backend).await;
    let mut client = legacy_client(&server).await;
    let mut stream = client
        .watch_agents(legacy::WatchAgentsRequest {
            agent_type: AgentType::Analyst as i32,
        })
        .await
        .expect("legacy WatchAgents")
        .into_inner();
    // An agent outside the watched type must not show up.
    let _worker = register(&mut client, AgentType::Worker, &["a"]).await;
    let analyst = register(&mut client, AgentType::Analyst, &["a"]).await;
    let event = tokio::time::timeout(Duration::from_secs(2), stream.message())
        .await
        .expect("no event within 2 s")
        .expect("watch failed")
        .expect("watch ended");
    assert_eq!(event.event_type, EventType::Registered as i32, "{event:?}");
    let agent = event.agent.expect("event carries the agent");
    assert_eq!(agent.agent_id, analyst);
    assert_eq!(agent.agent_type, AgentType::Analyst as i32);
    assert!(event.timestamp >= now() - 2 && event.timestamp <= now());
}

async fn legacy_client_notifies_an_agent(backend: Backend) {
    let server = permissive(backend).await;
    let mut client = legacy_client(&server).await;
    let id = register(&mut client, AgentType::Worker, &["a"]).await;
    let resp = client
        .notify_agent(legacy::NotifyAgentRequest {
            agent_id: id,
            notification_type: "CONFIG_RELOAD".into(),
            message: "reload".into(),
            metadata: [("k".to_string(), "v".to_string())].into(),
        })
        .await
        .expect("legacy NotifyAgent")
        .into_inner();
    assert!(resp.success);
    assert!(resp.error.is_empty(), "{resp:?}");

    // differs: the original answered success for an unknown agent.
    let err = client
        .notify_agent(legacy::NotifyAgentRequest {
            agent_id: uuid::Uuid::new_v4().to_string(),
            notification_type: String::new(),
            message: "hello?".into(),
            metadata: Default::default(),
        })
        .await
        .expect_err("unknown agent");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

async fn legacy_client_deregisters_without_token(backend: Backend) {
    let server = permissive(backend).await;
    let mut client = legacy_client(&server).await;
    let id = register(&mut client, AgentType::Worker, &["a"]).await;
    let resp = client
        .deregister(legacy::DeregisterRequest {
            agent_id: id.clone(),
        })
        .await
        .expect("legacy Deregister")
        .into_inner();
    assert!(resp.success);
    let err = client
        .get_agent(legacy::GetAgentRequest {
            agent_id: id.clone(),
        })
        .await
        .expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
    let again = client
        .deregister(legacy::DeregisterRequest { agent_id: id })
        .await
        .expect("unknown id is not an error")
        .into_inner();
    assert!(!again.success);
}

async fn legacy_heartbeat_without_token_is_unauthenticated_by_default(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = legacy_client(&server).await;
    let id = register(&mut client, AgentType::Worker, &["a"]).await;
    let err = client
        .heartbeat(legacy::HeartbeatRequest {
            agent_id: id.clone(),
            telemetry: None,
        })
        .await
        .expect_err("token required by default");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = client
        .deregister(legacy::DeregisterRequest {
            agent_id: id.clone(),
        })
        .await
        .expect_err("token required by default");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // Reads need no token.
    assert_eq!(get(&mut client, &id).await.agent_id, id);
}

behaviour_tests! {
    legacy_client_registers_and_gets_its_agent,
    legacy_heartbeat_without_token_is_accepted_when_tokens_are_optional,
    legacy_heartbeat_with_telemetry_updates_the_status,
    legacy_heartbeat_of_an_unknown_agent_is_not_found,
    legacy_client_discovers_by_capability,
    legacy_client_lists_agents,
    legacy_watcher_receives_registered,
    legacy_client_notifies_an_agent,
    legacy_client_deregisters_without_token,
    legacy_heartbeat_without_token_is_unauthenticated_by_default,
}

#[path = "legacy/environment.rs"]
mod environment;
