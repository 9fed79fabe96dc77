//! Identifiers of BEHAVIOUR.md §2: client-sent registration tokens, notification
//! and agent ids, and validation running before the existence and token checks.

use std::time::Duration;

use agent_registry::pb::{self};
use tonic::Status;

use crate::common::*;

use crate::validation::{
    Client, check_invalid, check_ok, meta, new_id, notify, register, telemetry, try_heartbeat,
    try_notify, try_register,
};

/// A syntactically valid token that is nobody's.
fn some_token() -> String {
    "x".repeat(32)
}

/// As [`try_watch`], for SubscribeNotifications.
async fn try_subscribe(
    client: &mut Client,
    req: tonic::Request<pb::SubscribeNotificationsRequest>,
) -> Result<(), Status> {
    let mut stream = client.subscribe_notifications(req).await?.into_inner();
    match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        Ok(Err(status)) => Err(status),
        _ => Ok(()),
    }
}

pub async fn client_sent_registration_token_must_be_22_to_256_url_safe_characters(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let with = |token: String| {
        let mut req = register_request(&["a"]);
        req.agent_id = new_id();
        req.registration_token = token;
        req
    };
    let bad = [
        "a".repeat(21),
        format!("{}!", "a".repeat(29)),
        "a".repeat(257),
        format!("{} {}", "a".repeat(15), "b".repeat(15)),
        format!("{}=", "a".repeat(30)),
        format!("{}+/", "a".repeat(30)),
        format!("{}é", "a".repeat(30)),
    ];
    for token in bad {
        check_invalid(
            try_register(&mut client, with(token.clone())).await,
            &["registration_token"],
            &format!("client token {token:?}"),
        );
    }
    let ok = [
        "a".repeat(22),
        "Z".repeat(256),
        "Ab0_-Ab0_-Ab0_-Ab0_-Ab0_-".to_string(),
    ];
    for token in ok {
        check_ok(
            try_register(&mut client, with(token.clone())).await,
            &format!("client token of {} chars", token.len()),
        );
    }
}

pub async fn after_notification_id_must_be_empty_or_an_id(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    check_ok(
        try_notify(&mut client, notify(&agent.agent_id)).await,
        "a notification",
    );
    for bad in ["abc", "-1", "1.5", " 1", "0x1"] {
        let req = pb::SubscribeNotificationsRequest {
            agent_id: agent.agent_id.clone(),
            registration_token: agent.registration_token.clone(),
            after_notification_id: bad.to_string(),
        };
        check_invalid(
            try_subscribe(&mut client, tonic::Request::new(req)).await,
            &["after_notification_id"],
            &format!("after_notification_id {bad:?}"),
        );
    }
}

pub async fn malformed_agent_id_is_refused_by_every_call(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for bad in [
        "xyz",
        "1234",
        "0000-0000",
        "g0000000-0000-4000-8000-000000000000",
    ] {
        let id = bad.to_string();
        check_invalid(
            try_heartbeat(
                &mut client,
                pb::HeartbeatRequest {
                    agent_id: id.clone(),
                    telemetry: None,
                    registration_token: some_token(),
                },
            )
            .await,
            &["agent_id"],
            &format!("Heartbeat {bad:?}"),
        );
        check_invalid(
            client
                .deregister(pb::DeregisterRequest {
                    agent_id: id.clone(),
                    registration_token: some_token(),
                })
                .await
                .map(|_| ()),
            &["agent_id"],
            &format!("Deregister {bad:?}"),
        );
        check_invalid(
            client
                .get_agent(pb::GetAgentRequest {
                    agent_id: id.clone(),
                })
                .await
                .map(|_| ()),
            &["agent_id"],
            &format!("GetAgent {bad:?}"),
        );
        check_invalid(
            try_notify(&mut client, notify(&id)).await,
            &["agent_id"],
            &format!("NotifyAgent {bad:?}"),
        );
        check_invalid(
            try_subscribe(
                &mut client,
                tonic::Request::new(pb::SubscribeNotificationsRequest {
                    agent_id: id.clone(),
                    registration_token: some_token(),
                    after_notification_id: String::new(),
                }),
            )
            .await,
            &["agent_id"],
            &format!("SubscribeNotifications {bad:?}"),
        );
        let mut req = register_request(&["a"]);
        req.agent_id = id.clone();
        check_invalid(
            try_register(&mut client, req).await,
            &["agent_id"],
            &format!("Register agent_id {bad:?}"),
        );
    }
    // Empty ids: required everywhere except Register.
    check_invalid(
        try_heartbeat(
            &mut client,
            pb::HeartbeatRequest {
                agent_id: String::new(),
                telemetry: None,
                registration_token: some_token(),
            },
        )
        .await,
        &["agent_id"],
        "Heartbeat with an empty agent_id",
    );
    check_invalid(
        try_notify(&mut client, notify("")).await,
        &["agent_id"],
        "NotifyAgent with an empty agent_id",
    );
}

