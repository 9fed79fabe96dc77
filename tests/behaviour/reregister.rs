//! Re-registration (BEHAVIOUR.md §4): in place with id and token, under an unknown
//! id, and refused calls (bad requests, wrong tokens) changing nothing.

use std::collections::HashMap;

use agent_registry::pb::{self};
use tonic::Code;

use crate::common::*;

use crate::lifecycle::{
    client_token, get, get_code, heartbeat, list_all, now, register, status_name, telemetry_at,
    wait_past_second,
};

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
    reregister_with_id_and_token_replaces_the_agent_in_place,
    reregister_under_an_unknown_id_creates_it_keeping_the_clients_token,
    reregister_under_an_unknown_id_without_token_mints_one,
    reregister_under_an_unknown_id_returns_it_in_canonical_form,
    refused_register_changes_nothing,
    refused_reregister_under_an_unknown_id_creates_nothing,
    heartbeat_with_a_wrong_token_changes_nothing,
    reregister_with_a_wrong_token_changes_nothing,
    deregister_with_a_wrong_token_keeps_the_agent,
}
