//! Ownership tokens (BEHAVIOUR.md §3): where a token may travel, missing vs
//! wrong tokens, `--require-token false`, existence before token, and that a
//! token never leaks through a read.

use std::time::Duration;

use agent_registry::pb::{self, service_registry_client::ServiceRegistryClient};
use tonic::{Code, Status, Streaming, transport::Channel};

use crate::common::*;

type Client = ServiceRegistryClient<Channel>;

/// A syntactically valid token that belongs to nobody.
pub(crate) fn foreign_token() -> String {
    format!("W{}", uuid::Uuid::new_v4().simple())
}

pub(crate) async fn register(client: &mut Client, caps: &[&str]) -> pb::RegisterResponse {
    client
        .register(register_request(caps))
        .await
        .unwrap()
        .into_inner()
}

pub(crate) fn heartbeat(id: &str, token: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        agent_id: id.to_string(),
        telemetry: None,
        registration_token: token.to_string(),
    }
}

pub(crate) fn deregister(id: &str, token: &str) -> pb::DeregisterRequest {
    pb::DeregisterRequest {
        agent_id: id.to_string(),
        registration_token: token.to_string(),
    }
}

pub(crate) fn subscribe(id: &str, token: &str) -> pb::SubscribeNotificationsRequest {
    pb::SubscribeNotificationsRequest {
        agent_id: id.to_string(),
        registration_token: token.to_string(),
        after_notification_id: String::new(),
    }
}

async fn exists(client: &mut Client, id: &str) -> bool {
    match client
        .get_agent(pb::GetAgentRequest {
            agent_id: id.to_string(),
        })
        .await
    {
        Ok(_) => true,
        Err(status) if status.code() == Code::NotFound => false,
        Err(status) => panic!("GetAgent({id}): {status:?}"),
    }
}

/// The status a subscription is refused with: the call's own, or the first
/// item of its stream.
pub(crate) async fn subscribe_refusal(
    client: &mut Client,
    req: tonic::Request<pb::SubscribeNotificationsRequest>,
) -> Status {
    match client.subscribe_notifications(req).await {
        Err(status) => status,
        Ok(resp) => {
            let mut stream = resp.into_inner();
            match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
                Ok(Err(status)) => status,
                Ok(Ok(item)) => panic!("subscription was accepted: {item:?}"),
                Err(_) => panic!("subscription was accepted (open, no error within 2 s)"),
            }
        }
    }
}

/// Proves a subscription works: notifies the agent and reads the
/// notification from the stream.
async fn subscription_delivers(
    client: &mut Client,
    req: tonic::Request<pb::SubscribeNotificationsRequest>,
    agent_id: &str,
) {
    let mut stream = client
        .subscribe_notifications(req)
        .await
        .expect("subscription accepted")
        .into_inner();
    let sent = client
        .notify_agent(pb::NotifyAgentRequest {
            agent_id: agent_id.to_string(),
            notification_type: "PING".into(),
            message: "token test".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(sent.success);
    let got = next(&mut stream).await;
    assert_eq!(got.agent_id, agent_id);
}

pub(crate) async fn next<T>(stream: &mut Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(2), stream.message())
        .await
        .expect("no stream item within 2 s")
        .expect("stream failed")
        .expect("stream ended")
}

pub async fn heartbeat_accepts_the_token_in_the_request_field(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    let resp = client
        .heartbeat(heartbeat(&agent.agent_id, &agent.registration_token))
        .await
        .expect("token in the field")
        .into_inner();
    assert_eq!(resp.status, pb::AgentStatus::Healthy as i32);
}

pub async fn heartbeat_accepts_the_token_in_metadata(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    let resp = client
        .heartbeat(with_token(
            heartbeat(&agent.agent_id, ""),
            &agent.registration_token,
        ))
        .await
        .expect("token in x-registration-token")
        .into_inner();
    assert_eq!(resp.status, pb::AgentStatus::Healthy as i32);
}

pub async fn deregister_accepts_the_token_in_the_field_or_in_metadata(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let a = register(&mut client, &["a"]).await;
    let b = register(&mut client, &["a"]).await;
    let by_field = client
        .deregister(deregister(&a.agent_id, &a.registration_token))
        .await
        .expect("token in the field")
        .into_inner();
    assert!(by_field.success);
    let by_metadata = client
        .deregister(with_token(
            deregister(&b.agent_id, ""),
            &b.registration_token,
        ))
        .await
        .expect("token in metadata")
        .into_inner();
    assert!(by_metadata.success);
    assert!(!exists(&mut client, &a.agent_id).await);
    assert!(!exists(&mut client, &b.agent_id).await);
}

pub async fn subscribe_accepts_the_token_in_the_field_or_in_metadata(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let a = register(&mut client, &["a"]).await;
    let b = register(&mut client, &["a"]).await;
    subscription_delivers(
        &mut client,
        tonic::Request::new(subscribe(&a.agent_id, &a.registration_token)),
        &a.agent_id,
    )
    .await;
    subscription_delivers(
        &mut client,
        with_token(subscribe(&b.agent_id, ""), &b.registration_token),
        &b.agent_id,
    )
    .await;
}

pub async fn heartbeat_without_token_is_unauthenticated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    let err = client
        .heartbeat(heartbeat(&agent.agent_id, ""))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

pub async fn deregister_without_token_is_unauthenticated_and_keeps_the_agent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    let err = client
        .deregister(deregister(&agent.agent_id, ""))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(exists(&mut client, &agent.agent_id).await, "agent kept");
}

