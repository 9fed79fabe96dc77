//! Notifications across replicas: sent via one, received on another, and a
//! subscriber resuming on another replica without gap or duplicate.

use crate::common::{calls::*, *};

use std::time::{Duration, Instant};

use agent_registry::pb::{self};

use crate::{Collector, REPLICATION, get};

/// A notification accepted by one replica reaches a subscriber connected to
/// another; `delivered` says whether any subscriber got it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_sent_via_one_replica_reaches_a_subscriber_on_another() {
    let redis = RedisProcess::start().await;
    let a = ReplicaProcess::start(&redis, &[]).await;
    let b = TestServer::replica(&redis, &[]).await;
    let mut ca = a.client().await;
    let mut cb = b.client().await;

    let agent = register(&mut ca, register_request(&["listener"])).await;
    let other = register(&mut cb, register_request(&["lonely"])).await;
    wait_until(REPLICATION * 5, "B sees the agent", || {
        let (mut cb, id) = (cb.clone(), agent.agent_id.clone());
        async move { get(&mut cb, &id).await.is_ok() }
    })
    .await;

    let notify = |client: &Client, id: &str, message: &str| {
        let mut client = client.clone();
        let request = pb::NotifyAgentRequest {
            agent_id: id.to_string(),
            notification_type: "TASK".into(),
            message: message.to_string(),
            metadata: [("k".to_string(), message.to_string())].into(),
        };
        async move {
            let response = tokio::time::timeout(CALL_WAIT, client.notify_agent(request))
                .await
                .expect("notify answers in time")
                .expect("notify succeeds")
                .into_inner();
            assert!(response.success, "{response:?}");
            response
        }
    };

    // Nobody listens anywhere.
    let first = notify(&ca, &agent.agent_id, "before").await;
    assert_eq!(first.notification_id, "1");
    assert!(!first.delivered, "no subscriber anywhere: {first:?}");
    let nobody = notify(&cb, &other.agent_id, "nobody").await;
    assert!(!nobody.delivered, "{nobody:?}");

    // Subscribe on B with the token in the request field.
    let stream = tokio::time::timeout(
        CALL_WAIT,
        cb.subscribe_notifications(pb::SubscribeNotificationsRequest {
            agent_id: agent.agent_id.clone(),
            registration_token: agent.registration_token.clone(),
            after_notification_id: String::new(),
        }),
    )
    .await
    .expect("subscribe answers in time")
    .expect("subscribe succeeds")
    .into_inner();
    let subscription = Collector::spawn(stream);
    // The backlog arrives first: the stream is live.
    wait_until(Duration::from_secs(2), "backlog replayed on B", || {
        let n = subscription.items().len();
        async move { n >= 1 }
    })
    .await;

    // Through A, live, to B's subscriber.
    let sent = Instant::now();
    let live = notify(&ca, &agent.agent_id, "live via A").await;
    assert_eq!(live.notification_id, "2");
    assert!(live.delivered, "a subscriber on B is connected: {live:?}");
    wait_until(Duration::from_secs(1), "B's subscriber got it", || {
        let n = subscription.items().len();
        async move { n >= 2 }
    })
    .await;
    eprintln!("cross-replica notification took {:?}", sent.elapsed());
    // Through B itself.
    let local = notify(&cb, &agent.agent_id, "via B").await;
    assert!(local.delivered, "{local:?}");
    wait_until(
        Duration::from_secs(1),
        "B's subscriber got the third",
        || {
            let n = subscription.items().len();
            async move { n >= 3 }
        },
    )
    .await;
    // The other agent still has nobody.
    let nobody = notify(&ca, &other.agent_id, "still nobody").await;
    assert!(!nobody.delivered, "{nobody:?}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let got: Vec<(String, String)> = subscription
        .items()
        .into_iter()
        .map(|n| {
            assert_eq!(n.agent_id, agent.agent_id);
            assert_eq!(n.notification_type, "TASK");
            assert_eq!(n.metadata.get("k"), Some(&n.message));
            (n.notification_id, n.message)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("1".to_string(), "before".to_string()),
            ("2".to_string(), "live via A".to_string()),
            ("3".to_string(), "via B".to_string()),
        ],
        "backlog then live, no gap, no duplicate"
    );

    // Once the subscriber is gone, nobody receives it again.
    drop(subscription);
    wait_until(
        Duration::from_secs(3),
        "delivered false after unsubscribe",
        || {
            let notify = notify(&ca, &agent.agent_id, "after");
            async move { !notify.await.delivered }
        },
    )
    .await;
}

