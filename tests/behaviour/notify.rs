//! NotifyAgent and SubscribeNotifications (BEHAVIOUR.md §4): per-agent
//! notification ids, the `delivered` flag, the 100-entry backlog, resuming
//! after an id, live delivery without gap or duplicate, several
//! subscribers, and what deregistration does to streams and backlogs.

use std::time::Duration;

use agent_registry::pb::{self, service_registry_client::ServiceRegistryClient};
use tonic::{Code, Streaming, transport::Channel};

use crate::common::*;

type Client = ServiceRegistryClient<Channel>;
type Notifications = Streaming<pb::AgentNotification>;

const WAIT: Duration = Duration::from_secs(5);

async fn register(client: &mut Client) -> pb::RegisterResponse {
    client
        .register(register_request(&["notified"]))
        .await
        .expect("register succeeds")
        .into_inner()
}

fn notify_request(agent_id: &str, message: &str) -> pb::NotifyAgentRequest {
    pb::NotifyAgentRequest {
        agent_id: agent_id.to_string(),
        notification_type: String::new(),
        message: message.to_string(),
        metadata: Default::default(),
    }
}

async fn notify(client: &mut Client, agent_id: &str, message: &str) -> pb::NotifyAgentResponse {
    let response = client
        .notify_agent(notify_request(agent_id, message))
        .await
        .expect("notify_agent succeeds")
        .into_inner();
    assert!(response.success, "notify answers success: {response:?}");
    response
}

/// Sends `count` notifications with messages "m1", "m2", ...
async fn notify_many(client: &mut Client, agent_id: &str, count: usize) {
    for i in 1..=count {
        let response = notify(client, agent_id, &format!("m{i}")).await;
        assert_eq!(response.notification_id, i.to_string());
    }
}

async fn subscribe(
    client: &mut Client,
    agent: &pb::RegisterResponse,
    after: &str,
) -> Notifications {
    client
        .subscribe_notifications(with_token(
            pb::SubscribeNotificationsRequest {
                agent_id: agent.agent_id.clone(),
                registration_token: String::new(),
                after_notification_id: after.to_string(),
            },
            &agent.registration_token,
        ))
        .await
        .expect("subscribe_notifications succeeds")
        .into_inner()
}

async fn next_notification(stream: &mut Notifications) -> pb::AgentNotification {
    match tokio::time::timeout(WAIT, stream.message()).await {
        Err(_) => panic!("no notification within {WAIT:?}"),
        Ok(Err(status)) => panic!("subscription failed: {status:?}"),
        Ok(Ok(None)) => panic!("subscription ended"),
        Ok(Ok(Some(n))) => n,
    }
}

/// Reads `count` notifications and returns their ids as numbers.
async fn next_ids(stream: &mut Notifications, count: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let n = next_notification(stream).await;
        ids.push(
            n.notification_id
                .parse()
                .unwrap_or_else(|_| panic!("notification id is a decimal counter: {n:?}")),
        );
    }
    ids
}

async fn expect_quiet(stream: &mut Notifications, quiet: Duration) {
    match tokio::time::timeout(quiet, stream.message()).await {
        Err(_) => {}
        Ok(Ok(Some(n))) => panic!("unexpected notification: {n:?}"),
        Ok(other) => panic!("subscription ended: {other:?}"),
    }
}

// -------------------------------------------------------------------- tests

pub async fn notifying_or_subscribing_to_an_unknown_agent_is_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let unknown = "6f1c1a0e-8a5b-4c1d-9e2f-3a4b5c6d7e8f";

    let status = client
        .notify_agent(notify_request(unknown, "hello"))
        .await
        .expect_err("notifying an unknown agent fails");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // The status may come as the call's answer or as the stream's first item.
    let status = match client
        .subscribe_notifications(pb::SubscribeNotificationsRequest {
            agent_id: unknown.to_string(),
            registration_token: "A".repeat(22),
            after_notification_id: String::new(),
        })
        .await
    {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            match tokio::time::timeout(WAIT, stream.message()).await {
                Ok(Err(status)) => status,
                other => panic!("subscribing to an unknown agent: {other:?}"),
            }
        }
    };
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