pub async fn malformed_request_to_an_unknown_agent_is_invalid_argument_not_not_found(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let unknown = new_id();
    check_invalid(
        try_heartbeat(
            &mut client,
            pb::HeartbeatRequest {
                agent_id: unknown.clone(),
                telemetry: Some(telemetry(1.5, 0, 10, 0)),
                registration_token: some_token(),
            },
        )
        .await,
        &["success_rate", "telemetry"],
        "Heartbeat with bad telemetry to an unknown agent",
    );
    let mut req = notify(&unknown);
    req.notification_type = "T".repeat(65);
    check_invalid(
        try_notify(&mut client, req).await,
        &["notification_type"],
        "NotifyAgent with a long type to an unknown agent",
    );
    let mut req = notify(&unknown);
    req.metadata = meta(65);
    check_invalid(
        try_notify(&mut client, req).await,
        &["metadata"],
        "NotifyAgent with too much metadata to an unknown agent",
    );
    check_invalid(
        try_subscribe(
            &mut client,
            tonic::Request::new(pb::SubscribeNotificationsRequest {
                agent_id: unknown.clone(),
                registration_token: some_token(),
                after_notification_id: "abc".into(),
            }),
        )
        .await,
        &["after_notification_id"],
        "SubscribeNotifications with a bad resume id for an unknown agent",
    );
    let mut req = register_request(&[]);
    req.agent_id = unknown;
    check_invalid(
        try_register(&mut client, req).await,
        &["capabilities"],
        "Register under an unknown id without capabilities",
    );
}

pub async fn validation_runs_before_the_token_check(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    for token in [String::new(), some_token()] {
        check_invalid(
            try_heartbeat(
                &mut client,
                pb::HeartbeatRequest {
                    agent_id: agent.agent_id.clone(),
                    telemetry: Some(telemetry(0.5, 0, 10, 20)),
                    registration_token: token.clone(),
                },
            )
            .await,
            &["failed_executions", "total_executions", "telemetry"],
            &format!("Heartbeat with bad telemetry and token {token:?}"),
        );
        check_invalid(
            try_subscribe(
                &mut client,
                tonic::Request::new(pb::SubscribeNotificationsRequest {
                    agent_id: agent.agent_id.clone(),
                    registration_token: token.clone(),
                    after_notification_id: "abc".into(),
                }),
            )
            .await,
            &["after_notification_id"],
            &format!("SubscribeNotifications with a bad resume id and token {token:?}"),
        );
        let mut req = register_request(&["a"]);
        req.agent_id = agent.agent_id.clone();
        req.registration_token = token.clone();
        req.agent_type = 0;
        check_invalid(
            try_register(&mut client, req).await,
            &["agent_type"],
            &format!("re-Register with agent_type 0 and token {token:?}"),
        );
    }
}

behaviour_tests! {
    client_sent_registration_token_must_be_22_to_256_url_safe_characters,
    after_notification_id_must_be_empty_or_an_id,
    malformed_agent_id_is_refused_by_every_call,
    malformed_request_to_an_unknown_agent_is_invalid_argument_not_not_found,
    validation_runs_before_the_token_check,
}
