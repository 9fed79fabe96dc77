//! The per-call limits of §9 each refuse with RESOURCE_EXHAUSTED, and the
//! server is fine afterwards: message size, open streams, rate, answer
//! size, agents; and the notification backlog's byte bound.

use std::time::Duration;

use agent_registry::pb;
use tonic::Code;

use crate::{
    common::{RedisProcess, try_watch_synced, wait_until, with_token},
    pki::{Signer, bundle},
    support::{Client, Files, Server, list, register, with_bearer, worker},
};

fn with_metadata(bytes: usize) -> pb::RegisterRequest {
    let mut request = worker();
    for i in 0..bytes / 1000 {
        request.metadata.insert(format!("k{i}"), "v".repeat(1000));
    }
    request
}

#[tokio::test]
async fn a_request_over_max_message_bytes_is_resource_exhausted() {
    let server = Server::start(&["--max-message-bytes", "4096"]).await;
    let mut client = server.client().await;
    let refused = register(&mut client, tonic::Request::new(with_metadata(8000)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    register(&mut client, tonic::Request::new(with_metadata(2000)))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn streams_beyond_max_streams_are_resource_exhausted() {
    let server = Server::start(&["--max-streams", "2"]).await;
    let mut client = server.client().await;
    let first = try_watch_synced(&mut client).await.unwrap();
    let _second = try_watch_synced(&mut client).await.unwrap();
    let refused = client
        .watch_agents(pb::WatchAgentsRequest::default())
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(refused, Some(Code::ResourceExhausted));
    // A notification stream counts too.
    let agent = register(&mut client, tonic::Request::new(worker()))
        .await
        .unwrap();
    let subscribe = pb::SubscribeNotificationsRequest {
        agent_id: agent.agent_id.clone(),
        ..Default::default()
    };
    let refused = client
        .subscribe_notifications(with_token(subscribe.clone(), &agent.registration_token))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(refused, Some(Code::ResourceExhausted));
    // A closed stream gives its slot back.
    drop(first);
    wait_until(Duration::from_secs(5), "a stream slot comes back", || {
        let mut client = client.clone();
        let subscribe = with_token(subscribe.clone(), &agent.registration_token);
        async move { client.subscribe_notifications(subscribe).await.is_ok() }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn calls_beyond_the_rate_limit_are_resource_exhausted_per_caller() {
    let (signer, files) = (Signer::new("k1"), Files::new());
    files.write("bundle.json", &bundle(&[&signer]));
    let path = files.path("bundle.json");
    let server = Server::start(&["--rate-limit", "5", "--jwt-bundle", &path]).await;
    let mut client = server.client().await;
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(list(&mut client, tonic::Request::new(Default::default())).await);
    }
    let admitted = codes.iter().filter(|c| **c == Code::Ok).count();
    assert!(
        (10..=12).contains(&admitted),
        "a burst of 2 s at 5/s: {codes:?}"
    );
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Code::Ok | Code::ResourceExhausted))
    );
    // An identified caller has its own bucket.
    let jwt = signer.token("spiffe://example.org/scheduler");
    assert_eq!(
        list(&mut client, with_bearer(Default::default(), &jwt)).await,
        Code::Ok
    );
    // The rate comes back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        list(&mut client, tonic::Request::new(Default::default())).await,
        Code::Ok
    );
    server.stop().await;
}

#[tokio::test]
async fn an_answer_over_max_response_bytes_is_resource_exhausted_naming_page_size() {
    let server = Server::start(&["--max-response-bytes", "20000"]).await;
    let mut client = server.client().await;
    for _ in 0..30 {
        register(&mut client, tonic::Request::new(with_metadata(1000)))
            .await
            .unwrap();
    }
    let refused = client
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("page_size"),
        "{}",
        refused.message()
    );
    let page = client
        .list_agents(pb::ListAgentsRequest {
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.agents.len(), 5);
    let discover = pb::DiscoverRequest {
        capabilities: vec!["compute".into()],
        max_results: 1000,
        ..Default::default()
    };
    let refused = client.discover_agents(discover).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    server.stop().await;
}

#[tokio::test]
async fn registrations_beyond_max_agents_are_resource_exhausted() {
    let server = Server::start(&["--max-agents", "3"]).await;
    let mut client = server.client().await;
    let mut agents = Vec::new();
    for _ in 0..3 {
        agents.push(
            register(&mut client, tonic::Request::new(worker()))
                .await
                .unwrap(),
        );
    }
    let refused = register(&mut client, tonic::Request::new(worker()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // Re-registering an existing agent is not creating one.
    let again = pb::RegisterRequest {
        agent_id: agents[0].agent_id.clone(),
        ..worker()
    };
    register(
        &mut client,
        with_token(again, &agents[0].registration_token),
    )
    .await
    .unwrap();
    let gone = pb::DeregisterRequest {
        agent_id: agents[1].agent_id.clone(),
        ..Default::default()
    };
    client
        .deregister(with_token(gone, &agents[1].registration_token))
        .await
        .unwrap();
    register(&mut client, tonic::Request::new(worker()))
        .await
        .unwrap();
    server.stop().await;
}

/// Reads a subscription until it has been quiet for 300 ms: what arrived.
async fn drain(mut stream: tonic::Streaming<pb::AgentNotification>) -> Vec<pb::AgentNotification> {
    let mut got = Vec::new();
    while let Ok(Ok(Some(n))) =
        tokio::time::timeout(Duration::from_millis(300), stream.message()).await
    {
        got.push(n);
        assert!(got.len() <= 200, "unbounded backlog");
    }
    got
}

async fn backlogs_hold_at_most_one_mib(client: &mut Client) {
    let agent = register(client, tonic::Request::new(worker()))
        .await
        .unwrap();
    let message = "m".repeat(60 * 1024);
    for _ in 0..40 {
        let notify = pb::NotifyAgentRequest {
            agent_id: agent.agent_id.clone(),
            message: message.clone(),
            ..Default::default()
        };
        client.notify_agent(notify).await.unwrap();
    }
    let subscribe = pb::SubscribeNotificationsRequest {
        agent_id: agent.agent_id.clone(),
        ..Default::default()
    };
    let stream = client
        .subscribe_notifications(with_token(subscribe, &agent.registration_token))
        .await
        .unwrap()
        .into_inner();
    let backlog = drain(stream).await;
    let bytes: usize = backlog.iter().map(|n| n.message.len()).sum();
    assert!(bytes <= 1024 * 1024, "{bytes} bytes in the backlog");
    assert!(
        backlog.len() >= 15,
        "the newest notifications stay: {}",
        backlog.len()
    );
    assert_eq!(
        backlog.last().unwrap().notification_id,
        "40",
        "oldest dropped first"
    );
}

#[tokio::test]
async fn notification_backlogs_hold_at_most_one_mib_on_memory() {
    let server = Server::start(&[]).await;
    backlogs_hold_at_most_one_mib(&mut server.client().await).await;
    server.stop().await;
}

#[tokio::test]
async fn notification_backlogs_hold_at_most_one_mib_on_redis() {
    let redis = RedisProcess::start().await;
    let server = Server::start_on(Some(&redis.url()), &[], |_| {}).await;
    crate::common::wait_ready(&server.endpoint()).await;
    backlogs_hold_at_most_one_mib(&mut server.client().await).await;
    server.stop().await;
}