pub async fn notifications_are_numbered_per_agent_and_report_delivery(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let a = register(&mut client).await;
    let b = register(&mut client).await;

    for expected in ["1", "2", "3"] {
        let response = notify(&mut client, &a.agent_id, "for a").await;
        assert_eq!(response.notification_id, expected);
        assert!(!response.delivered, "no subscriber yet: {response:?}");
    }
    let response = notify(&mut client, &b.agent_id, "for b").await;
    assert_eq!(
        response.notification_id, "1",
        "each agent counts on its own"
    );
    assert!(!response.delivered);

    let mut stream = subscribe(&mut client, &a, "").await;
    for expected in ["1", "2", "3"] {
        let n = next_notification(&mut stream).await;
        assert_eq!(n.notification_id, expected);
        assert_eq!(n.agent_id, a.agent_id);
        assert_eq!(
            n.notification_type, "INFO",
            "empty notification_type means INFO"
        );
        assert_eq!(n.message, "for a");
        assert!(n.timestamp > 0);
    }

    // Live now: the subscriber received the backlog.
    let response = client
        .notify_agent(pb::NotifyAgentRequest {
            agent_id: a.agent_id.clone(),
            notification_type: "ALERT".into(),
            message: "live".into(),
            metadata: [("k".to_string(), "v".to_string())].into_iter().collect(),
        })
        .await
        .expect("notify")
        .into_inner();
    assert!(response.success);
    assert_eq!(response.notification_id, "4");
    assert!(
        response.delivered,
        "a live subscriber received it: {response:?}"
    );
    let n = next_notification(&mut stream).await;
    assert_eq!(n.notification_id, "4");
    assert_eq!(n.notification_type, "ALERT");
    assert_eq!(n.message, "live");
    assert_eq!(n.metadata.get("k").map(String::as_str), Some("v"));

    // b has no subscriber: still not delivered.
    let response = notify(&mut client, &b.agent_id, "for b").await;
    assert_eq!(response.notification_id, "2");
    assert!(!response.delivered);
    drop(stream);
}

pub async fn subscribing_after_105_notifications_replays_the_last_100_then_live(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let a = register(&mut client).await;
    notify_many(&mut client, &a.agent_id, 105).await;

    let mut stream = subscribe(&mut client, &a, "").await;
    let ids = next_ids(&mut stream, 100).await;
    assert_eq!(
        ids,
        (6..=105).collect::<Vec<u64>>(),
        "the backlog is the last 100"
    );
    expect_quiet(&mut stream, Duration::from_millis(300)).await;

    let response = notify(&mut client, &a.agent_id, "live").await;
    assert_eq!(response.notification_id, "106");
    assert!(response.delivered);
    let n = next_notification(&mut stream).await;
    assert_eq!(
        (n.notification_id.as_str(), n.message.as_str()),
        ("106", "live")
    );
}

pub async fn resuming_after_a_notification_id_replays_only_later_ones(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let a = register(&mut client).await;
    notify_many(&mut client, &a.agent_id, 105).await;

    let mut resumed = subscribe(&mut client, &a, "100").await;
    assert_eq!(
        next_ids(&mut resumed, 5).await,
        vec![101, 102, 103, 104, 105]
    );
    let n = {
        let response = notify(&mut client, &a.agent_id, "live").await;
        assert_eq!(response.notification_id, "106");
        assert!(response.delivered);
        next_notification(&mut resumed).await
    };
    assert_eq!(n.notification_id, "106", "live after the resumed backlog");

    // Older than the backlog (1..=5 were dropped): the whole backlog.
    let mut old = subscribe(&mut client, &a, "2").await;
    assert_eq!(
        next_ids(&mut old, 100).await,
        (7..=106).collect::<Vec<u64>>()
    );

    // Up to date: nothing until the next one.
    let mut current = subscribe(&mut client, &a, "106").await;
    expect_quiet(&mut current, Duration::from_millis(300)).await;
    notify(&mut client, &a.agent_id, "next").await;
    assert_eq!(next_ids(&mut current, 1).await, vec![107]);
    assert_eq!(next_ids(&mut old, 1).await, vec![107]);
    assert_eq!(next_ids(&mut resumed, 1).await, vec![107]);
}

pub async fn a_live_notification_reaches_an_open_subscription(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let a = register(&mut client).await;

    let mut stream = subscribe(&mut client, &a, "").await;
    // No backlog: the notification arrives whether or not the subscription
    // was already live when it was sent, and nothing else comes first.
    let response = notify(&mut client, &a.agent_id, "hello").await;
    assert_eq!(response.notification_id, "1");
    let n = next_notification(&mut stream).await;
    assert_eq!(
        (n.notification_id.as_str(), n.message.as_str()),
        ("1", "hello")
    );
    for i in 2..=5 {
        let response = notify(&mut client, &a.agent_id, "more").await;
        assert!(response.delivered, "subscriber is live: {response:?}");
        assert_eq!(next_ids(&mut stream, 1).await, vec![i]);
    }
}

