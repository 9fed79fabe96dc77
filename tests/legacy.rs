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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::{Code, transport::Channel};

use agent_registry::pb;
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

/// What the original callers do on every heartbeat: on `NOT_FOUND` whose
/// message contains `não encontrado`, register again (a fresh id, since the
/// original contract cannot name one). Returns the id to heartbeat next.
async fn heartbeat_like_the_originals(
    client: &mut LegacyClient,
    id: &str,
    agent_type: AgentType,
    caps: &[&str],
) -> String {
    match client
        .heartbeat(legacy::HeartbeatRequest {
            agent_id: id.to_string(),
            telemetry: None,
        })
        .await
    {
        Ok(_) => id.to_string(),
        Err(status)
            if status.code() == Code::NotFound && status.message().contains("não encontrado") =>
        {
            register(client, agent_type, caps).await
        }
        Err(status) => panic!("heartbeat failed in a way the callers do not handle: {status:?}"),
    }
}

async fn legacy_caller_reregisters_on_nao_encontrado(backend: Backend) {
    let server = permissive(backend).await;
    let mut client = legacy_client(&server).await;
    let first = register(&mut client, AgentType::Worker, &["a"]).await;
    assert_eq!(
        heartbeat_like_the_originals(&mut client, &first, AgentType::Worker, &["a"]).await,
        first,
        "a registered agent just heartbeats"
    );
    // The registry loses the agent (expiry, data loss): here, a deregister.
    let gone = client
        .deregister(legacy::DeregisterRequest {
            agent_id: first.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(gone.success);
    let err = client
        .heartbeat(legacy::HeartbeatRequest {
            agent_id: first.clone(),
            telemetry: None,
        })
        .await
        .expect_err("lost");
    assert!(
        err.message()
            .starts_with(&format!("Agente {first} não encontrado")),
        "{:?}",
        err.message()
    );
    let second = heartbeat_like_the_originals(&mut client, &first, AgentType::Worker, &["a"]).await;
    assert_ne!(second, first, "registered again");
    assert_eq!(get(&mut client, &second).await.agent_id, second);
    assert_eq!(
        heartbeat_like_the_originals(&mut client, &second, AgentType::Worker, &["a"]).await,
        second,
        "and heartbeats again"
    );
}

/// Every `NOT_FOUND` about an agent begins `Agente <id> não encontrado`,
/// on every call and on a notification stream ended by the agent's removal.
async fn every_agent_not_found_uses_the_originals_wording(backend: Backend) {
    let server = permissive(backend).await;
    let mut client = server.client().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let prefix = format!("Agente {unknown} não encontrado");
    let check = |what: &str, status: tonic::Status| {
        assert_eq!(status.code(), Code::NotFound, "{what}: {status:?}");
        assert!(
            status.message().starts_with(&prefix),
            "{what}: {:?}",
            status.message()
        );
    };
    let get = client
        .get_agent(pb::GetAgentRequest {
            agent_id: unknown.clone(),
        })
        .await;
    check("GetAgent", get.unwrap_err());
    let beat = client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: unknown.clone(),
            ..Default::default()
        })
        .await;
    check("Heartbeat", beat.unwrap_err());
    let notify = client
        .notify_agent(pb::NotifyAgentRequest {
            agent_id: unknown.clone(),
            message: "x".into(),
            ..Default::default()
        })
        .await;
    check("NotifyAgent", notify.unwrap_err());
    let subscribe = client
        .subscribe_notifications(pb::SubscribeNotificationsRequest {
            agent_id: unknown.clone(),
            ..Default::default()
        })
        .await;
    let Err(refused) = subscribe else {
        panic!("SubscribeNotifications of an unknown agent was accepted")
    };
    check("SubscribeNotifications", refused);

    // A subscription open when its agent is removed ends the same way.
    let registered = client
        .register(register_request(&["a"]))
        .await
        .unwrap()
        .into_inner();
    let id = registered.agent_id.clone();
    let mut stream = client
        .subscribe_notifications(with_token(
            pb::SubscribeNotificationsRequest {
                agent_id: id.clone(),
                ..Default::default()
            },
            &registered.registration_token,
        ))
        .await
        .unwrap()
        .into_inner();
    client
        .deregister(with_token(
            pb::DeregisterRequest {
                agent_id: id.clone(),
                ..Default::default()
            },
            &registered.registration_token,
        ))
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends within 2 s");
    assert_eq!(end.code(), Code::NotFound, "{end:?}");
    assert!(
        end.message()
            .starts_with(&format!("Agente {id} não encontrado")),
        "{:?}",
        end.message()
    );
}

