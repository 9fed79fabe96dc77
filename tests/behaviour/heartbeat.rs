//! Heartbeat, Deregister and GetAgent (BEHAVIOUR.md §4): last_seen and expiry,
//! telemetry and the status rule, unknown agents, and the accepted UUID forms.

use agent_registry::pb::{self};
use tonic::Code;

use crate::common::*;

use crate::lifecycle::{
    client_token, get, get_code, heartbeat, list_all, now, register, status_name, telemetry,
    telemetry_at, wait_past_second,
};

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

behaviour_tests! {
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
}