pub async fn subscribe_without_token_is_unauthenticated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    let status = subscribe_refusal(
        &mut client,
        tonic::Request::new(subscribe(&agent.agent_id, "")),
    )
    .await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

pub async fn reregister_of_a_registered_agent_without_token_is_unauthenticated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["original"]).await;
    let mut req = register_request(&["hijack"]);
    req.agent_id = agent.agent_id.clone();
    let err = client.register(req).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let stored = client
        .get_agent(pb::GetAgentRequest {
            agent_id: agent.agent_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(stored.capabilities, vec!["original"], "agent unchanged");
}

/// Every token-checked call with a wrong token, in the field and in
/// metadata, is PERMISSION_DENIED and changes nothing.
async fn wrong_tokens_are_permission_denied(server: &TestServer) {
    let mut client = server.client().await;
    let agent = register(&mut client, &["original"]).await;
    let other = register(&mut client, &["a"]).await;
    let id = agent.agent_id.as_str();
    for wrong in [foreign_token(), other.registration_token.clone()] {
        let cases: Vec<(&str, Result<(), Status>)> = vec![
            (
                "Heartbeat field",
                client.heartbeat(heartbeat(id, &wrong)).await.map(|_| ()),
            ),
            (
                "Heartbeat metadata",
                client
                    .heartbeat(with_token(heartbeat(id, ""), &wrong))
                    .await
                    .map(|_| ()),
            ),
            (
                "Deregister field",
                client.deregister(deregister(id, &wrong)).await.map(|_| ()),
            ),
            (
                "Deregister metadata",
                client
                    .deregister(with_token(deregister(id, ""), &wrong))
                    .await
                    .map(|_| ()),
            ),
            ("Register with agent_id", {
                let mut req = register_request(&["hijack"]);
                req.agent_id = id.to_string();
                req.registration_token = wrong.clone();
                client.register(req).await.map(|_| ())
            }),
        ];
        for (what, result) in cases {
            let err = result.expect_err(what);
            assert_eq!(err.code(), Code::PermissionDenied, "{what}: {err:?}");
        }
        let status =
            subscribe_refusal(&mut client, tonic::Request::new(subscribe(id, &wrong))).await;
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "Subscribe field: {status:?}"
        );
        let status = subscribe_refusal(&mut client, with_token(subscribe(id, ""), &wrong)).await;
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "Subscribe metadata: {status:?}"
        );
    }
    let stored = client
        .get_agent(pb::GetAgentRequest {
            agent_id: id.to_string(),
        })
        .await
        .expect("the agent survives wrong tokens")
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(stored.capabilities, vec!["original"]);
}

pub async fn wrong_token_is_permission_denied(backend: Backend) {
    let server = TestServer::start(backend).await;
    wrong_tokens_are_permission_denied(&server).await;
}

pub async fn wrong_token_is_permission_denied_even_when_tokens_are_optional(backend: Backend) {
    let server = TestServer::start_with(backend, &["--require-token", "false"]).await;
    wrong_tokens_are_permission_denied(&server).await;
}

pub async fn missing_tokens_are_accepted_when_tokens_are_optional(backend: Backend) {
    let server = TestServer::start_with(backend, &["--require-token", "false"]).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["original"]).await;
    let id = agent.agent_id.clone();

    client
        .heartbeat(heartbeat(&id, ""))
        .await
        .expect("heartbeat without token");
    subscription_delivers(&mut client, tonic::Request::new(subscribe(&id, "")), &id).await;

    let mut req = register_request(&["replaced"]);
    req.agent_id = id.clone();
    let again = client
        .register(req)
        .await
        .expect("re-register without token")
        .into_inner();
    assert_eq!(again.agent_id, id);
    assert_eq!(
        again.registered_at, agent.registered_at,
        "replaced in place"
    );
    let stored = client
        .get_agent(pb::GetAgentRequest {
            agent_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(stored.capabilities, vec!["replaced"]);

    let gone = client
        .deregister(deregister(&id, ""))
        .await
        .expect("deregister without token")
        .into_inner();
    assert!(gone.success);
    assert!(!exists(&mut client, &id).await);
}

pub async fn right_token_still_works_when_tokens_are_optional(backend: Backend) {
    let server = TestServer::start_with(backend, &["--require-token", "false"]).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    client
        .heartbeat(heartbeat(&agent.agent_id, &agent.registration_token))
        .await
        .expect("heartbeat with the token");
    client
        .heartbeat(with_token(
            heartbeat(&agent.agent_id, ""),
            &agent.registration_token,
        ))
        .await
        .expect("heartbeat with the token in metadata");
}

behaviour_tests! {
    heartbeat_accepts_the_token_in_the_request_field,
    heartbeat_accepts_the_token_in_metadata,
    deregister_accepts_the_token_in_the_field_or_in_metadata,
    subscribe_accepts_the_token_in_the_field_or_in_metadata,
    heartbeat_without_token_is_unauthenticated,
    deregister_without_token_is_unauthenticated_and_keeps_the_agent,
    subscribe_without_token_is_unauthenticated,
    reregister_of_a_registered_agent_without_token_is_unauthenticated,
    wrong_token_is_permission_denied,
    wrong_token_is_permission_denied_even_when_tokens_are_optional,
    missing_tokens_are_accepted_when_tokens_are_optional,
    right_token_still_works_when_tokens_are_optional,
}