/// Legacy readers take the address from `metadata["endpoint"]`; legacy
/// writers put it there. Both sides see both (§7).
async fn legacy_readers_and_writers_share_the_endpoint_through_metadata(backend: Backend) {
    let server = permissive(backend).await;
    let mut legacy_client = legacy_client(&server).await;
    let mut client = server.client().await;

    let mut modern = register_request(&["e"]);
    modern.endpoint = "127.0.0.1:7001".into();
    let modern = client.register(modern).await.unwrap().into_inner().agent_id;
    let seen = get(&mut legacy_client, &modern).await;
    assert_eq!(
        seen.metadata.get("endpoint").map(String::as_str),
        Some("127.0.0.1:7001"),
        "a legacy reader finds the endpoint"
    );

    let written = legacy_client
        .register(legacy::RegisterRequest {
            agent_type: AgentType::Worker as i32,
            capabilities: vec!["e".into()],
            metadata: [("endpoint".to_string(), "127.0.0.1:7002".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agent_id;
    let agent = client
        .get_agent(pb::GetAgentRequest {
            agent_id: written.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(
        agent.endpoint, "127.0.0.1:7002",
        "endpoint set from metadata"
    );
    assert_eq!(
        agent.metadata.get("endpoint").map(String::as_str),
        Some("127.0.0.1:7002")
    );

    // Both given and different: both kept as sent. Not host:port in the
    // metadata: left there, the endpoint stays empty.
    let mut both = register_request(&["e"]);
    both.endpoint = "127.0.0.1:7003".into();
    both.metadata = [("endpoint".to_string(), "127.0.0.1:7004".to_string())].into();
    let both = client.register(both).await.unwrap().into_inner().agent_id;
    let both = get(&mut legacy_client, &both).await;
    assert_eq!(
        both.metadata.get("endpoint").map(String::as_str),
        Some("127.0.0.1:7004")
    );
    let mut odd = register_request(&["e"]);
    odd.metadata = [("endpoint".to_string(), "not an address".to_string())].into();
    let odd = client.register(odd).await.unwrap().into_inner().agent_id;
    let odd = client
        .get_agent(pb::GetAgentRequest { agent_id: odd })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(odd.endpoint, "");
    assert_eq!(
        odd.metadata.get("endpoint").map(String::as_str),
        Some("not an address")
    );

    // The mirrored entry does not count against the 64-entry limit.
    let mut full = register_request(&["e"]);
    full.endpoint = "127.0.0.1:7005".into();
    full.metadata = (0..64)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let full = client.register(full).await.unwrap().into_inner().agent_id;
    assert_eq!(get(&mut legacy_client, &full).await.metadata.len(), 65);
}

/// The original's scheduler and allocator: `filters["agent_type"]`,
/// `security_level = INTERNAL` for workers that never set one, and DEGRADED
/// workers as a fallback (`status=HEALTHY` included them).
async fn legacy_scheduler_finds_workers_by_type_security_level_and_degraded(backend: Backend) {
    let server = permissive(backend).await;
    let mut client = legacy_client(&server).await;
    let worker = register(&mut client, AgentType::Worker, &["exec"]).await;
    let _scout = register(&mut client, AgentType::Scout, &["exec"]).await;
    let degraded = register(&mut client, AgentType::Worker, &["exec"]).await;
    client
        .heartbeat(legacy::HeartbeatRequest {
            agent_id: degraded.clone(),
            telemetry: Some(AgentTelemetry {
                success_rate: 0.4,
                avg_duration_ms: 10,
                total_executions: 10,
                failed_executions: 6,
                last_execution_at: now(),
            }),
        })
        .await
        .unwrap();
    assert_eq!(
        get(&mut client, &degraded).await.status,
        AgentStatus::Degraded as i32
    );
    let discover = |filters: &[(&str, &str)]| legacy::DiscoverRequest {
        capabilities: vec!["exec".into()],
        filters: filters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        max_results: 10,
    };
    for filters in [
        vec![("agent_type", "WORKER")],
        vec![("agent_type", "WORKER"), ("security_level", "INTERNAL")],
        vec![("agent_type", "WORKER"), ("status", "HEALTHY")],
    ] {
        let found = client
            .discover_agents(discover(&filters))
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<&str> = found.agents.iter().map(|a| a.agent_id.as_str()).collect();
        assert_eq!(
            ids,
            vec![worker.as_str(), degraded.as_str()],
            "{filters:?}: the HEALTHY worker, then the DEGRADED one"
        );
    }
    let confidential = client
        .discover_agents(discover(&[("security_level", "CONFIDENTIAL")]))
        .await
        .unwrap()
        .into_inner();
    assert!(confidential.agents.is_empty());
    let serving = client
        .list_agents(legacy::ListAgentsRequest {
            agent_type: AgentType::Worker as i32,
            filters: [("status".to_string(), "HEALTHY".to_string())].into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<String> = serving.agents.into_iter().map(|a| a.agent_id).collect();
    ids.sort();
    let mut expected = vec![worker, degraded];
    expected.sort();
    assert_eq!(ids, expected, "status=HEALTHY lists DEGRADED agents too");
}

behaviour_tests! {
    legacy_caller_reregisters_on_nao_encontrado,
    every_agent_not_found_uses_the_originals_wording,
    legacy_readers_and_writers_share_the_endpoint_through_metadata,
    legacy_scheduler_finds_workers_by_type_security_level_and_degraded,
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

/// The real binary started with nothing but the original service's
/// environment (plus a free metrics port and the loopback address, which a
/// shared test machine needs): a deployment that only swaps the image.
mod environment {
    use std::{
        io::Read,
        net::SocketAddr,
        process::{Child, Command, Stdio},
        time::{Duration, Instant},
    };

    use agent_registry::pb;
    use tonic::Code;

    use super::{AgentType, LegacyClient, legacy};
    use crate::common::{RedisProcess, free_port, register_request, wait_ready, wait_until};

    /// A registry child process with exactly `vars` as its environment.
    struct Registry {
        addr: SocketAddr,
        child: Child,
        log: tempfile::NamedTempFile,
    }

    impl Registry {
        fn spawn(port: u16, vars: &[(&str, String)]) -> Self {
            let log = tempfile::NamedTempFile::new().unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_agent-registry"))
                .env_clear()
                .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
                .env("SERVICE_REGISTRY_HOST", "127.0.0.1")
                .env("METRICS_PORT", "0")
                .env("HTTP_PORT", "0")
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log.reopen().unwrap())
                .spawn()
                .unwrap();
            Self {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                child,
                log,
            }
        }

        async fn start(port: u16, vars: &[(&str, String)]) -> Self {
            let registry = Self::spawn(port, vars);
            wait_ready(&registry.endpoint()).await;
            registry
        }

        fn endpoint(&self) -> String {
            format!("http://{}", self.addr)
        }

        async fn legacy_client(&self) -> LegacyClient {
            legacy::service_registry_client::ServiceRegistryClient::connect(self.endpoint())
                .await
                .unwrap()
        }

        fn log(&self) -> String {
            let mut text = String::new();
            self.log
                .reopen()
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        }
    }

    impl Drop for Registry {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The original's variables for a registry on `port` using `redis`.
    fn original_env(redis: &RedisProcess, port: u16) -> Vec<(&'static str, String)> {
        vec![
            ("GRPC_PORT", port.to_string()),
            ("HEARTBEAT_TIMEOUT_SECONDS", "30".to_string()),
            ("ETCD_ENDPOINTS", format!(r#"["127.0.0.1:{}"]"#, redis.port)),
            ("ETCD_PREFIX", "neural-hive-registry".to_string()),
        ]
    }

    async fn heartbeat(client: &mut LegacyClient, id: &str) -> Result<(), tonic::Status> {
        client
            .heartbeat(legacy::HeartbeatRequest {
                agent_id: id.to_string(),
                telemetry: None,
            })
            .await
            .map(|_| ())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_started_with_the_originals_environment_share_one_registry() {
        let redis = RedisProcess::start().await;
        let (port_a, port_b) = (free_port(), free_port());
        let a = Registry::start(port_a, &original_env(&redis, port_a)).await;
        let b = Registry::start(port_b, &original_env(&redis, port_b)).await;
        assert_eq!(a.addr.port(), port_a, "GRPC_PORT is the port");

        let mut on_a = a.legacy_client().await;
        let mut on_b = b.legacy_client().await;
        let id = super::register(&mut on_a, AgentType::Worker, &["exec"]).await;
        // No token, on either replica: the original's callers send none.
        heartbeat(&mut on_a, &id).await.expect("heartbeat on A");
        wait_until(Duration::from_secs(2), "B sees A's agent", || {
            let mut on_b = on_b.clone();
            let id = id.clone();
            async move { heartbeat(&mut on_b, &id).await.is_ok() }
        })
        .await;
        assert_eq!(super::get(&mut on_b, &id).await.agent_id, id);

        // HEARTBEAT_TIMEOUT_SECONDS is the default TTL.
        let mut modern = pb::service_registry_client::ServiceRegistryClient::connect(b.endpoint())
            .await
            .unwrap();
        let granted = modern
            .register(register_request(&["x"]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(granted.ttl_seconds, 30);

        // ETCD_PREFIX names the keys in Redis.
        let mut conn = redis.connection().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            !keys.is_empty() && keys.iter().all(|k| k.starts_with("{neural-hive-registry}")),
            "{keys:?}"
        );

        let log = a.log();
        let warned = log
            .lines()
            .find(|l| l.contains("WARN") && l.contains("original"))
            .unwrap_or_else(|| panic!("no warn line about the environment in:\n{log}"));
        for name in [
            "GRPC_PORT",
            "HEARTBEAT_TIMEOUT_SECONDS",
            "ETCD_ENDPOINTS",
            "ETCD_PREFIX",
        ] {
            assert!(warned.contains(name), "{name} not named in {warned}");
        }
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains("NOT required")),
            "no warn line about tokens in:\n{log}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn require_registration_token_true_still_requires_tokens() {
        let redis = RedisProcess::start().await;
        let port = free_port();
        let mut vars = original_env(&redis, port);
        vars.push(("REQUIRE_REGISTRATION_TOKEN", "true".to_string()));
        let registry = Registry::start(port, &vars).await;
        let mut client = registry.legacy_client().await;
        let id = super::register(&mut client, AgentType::Worker, &["exec"]).await;
        let err = heartbeat(&mut client, &id)
            .await
            .expect_err("token required");
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        assert!(!registry.log().contains("NOT required"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn service_registry_port_beats_grpc_port() {
        let redis = RedisProcess::start().await;
        let (ours, theirs) = (free_port(), free_port());
        let mut vars = original_env(&redis, theirs);
        vars.push(("SERVICE_REGISTRY_PORT", ours.to_string()));
        let registry = Registry::start(ours, &vars).await;
        let mut client = registry.legacy_client().await;
        super::register(&mut client, AgentType::Worker, &["exec"]).await;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", theirs))
                .await
                .is_err(),
            "nothing listens on GRPC_PORT when SERVICE_REGISTRY_PORT is set"
        );
    }

    /// Callers register once at start, without retrying: a Register that
    /// reaches a replica while it is still loading its view waits for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_register_after_start_succeeds() {
        let redis = RedisProcess::start().await;
        // A population large enough that loading it takes a while.
        let port = free_port();
        let filler = Registry::start(port, &original_env(&redis, port)).await;
        let client = filler.legacy_client().await;
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..16 {
            let mut client = client.clone();
            tasks.spawn(async move {
                for i in 0..250 {
                    let cap = format!("c{}", (worker * 250 + i) % 50);
                    super::register(&mut client, AgentType::Worker, &[cap.as_str()]).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        drop(filler);

        for round in 0..3 {
            let port = free_port();
            let registry = Registry::spawn(port, &original_env(&redis, port));
            // Connect the moment the port opens, and register at once.
            let started = Instant::now();
            let mut client = loop {
                if let Ok(client) = legacy::service_registry_client::ServiceRegistryClient::connect(
                    registry.endpoint(),
                )
                .await
                {
                    break client;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the port never opened"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            let answer = client
                .register(legacy::RegisterRequest {
                    agent_type: AgentType::Worker as i32,
                    capabilities: vec!["first".into()],
                    ..Default::default()
                })
                .await;
            assert!(
                answer.is_ok(),
                "round {round}: the first Register failed: {answer:?}"
            );
        }
    }
}
