//! Tokens and reads (BEHAVIOUR.md §3): every registration gets its own token, a
//! token never appears in a read, and an unknown agent is NOT_FOUND whatever the token.

use std::collections::HashSet;

use agent_registry::pb::{self};
use tonic::Code;

use crate::common::*;

use crate::tokens::{
    deregister, foreign_token, heartbeat, next, register, subscribe, subscribe_refusal,
};

pub async fn registrations_get_different_tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut tokens = HashSet::new();
    for _ in 0..20 {
        let agent = register(&mut client, &["a"]).await;
        assert!(
            tokens.insert(agent.registration_token.clone()),
            "token {:?} handed out twice",
            agent.registration_token
        );
    }
    assert_eq!(tokens.len(), 20);
}

pub async fn token_never_appears_in_read_responses(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut watch = client
        .watch_agents(pb::WatchAgentsRequest {
            send_initial_snapshot: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let minted = register(&mut client, &["a"]).await;
    let chosen_token = format!("Chosen_{}", uuid::Uuid::new_v4().simple());
    let mut req = register_request(&["a"]);
    req.agent_id = uuid::Uuid::new_v4().to_string();
    req.registration_token = chosen_token.clone();
    let chosen = client.register(req).await.unwrap().into_inner();
    assert_eq!(chosen.registration_token, chosen_token);
    let secrets = [
        (minted.agent_id.clone(), minted.registration_token.clone()),
        (chosen.agent_id.clone(), chosen_token.clone()),
    ];
    let assert_clean = |what: &str, text: &str| {
        for (_, token) in &secrets {
            assert!(
                !text.contains(token.as_str()),
                "{what} leaks a token: {text}"
            );
        }
    };

    for (id, _) in &secrets {
        let resp = client
            .get_agent(pb::GetAgentRequest {
                agent_id: id.clone(),
            })
            .await
            .unwrap();
        assert_clean("GetAgent", &format!("{resp:?}"));
    }
    let list = client
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap();
    assert_eq!(list.get_ref().agents.len(), 2);
    assert_clean("ListAgents", &format!("{list:?}"));
    let paged = client
        .list_agents(pb::ListAgentsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_clean("ListAgents page", &format!("{paged:?}"));
    let discover = client
        .discover_agents(pb::DiscoverRequest {
            capabilities: vec!["a".into()],
            max_results: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(discover.get_ref().agents.len(), 2);
    assert_clean("DiscoverAgents", &format!("{discover:?}"));

    // Changes that reach the watcher, then every event up to the
    // deregistration of the last agent.
    client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: minted.agent_id.clone(),
            telemetry: Some(pb::AgentTelemetry {
                success_rate: 0.1,
                avg_duration_ms: 5,
                total_executions: 10,
                failed_executions: 9,
                last_execution_at: 0,
            }),
            registration_token: minted.registration_token.clone(),
        })
        .await
        .unwrap();
    client
        .deregister(deregister(&chosen.agent_id, &chosen_token))
        .await
        .unwrap();
    let mut seen = 0;
    loop {
        let event = next(&mut watch).await;
        assert_clean("WatchAgents", &format!("{event:?}"));
        seen += 1;
        let done = event.event_type == pb::agent_change_event::EventType::Deregistered as i32
            && event.agent.as_ref().map(|a| a.agent_id.as_str()) == Some(chosen.agent_id.as_str());
        if done {
            break;
        }
        assert!(seen < 50, "no DEREGISTERED event among 50 events");
    }
    assert!(
        seen >= 4,
        "saw the registrations and updates too ({seen} events)"
    );
}

pub async fn unknown_agent_with_a_wrong_or_missing_token_is_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    register(&mut client, &["a"]).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for token in [foreign_token(), String::new()] {
        let err = client
            .heartbeat(heartbeat(&unknown, &token))
            .await
            .expect_err("unknown agent");
        assert_eq!(
            err.code(),
            Code::NotFound,
            "Heartbeat token {token:?}: {err:?}"
        );
        let status = subscribe_refusal(
            &mut client,
            tonic::Request::new(subscribe(&unknown, &token)),
        )
        .await;
        assert_eq!(
            status.code(),
            Code::NotFound,
            "Subscribe token {token:?}: {status:?}"
        );
        let resp = client
            .deregister(deregister(&unknown, &token))
            .await
            .unwrap_or_else(|e| panic!("Deregister of an unknown id, token {token:?}: {e:?}"))
            .into_inner();
        assert!(!resp.success, "Deregister of an unknown id");
    }
}

behaviour_tests! {
    registrations_get_different_tokens,
    token_never_appears_in_read_responses,
    unknown_agent_with_a_wrong_or_missing_token_is_not_found,
}