pub async fn notifications_sent_while_subscribing_arrive_once_each_in_order(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    for round in 0..10 {
        let a = register(&mut client).await;
        let mut sender_client = server.client().await;
        let agent_id = a.agent_id.clone();
        // The subscription starts after a different number of sends each
        // round, while the sender keeps going.
        let (started, go) = tokio::sync::oneshot::channel::<()>();
        let head_start = round * 3;
        let sender = tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut started = Some(started);
            for i in 0..30 {
                if i == head_start
                    && let Some(started) = started.take()
                {
                    let _ = started.send(());
                }
                let response = sender_client
                    .notify_agent(notify_request(&agent_id, &format!("n{i}")))
                    .await
                    .map(|r| r.into_inner());
                ids.push(response.map(|r| r.notification_id));
            }
            ids
        });
        tokio::time::timeout(WAIT, go)
            .await
            .expect("sender started in time")
            .expect("sender signals");
        let mut stream = subscribe(&mut client, &a, "").await;
        let got = next_ids(&mut stream, 30).await;
        assert_eq!(
            got,
            (1..=30).collect::<Vec<u64>>(),
            "round {round}: every notification once, in order"
        );
        let sent = sender.await.expect("sender task");
        for (i, id) in sent.into_iter().enumerate() {
            assert_eq!(id.expect("notify succeeds"), (i + 1).to_string());
        }
        expect_quiet(&mut stream, Duration::from_millis(200)).await;
    }
}

pub async fn two_subscribers_both_receive_each_notification(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let a = register(&mut client).await;
    notify(&mut client, &a.agent_id, "first").await;

    let mut other_client = server.client().await;
    let mut one = subscribe(&mut client, &a, "").await;
    let mut two = subscribe(&mut other_client, &a, "").await;
    assert_eq!(next_ids(&mut one, 1).await, vec![1]);
    assert_eq!(next_ids(&mut two, 1).await, vec![1]);

    for expected in 2..=4u64 {
        let response = notify(&mut client, &a.agent_id, "both").await;
        assert!(response.delivered);
        assert_eq!(next_ids(&mut one, 1).await, vec![expected]);
        assert_eq!(next_ids(&mut two, 1).await, vec![expected]);
    }
    // One leaves; the other still receives.
    drop(one);
    let response = notify(&mut client, &a.agent_id, "one left").await;
    assert!(response.delivered);
    assert_eq!(next_ids(&mut two, 1).await, vec![5]);
}

pub async fn a_subscription_ends_with_not_found_when_its_agent_is_deregistered(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let a = register(&mut client).await;
    notify(&mut client, &a.agent_id, "sync").await;
    let mut stream = subscribe(&mut client, &a, "").await;
    assert_eq!(next_ids(&mut stream, 1).await, vec![1]);

    let ok = client
        .deregister(pb::DeregisterRequest {
            agent_id: a.agent_id.clone(),
            registration_token: a.registration_token.clone(),
        })
        .await
        .expect("deregister")
        .into_inner()
        .success;
    assert!(ok);
    match tokio::time::timeout(WAIT, stream.message()).await {
        Err(_) => panic!("subscription still open {WAIT:?} after deregister"),
        Ok(Err(status)) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
        Ok(other) => panic!("expected NOT_FOUND, got {other:?}"),
    }
}

pub async fn deregistering_drops_the_pending_notifications(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let a = register(&mut client).await;
    notify_many(&mut client, &a.agent_id, 3).await;

    let ok = client
        .deregister(pb::DeregisterRequest {
            agent_id: a.agent_id.clone(),
            registration_token: a.registration_token.clone(),
        })
        .await
        .expect("deregister")
        .into_inner()
        .success;
    assert!(ok);
    let status = client
        .notify_agent(notify_request(&a.agent_id, "too late"))
        .await
        .expect_err("a removed agent cannot be notified");
    assert_eq!(status.code(), Code::NotFound);

    // Back under the same id (a restart): the old backlog is gone.
    let mut request = register_request(&["notified"]);
    request.agent_id = a.agent_id.clone();
    request.registration_token = a.registration_token.clone();
    let again = client
        .register(request)
        .await
        .expect("re-register under the old id")
        .into_inner();
    assert_eq!(again.agent_id, a.agent_id);

    let mut stream = subscribe(&mut client, &again, "").await;
    notify(&mut client, &a.agent_id, "fresh").await;
    let n = next_notification(&mut stream).await;
    assert_eq!(
        n.message, "fresh",
        "the backlog from before deregistration was dropped: {n:?}"
    );
    expect_quiet(&mut stream, Duration::from_millis(200)).await;
}

behaviour_tests! {
    notifying_or_subscribing_to_an_unknown_agent_is_not_found,
    notifications_are_numbered_per_agent_and_report_delivery,
    subscribing_after_105_notifications_replays_the_last_100_then_live,
    resuming_after_a_notification_id_replays_only_later_ones,
    a_live_notification_reaches_an_open_subscription,
    notifications_sent_while_subscribing_arrive_once_each_in_order,
    two_subscribers_both_receive_each_notification,
    a_subscription_ends_with_not_found_when_its_agent_is_deregistered,
    deregistering_drops_the_pending_notifications,
}
