//! Ownership by identity: the identity that registered an agent needs no
//! token for it; the token still works from any caller; another identity
//! without it is PERMISSION_DENIED. On both stores.

use agent_registry::pb;
use tonic::Code;

use crate::{
    common::{RedisProcess, with_token},
    pki::{Signer, bundle},
    support::{Files, Server, register, with_bearer, worker},
};

const OWNER: &str = "spiffe://example.org/ns/exec/sa/owner";
const OTHER: &str = "spiffe://example.org/ns/exec/sa/other";

async fn owned_agents_need_no_token(redis: Option<&RedisProcess>) {
    let (signer, files) = (Signer::new("k1"), Files::new());
    files.write("bundle.json", &bundle(&[&signer]));
    let path = files.path("bundle.json");
    let url = redis.map(RedisProcess::url);
    let server = Server::start_on(url.as_deref(), &["--jwt-bundle", &path], |_| {}).await;
    crate::common::wait_ready(&server.endpoint()).await;
    let mut client = server.client().await;
    let (owner, other) = (signer.token(OWNER), signer.token(OTHER));
    let registered = register(&mut client, with_bearer(worker(), &owner))
        .await
        .unwrap();
    let id = registered.agent_id.clone();
    let heartbeat = |jwt: &str, token: Option<&str>| {
        let mut request = with_bearer(
            pb::HeartbeatRequest {
                agent_id: id.clone(),
                ..Default::default()
            },
            jwt,
        );
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("x-registration-token", token.parse().unwrap());
        }
        request
    };
    client.heartbeat(heartbeat(&owner, None)).await.unwrap();
    let denied = client.heartbeat(heartbeat(&other, None)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    client
        .heartbeat(heartbeat(&other, Some(&registered.registration_token)))
        .await
        .unwrap();
    // Anonymous with the token works; without it, the token is missing.
    let anonymous = pb::HeartbeatRequest {
        agent_id: id.clone(),
        ..Default::default()
    };
    client
        .heartbeat(with_token(
            anonymous.clone(),
            &registered.registration_token,
        ))
        .await
        .unwrap();
    let missing = client.heartbeat(anonymous).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    // A wrong token is refused even from the owner.
    let wrong = client
        .heartbeat(heartbeat(&owner, Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAA")))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);

    // Re-register and subscribe as the owner, without the token.
    let again = pb::RegisterRequest {
        agent_id: id.clone(),
        ..worker()
    };
    register(&mut client, with_bearer(again.clone(), &owner))
        .await
        .unwrap();
    let denied = register(&mut client, with_bearer(again, &other))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let subscribe = |jwt: &str| {
        with_bearer(
            pb::SubscribeNotificationsRequest {
                agent_id: id.clone(),
                ..Default::default()
            },
            jwt,
        )
    };
    let denied = client
        .subscribe_notifications(subscribe(&other))
        .await
        .err();
    assert_eq!(denied.map(|s| s.code()), Some(Code::PermissionDenied));
    drop(
        client
            .subscribe_notifications(subscribe(&owner))
            .await
            .unwrap(),
    );

    // Deregister: another identity cannot, the owner can.
    let deregister = |jwt: &str| {
        with_bearer(
            pb::DeregisterRequest {
                agent_id: id.clone(),
                ..Default::default()
            },
            jwt,
        )
    };
    let denied = client.deregister(deregister(&other)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        client
            .deregister(deregister(&owner))
            .await
            .unwrap()
            .into_inner()
            .success
    );
    server.stop().await;
}

#[tokio::test]
async fn owned_agents_need_no_token_on_memory() {
    owned_agents_need_no_token(None).await;
}

#[tokio::test]
async fn owned_agents_need_no_token_on_redis() {
    let redis = RedisProcess::start().await;
    owned_agents_need_no_token(Some(&redis)).await;
}
