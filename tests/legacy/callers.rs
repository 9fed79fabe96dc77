//! The legacy client behaving as the original callers do (BEHAVIOUR.md §7): re-register
//! on `não encontrado`, endpoints from metadata, `agent_type`/`security_level` filters, DEGRADED fallback.

use std::time::Duration;

use tonic::Code;

use crate::common::*;
use agent_registry::pb;

use crate::legacy::{AgentStatus, AgentTelemetry, AgentType};

use crate::{LegacyClient, get, legacy, legacy_client, now, permissive, register};

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
}