/// A subscriber whose replica dies resumes on another replica with
/// `after_notification_id`: nothing sent meanwhile is lost, nothing is
/// delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_on_another_replica_without_gap_or_duplicate() {
    let redis = RedisProcess::start().await;
    let mut a = ReplicaProcess::start(&redis, &[]).await;
    let b = TestServer::replica(&redis, &[]).await;
    let mut ca = a.client().await;
    let mut cb = b.client().await;
    let agent = register(&mut ca, register_request(&["resumer"])).await;

    let notify = |client: &Client, message: String| {
        let mut client = client.clone();
        let request = pb::NotifyAgentRequest {
            agent_id: agent.agent_id.clone(),
            message,
            ..Default::default()
        };
        async move {
            tokio::time::timeout(CALL_WAIT, client.notify_agent(request))
                .await
                .expect("notify answers in time")
                .expect("notify succeeds")
                .into_inner()
        }
    };

    let stream = ca
        .subscribe_notifications(with_token(
            pb::SubscribeNotificationsRequest {
                agent_id: agent.agent_id.clone(),
                ..Default::default()
            },
            &agent.registration_token,
        ))
        .await
        .expect("subscribe on A")
        .into_inner();
    let on_a = Collector::spawn(stream);
    for i in 1..=3 {
        let sent = notify(&cb, format!("m{i}")).await;
        assert!(sent.delivered, "the subscriber on A is live: {sent:?}");
    }
    wait_until(Duration::from_secs(1), "A's subscriber got 3", || {
        let n = on_a.items().len();
        async move { n >= 3 }
    })
    .await;
    let last_seen = on_a.items().last().unwrap().notification_id.clone();
    assert_eq!(last_seen, "3");

    a.kill();
    wait_until(Duration::from_secs(2), "A's stream ends", || {
        let ended = on_a.ended().is_some();
        async move { ended }
    })
    .await;
    // Sent while the agent has no subscriber anywhere.
    for i in 4..=5 {
        let sent = notify(&cb, format!("m{i}")).await;
        assert!(!sent.delivered, "nobody listens now: {sent:?}");
    }

    let stream = cb
        .subscribe_notifications(with_token(
            pb::SubscribeNotificationsRequest {
                agent_id: agent.agent_id.clone(),
                after_notification_id: last_seen,
                ..Default::default()
            },
            &agent.registration_token,
        ))
        .await
        .expect("resume on B")
        .into_inner();
    let on_b = Collector::spawn(stream);
    wait_until(Duration::from_secs(1), "B replays the backlog", || {
        let n = on_b.items().len();
        async move { n >= 2 }
    })
    .await;
    for i in 6..=7 {
        let sent = notify(&cb, format!("m{i}")).await;
        assert!(sent.delivered, "{sent:?}");
    }
    wait_until(Duration::from_secs(1), "B streams live ones", || {
        let n = on_b.items().len();
        async move { n >= 4 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got: Vec<(String, String)> = on_b
        .items()
        .into_iter()
        .map(|n| (n.notification_id, n.message))
        .collect();
    let want: Vec<(String, String)> = (4..=7).map(|i| (i.to_string(), format!("m{i}"))).collect();
    assert_eq!(got, want, "resumed after 3: no gap, no duplicate");
}
