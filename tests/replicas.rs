//! Several registry replicas on one Redis behave as one registry
//! (BEHAVIOUR.md §4–§5): writes on one replica are read on another within
//! 200 ms, watchers on different replicas see the same changes in the same
//! order, racing reapers produce one transition, notifications cross
//! replicas, acknowledged writes survive the death of the replica that took
//! them, a replica reads its own writes, and page tokens work across
//! replicas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{calls::*, *};

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agent_registry::pb::{self, agent_change_event::EventType};
use tonic::{Code, Streaming};

/// The contract's bound for a write to show on every replica.
const REPLICATION: Duration = Duration::from_millis(200);

// ------------------------------------------------------------------ helpers

async fn heartbeat(
    client: &mut Client,
    agent: &pb::RegisterResponse,
    telemetry: Option<pb::AgentTelemetry>,
) -> pb::HeartbeatResponse {
    let request = pb::HeartbeatRequest {
        agent_id: agent.agent_id.clone(),
        telemetry,
        registration_token: agent.registration_token.clone(),
    };
    tokio::time::timeout(CALL_WAIT, client.heartbeat(request))
        .await
        .expect("heartbeat answers in time")
        .expect("heartbeat succeeds")
        .into_inner()
}

async fn deregister(client: &mut Client, agent: &pb::RegisterResponse) {
    let request = pb::DeregisterRequest {
        agent_id: agent.agent_id.clone(),
        registration_token: agent.registration_token.clone(),
    };
    let success = tokio::time::timeout(CALL_WAIT, client.deregister(request))
        .await
        .expect("deregister answers in time")
        .expect("deregister succeeds")
        .into_inner()
        .success;
    assert!(success, "deregistering {} answers success", agent.agent_id);
}

async fn get(client: &mut Client, id: &str) -> Result<pb::AgentInfo, tonic::Status> {
    let request = pb::GetAgentRequest {
        agent_id: id.to_string(),
    };
    tokio::time::timeout(CALL_WAIT, client.get_agent(request))
        .await
        .expect("get_agent answers in time")
        .map(|r| r.into_inner().agent.expect("GetAgent carries the agent"))
}

async fn list_all(client: &mut Client) -> Vec<pb::AgentInfo> {
    tokio::time::timeout(
        CALL_WAIT,
        client.list_agents(pb::ListAgentsRequest::default()),
    )
    .await
    .expect("list_agents answers in time")
    .expect("list_agents succeeds")
    .into_inner()
    .agents
}

/// Collects a stream's messages in a background task, with the time each
/// arrived and how the stream ended.
struct Collector<T> {
    items: Arc<Mutex<Vec<(Instant, T)>>>,
    end: Arc<Mutex<Option<Result<(), tonic::Status>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Clone + Send + 'static> Collector<T> {
    fn spawn(mut stream: Streaming<T>) -> Self {
        let items = Arc::new(Mutex::new(Vec::new()));
        let end = Arc::new(Mutex::new(None));
        let (items2, end2) = (items.clone(), end.clone());
        let task = tokio::spawn(async move {
            // Bounded: a stream in these tests carries far fewer messages.
            for _ in 0..1_000_000 {
                match stream.message().await {
                    Ok(Some(item)) => items2.lock().unwrap().push((Instant::now(), item)),
                    Ok(None) => {
                        *end2.lock().unwrap() = Some(Ok(()));
                        return;
                    }
                    Err(status) => {
                        *end2.lock().unwrap() = Some(Err(status));
                        return;
                    }
                }
            }
        });
        Self { items, end, task }
    }

    fn items(&self) -> Vec<T> {
        self.items
            .lock()
            .unwrap()
            .iter()
            .map(|(_, i)| i.clone())
            .collect()
    }

    fn timed(&self) -> Vec<(Instant, T)> {
        self.items.lock().unwrap().clone()
    }

    fn ended(&self) -> Option<Result<(), tonic::Status>> {
        self.end.lock().unwrap().clone()
    }
}

impl<T> Drop for Collector<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// (event type, agent id, revision) of every change event.
fn changes(events: &[pb::AgentChangeEvent]) -> Vec<(EventType, String, u64)> {
    events
        .iter()
        .map(|e| (kind(e), id_of(e), e.revision))
        .collect()
}

fn assert_strictly_increasing(events: &[(EventType, String, u64)], who: &str) {
    for pair in events.windows(2) {
        assert!(
            pair[1].2 > pair[0].2,
            "{who}: revisions strictly increase: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

// -------------------------------------------------------------------- tests

/// A register, a heartbeat with new telemetry and a deregister taken by one
/// replica show on another within 200 ms, in every direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_replica_is_readable_on_another_within_200ms() {
    let redis = RedisProcess::start().await;
    let a = TestServer::replica(&redis, &[]).await;
    let b = ReplicaProcess::start(&redis, &[]).await;
    let c = TestServer::replica(&redis, &[]).await;
    let clients = [a.client().await, b.client().await, c.client().await];
    let names = ["A (in-process)", "B (process)", "C (in-process)"];
    // Warm every connection up so the first measurement is not a connect.
    for client in &clients {
        list_all(&mut client.clone()).await;
    }

    let mut worst = Duration::ZERO;
    for round in 0..6 {
        let (w, r) = (round % 3, (round + 1 + round / 3) % 3);
        let mut writer = clients[w].clone();
        let reader = clients[r].clone();
        let what = format!("{} -> {}", names[w], names[r]);
        let capability = format!("replicated-{round}");

        // Register.
        let agent = register(&mut writer, register_request(&[&capability])).await;
        let acked = Instant::now();
        wait_until(
            REPLICATION,
            &format!("{what}: registered agent readable"),
            || {
                let (mut reader, id, capability) =
                    (reader.clone(), agent.agent_id.clone(), capability.clone());
                async move {
                    get(&mut reader, &id)
                        .await
                        .is_ok_and(|a| a.capabilities == vec![capability])
                }
            },
        )
        .await;
        worst = worst.max(acked.elapsed());

        // Heartbeat with telemetry that makes it UNHEALTHY.
        let beat = heartbeat(&mut writer, &agent, Some(telemetry(0.2, 10 + round as i64))).await;
        assert_eq!(beat.status, pb::AgentStatus::Unhealthy as i32, "{what}");
        let acked = Instant::now();
        wait_until(
            REPLICATION,
            &format!("{what}: new telemetry readable"),
            || {
                let (mut reader, id) = (reader.clone(), agent.agent_id.clone());
                async move {
                    get(&mut reader, &id).await.is_ok_and(|a| {
                        a.status == pb::AgentStatus::Unhealthy as i32
                            && a.telemetry.is_some_and(|t| {
                                t.total_executions == 10 + round as i64 && t.success_rate == 0.2
                            })
                    })
                }
            },
        )
        .await;
        worst = worst.max(acked.elapsed());

        // Deregister.
        deregister(&mut writer, &agent).await;
        let acked = Instant::now();
        wait_until(
            REPLICATION,
            &format!("{what}: deregistration readable"),
            || {
                let (mut reader, id) = (reader.clone(), agent.agent_id.clone());
                async move {
                    matches!(get(&mut reader, &id).await, Err(s) if s.code() == Code::NotFound)
                }
            },
        )
        .await;
        worst = worst.max(acked.elapsed());
    }
    eprintln!("slowest replication observed: {worst:?}");
}

/// Watchers on two replicas see the same change events, in the same
/// revision order, while writes go alternately (and concurrently) through
/// both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_on_two_replicas_see_the_same_events_in_the_same_order() {
    let redis = RedisProcess::start().await;
    let a = TestServer::replica(&redis, &[]).await;
    let b = ReplicaProcess::start(&redis, &[]).await;
    let mut ca = a.client().await;
    let mut cb = b.client().await;

    // One agent before the watches: it must be in both snapshots.
    let early = register(&mut ca, register_request(&["early"])).await;
    wait_until(REPLICATION * 5, "B sees the early agent", || {
        let (mut cb, id) = (cb.clone(), early.agent_id.clone());
        async move { get(&mut cb, &id).await.is_ok() }
    })
    .await;

    let (stream_a, snapshot_a) = watch_synced(&mut ca).await;
    let (stream_b, snapshot_b) = watch_synced(&mut cb).await;
    for (name, snapshot) in [("A", &snapshot_a), ("B", &snapshot_b)] {
        let ids: Vec<String> = snapshot.iter().map(id_of).collect();
        assert_eq!(ids, vec![early.agent_id.clone()], "{name}'s snapshot");
    }
    let watch_a = Collector::spawn(stream_a);
    let watch_b = Collector::spawn(stream_b);

    let mut expected = 0usize;
    let mut agents = Vec::new();
    // Alternating registrations.
    for i in 0..8 {
        let via = if i % 2 == 0 { &mut ca } else { &mut cb };
        agents.push(register(via, register_request(&["watched", &format!("w{i}")])).await);
        expected += 1; // REGISTERED
    }
    // Telemetry through the other replica: UPDATED (still HEALTHY).
    for (i, agent) in agents.iter().enumerate() {
        let via = if i % 2 == 0 { &mut cb } else { &mut ca };
        let beat = heartbeat(via, agent, Some(telemetry(0.9, 10))).await;
        assert_eq!(beat.status, pb::AgentStatus::Healthy as i32);
        expected += 1; // UPDATED
    }
    // Keep-alives: no events.
    for (i, agent) in agents.iter().enumerate() {
        let via = if i % 2 == 0 { &mut ca } else { &mut cb };
        heartbeat(via, agent, None).await;
    }
    // Bad telemetry on every other agent: UPDATED + STATUS_CHANGED.
    for (i, agent) in agents.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let via = if i % 4 == 0 { &mut ca } else { &mut cb };
        let beat = heartbeat(via, agent, Some(telemetry(0.1, 20))).await;
        assert_eq!(beat.status, pb::AgentStatus::Unhealthy as i32);
        expected += 2;
    }
    // Re-register one in place (UPDATED) through the replica that did not
    // create it.
    let mut again = register_request(&["watched", "w1", "again"]);
    again.agent_id = agents[1].agent_id.clone();
    again.registration_token = agents[1].registration_token.clone();
    let replaced = register(&mut ca, again).await;
    assert_eq!(replaced.agent_id, agents[1].agent_id);
    expected += 1;
    // Deregister some, alternately.
    for (i, agent) in agents.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        let via = if i % 2 == 0 { &mut cb } else { &mut ca };
        deregister(via, agent).await;
        expected += 1;
    }
    deregister(&mut cb, &early).await;
    expected += 1;
    // Concurrent registrations through both replicas at once.
    let mut tasks = Vec::new();
    for (t, client) in [ca.clone(), cb.clone(), ca.clone(), cb.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            for i in 0..6 {
                let r = register(&mut client, register_request(&[&format!("c{t}-{i}")])).await;
                heartbeat(&mut client, &r, Some(telemetry(0.4, 5))).await; // UPDATED+STATUS
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    expected += 4 * 6 * 3;

    for (name, watch) in [("A", &watch_a), ("B", &watch_b)] {
        wait_until(
            Duration::from_secs(5),
            &format!("watcher on {name} got {expected} events"),
            || {
                let n = watch.items().len();
                async move { n >= expected }
            },
        )
        .await;
    }
    // Nothing more arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seq_a = changes(&watch_a.items());
    let seq_b = changes(&watch_b.items());
    assert_eq!(seq_a.len(), expected, "A's events: {seq_a:#?}");
    assert_eq!(seq_b.len(), expected, "B's events: {seq_b:#?}");
    assert_strictly_increasing(&seq_a, "A");
    assert_strictly_increasing(&seq_b, "B");
    assert_eq!(seq_a, seq_b, "both watchers see the same sequence");
    assert!(watch_a.ended().is_none() && watch_b.ended().is_none());

    // The per-agent story is right too.
    let mut per_agent: HashMap<String, Vec<EventType>> = HashMap::new();
    for (k, id, _) in &seq_a {
        per_agent.entry(id.clone()).or_default().push(*k);
    }
    use EventType::*;
    assert_eq!(per_agent[&early.agent_id], vec![Deregistered]);
    assert_eq!(
        per_agent[&agents[0].agent_id],
        vec![Registered, Updated, Updated, StatusChanged, Deregistered]
    );
    assert_eq!(
        per_agent[&agents[1].agent_id],
        vec![Registered, Updated, Updated]
    );
    assert_eq!(
        per_agent[&agents[2].agent_id],
        vec![Registered, Updated, Updated, StatusChanged]
    );
    assert_eq!(
        per_agent[&agents[3].agent_id],
        vec![Registered, Updated, Deregistered]
    );
}

/// An agent that never heartbeats, with three replicas' reapers racing:
/// every watcher sees one STATUS_CHANGED and one EXPIRED for it, on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_reapers_produce_exactly_one_transition_each() {
    let redis = RedisProcess::start().await;
    let a = TestServer::replica(&redis, &[]).await;
    let b = ReplicaProcess::start(&redis, &[]).await;
    let c = TestServer::replica(&redis, &[]).await;
    let mut clients = [a.client().await, b.client().await, c.client().await];
    let mut watchers = Vec::new();
    for client in clients.iter_mut() {
        let (stream, snapshot) = watch_synced(client).await;
        assert!(snapshot.is_empty());
        watchers.push(Collector::spawn(stream));
    }

    // Five agents with ttl 1 s, registered through different replicas.
    let mut agents = Vec::new();
    for i in 0..5 {
        let before = Instant::now();
        let r = register(
            &mut clients[i % 3],
            with_ttl(register_request(&["mortal"]), 1),
        )
        .await;
        assert_eq!(r.ttl_seconds, 1);
        agents.push((r, before, Instant::now()));
    }

    let ids: Vec<String> = agents.iter().map(|(r, _, _)| r.agent_id.clone()).collect();
    for (w, watch) in watchers.iter().enumerate() {
        wait_until(
            Duration::from_secs(6),
            &format!("watcher {w} saw every agent expire"),
            || {
                let expired: HashSet<String> = watch
                    .items()
                    .iter()
                    .filter(|e| kind(e) == EventType::Expired)
                    .map(id_of)
                    .collect();
                let done = ids.iter().all(|id| expired.contains(id));
                async move { done }
            },
        )
        .await;
    }
    // Then nothing else for a while.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    for (w, watch) in watchers.iter().enumerate() {
        let events = watch.timed();
        assert_eq!(
            events.len(),
            agents.len() * 3,
            "watcher {w}: REGISTERED, STATUS_CHANGED, EXPIRED per agent, nothing else: {:#?}",
            events
                .iter()
                .map(|(_, e)| (kind(e), id_of(e), e.revision))
                .collect::<Vec<_>>()
        );
        let seq: Vec<_> = events
            .iter()
            .map(|(_, e)| (kind(e), id_of(e), e.revision))
            .collect();
        assert_strictly_increasing(&seq, &format!("watcher {w}"));
        for (agent, before, acked) in &agents {
            let mine: Vec<&(Instant, pb::AgentChangeEvent)> = events
                .iter()
                .filter(|(_, e)| id_of(e) == agent.agent_id)
                .collect();
            let kinds: Vec<EventType> = mine.iter().map(|(_, e)| kind(e)).collect();
            assert_eq!(
                kinds,
                vec![
                    EventType::Registered,
                    EventType::StatusChanged,
                    EventType::Expired
                ],
                "watcher {w}, agent {}",
                agent.agent_id
            );
            let (unhealthy_at, change) = mine[1];
            assert_eq!(
                change.agent.as_ref().unwrap().status,
                pb::AgentStatus::Unhealthy as i32
            );
            assert_eq!(change.previous_status, pb::AgentStatus::Healthy as i32);
            // Never early, at most 1 s late (+100 ms delivery).
            let early = unhealthy_at.duration_since(*before);
            let late = unhealthy_at.duration_since(*acked);
            assert!(
                early >= Duration::from_millis(1000),
                "UNHEALTHY after {early:?}, before the 1 s TTL"
            );
            assert!(
                late <= Duration::from_millis(2100),
                "UNHEALTHY {late:?} after the register (ttl 1 s)"
            );
            let (expired_at, _) = mine[2];
            let early = expired_at.duration_since(*before);
            let late = expired_at.duration_since(*acked);
            assert!(
                early >= Duration::from_millis(2000),
                "EXPIRED after {early:?}, before ttl + grace"
            );
            assert!(
                late <= Duration::from_millis(3100),
                "EXPIRED {late:?} after the register (ttl 1 s + grace 1 s)"
            );
        }
    }
    for client in clients.iter_mut() {
        for id in &ids {
            let status = get(client, id).await.expect_err("expired agents are gone");
            assert_eq!(status.code(), Code::NotFound);
        }
    }
}

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

/// SIGKILLing the replica that acknowledged writes loses none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_right_after_acknowledged_writes_loses_nothing() {
    let redis = RedisProcess::start().await;
    let mut a = ReplicaProcess::start(&redis, &[]).await;
    let b = TestServer::replica(&redis, &[]).await;
    let ca = a.client().await;
    let mut cb = b.client().await;

    // Four writers through A at once: register, telemetry, some deregister.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let mut client = ca.clone();
        tasks.push(tokio::spawn(async move {
            let mut live = Vec::new();
            let mut gone = Vec::new();
            for i in 0..15 {
                let r = register(&mut client, register_request(&[&format!("k{t}-{i}")])).await;
                heartbeat(&mut client, &r, Some(telemetry(0.75, 100 + i))).await;
                if i % 5 == 4 {
                    deregister(&mut client, &r).await;
                    gone.push(r.agent_id);
                } else {
                    live.push((r, 100 + i));
                }
            }
            (live, gone)
        }));
    }
    let mut live = Vec::new();
    let mut gone = Vec::new();
    for task in tasks {
        let (l, g) = task.await.unwrap();
        live.extend(l);
        gone.extend(g);
    }
    let mut ca = ca;
    let last = &live[live.len() - 1].0;
    let notified = tokio::time::timeout(
        CALL_WAIT,
        ca.notify_agent(pb::NotifyAgentRequest {
            agent_id: last.agent_id.clone(),
            message: "acked".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .expect("notify succeeds")
    .into_inner();
    assert!(notified.success);
    // Right after the last acknowledgement.
    a.kill();
    let killed = Instant::now();

    let expected: HashMap<String, i64> = live
        .iter()
        .map(|(r, total)| (r.agent_id.clone(), *total))
        .collect();
    let check = |client: Client| {
        let expected = expected.clone();
        async move {
            let mut client = client;
            let listed: HashMap<String, i64> = list_all(&mut client)
                .await
                .into_iter()
                .map(|a| (a.agent_id, a.telemetry.map_or(-1, |t| t.total_executions)))
                .collect();
            listed == expected
        }
    };
    wait_until(
        Duration::from_secs(1),
        "B lists every acknowledged agent, with its telemetry, and none deregistered",
        || check(cb.clone()),
    )
    .await;
    eprintln!("B converged {:?} after the kill", killed.elapsed());
    for id in &gone {
        let status = get(&mut cb, id).await.expect_err("deregistered stays gone");
        assert_eq!(status.code(), Code::NotFound);
    }
    for (r, total) in &live {
        let agent = get(&mut cb, &r.agent_id).await.expect("acknowledged agent");
        assert_eq!(agent.telemetry.unwrap().total_executions, *total);
        // The token recorded through A works on B.
        heartbeat(&mut cb, r, None).await;
    }
    // The acknowledged notification is in the backlog, seen from B.
    let mut backlog = tokio::time::timeout(
        CALL_WAIT,
        cb.subscribe_notifications(with_token(
            pb::SubscribeNotificationsRequest {
                agent_id: last.agent_id.clone(),
                ..Default::default()
            },
            &last.registration_token,
        )),
    )
    .await
    .unwrap()
    .expect("subscribe on B")
    .into_inner();
    let first = tokio::time::timeout(CALL_WAIT, backlog.message())
        .await
        .expect("backlog in time")
        .expect("stream healthy")
        .expect("one notification");
    assert_eq!(first.notification_id, notified.notification_id);
    assert_eq!(first.message, "acked");

    // A fresh replica, reading only Redis, agrees.
    let c = TestServer::replica(&redis, &[]).await;
    assert!(
        check(c.client().await).await,
        "a fresh replica sees the same agents"
    );
}

/// A replica answers its own writes at once: register, heartbeat and
/// deregister, each followed immediately by reads on the same replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reads_its_own_writes_on_the_same_replica() {
    let redis = RedisProcess::start().await;
    let a = TestServer::replica(&redis, &[]).await;
    let b = ReplicaProcess::start(&redis, &[]).await;
    let clients = [a.client().await, b.client().await];

    for i in 0..50 {
        let mut client = clients[i % 2].clone();
        let capability = format!("ryw-{i}");
        let mut request = register_request(&[&capability, "ryw"]);
        request.namespace = format!("ns-{i}");
        let r = register(&mut client, request).await;

        let agent = get(&mut client, &r.agent_id)
            .await
            .unwrap_or_else(|s| panic!("round {i}: own registration not readable: {s:?}"));
        assert_eq!(agent.capabilities, vec![capability.clone(), "ryw".into()]);
        let listed = client
            .list_agents(pb::ListAgentsRequest {
                filters: [("namespace".to_string(), format!("ns-{i}"))].into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .agents;
        assert_eq!(listed.len(), 1, "round {i}: own registration listed");
        let found = client
            .discover_agents(pb::DiscoverRequest {
                capabilities: vec![capability.clone()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .agents;
        assert_eq!(found.len(), 1, "round {i}: own registration discoverable");

        heartbeat(&mut client, &r, Some(telemetry(0.45, 1000 + i as i64))).await;
        let agent = get(&mut client, &r.agent_id).await.unwrap();
        assert_eq!(
            agent.telemetry.unwrap().total_executions,
            1000 + i as i64,
            "round {i}: own heartbeat readable"
        );
        assert_eq!(agent.status, pb::AgentStatus::Degraded as i32, "round {i}");

        if i % 5 == 0 {
            deregister(&mut client, &r).await;
            let status = get(&mut client, &r.agent_id)
                .await
                .expect_err("own deregistration readable");
            assert_eq!(status.code(), Code::NotFound, "round {i}");
        }
    }
}

/// Paging through ListAgents with every page on the other replica (tokens
/// cross replicas) visits each of 120 agents exactly once, while other
/// agents come and go during the walk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_alternately_on_two_replicas_visits_each_agent_once() {
    let redis = RedisProcess::start().await;
    let a = TestServer::replica(&redis, &[]).await;
    let b = ReplicaProcess::start(&redis, &[]).await;
    let clients = [a.client().await, b.client().await];

    let mut tasks = Vec::new();
    for t in 0..4 {
        let mut client = clients[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut stable = Vec::new();
            let mut churn = Vec::new();
            for i in 0..30 {
                stable.push(register(&mut client, register_request(&[&format!("p{t}-{i}")])).await);
                if i % 6 == 0 {
                    churn.push(register(&mut client, register_request(&["churn"])).await);
                }
            }
            (stable, churn)
        }));
    }
    let mut stable = Vec::new();
    let mut churn = Vec::new();
    for task in tasks {
        let (s, c) = task.await.unwrap();
        stable.extend(s);
        churn.extend(c);
    }
    assert_eq!(stable.len(), 120);
    let total = stable.len() + churn.len();
    for (n, client) in clients.iter().enumerate() {
        wait_until(
            Duration::from_secs(2),
            &format!("replica {n} lists all"),
            || {
                let mut client = client.clone();
                async move { list_all(&mut client).await.len() == total }
            },
        )
        .await;
    }

    let mut seen: Vec<pb::AgentInfo> = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    let mut churn_left = churn.into_iter();
    let mut writer = clients[0].clone();
    for page in 0..200 {
        let mut client = clients[page % 2].clone();
        let response = client
            .list_agents(pb::ListAgentsRequest {
                page_size: 7,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("page {page} on replica {}: {s:?}", page % 2))
            .into_inner();
        pages += 1;
        assert!(response.agents.len() <= 7);
        seen.extend(response.agents);
        token = response.next_page_token;
        if token.is_empty() {
            break;
        }
        // Churn during the walk: one leaves, one arrives.
        if let Some(leaving) = churn_left.next() {
            deregister(&mut writer, &leaving).await;
        }
        register(&mut writer, register_request(&["churn", "late"])).await;
    }
    assert!(token.is_empty(), "the walk ended within 200 pages");
    assert!(pages >= 120 / 7, "{pages} pages");

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for agent in &seen {
        *counts.entry(agent.agent_id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "agents visited twice: {twice:?}");
    for r in &stable {
        assert_eq!(
            counts.get(r.agent_id.as_str()),
            Some(&1),
            "agent {} existing throughout the walk is visited once",
            r.agent_id
        );
    }
    for pair in seen.windows(2) {
        let (x, y) = (&pair[0], &pair[1]);
        assert!(
            (x.registered_at, &x.agent_id) < (y.registered_at, &y.agent_id),
            "walk is ordered by (registered_at, agent_id): {} {} then {} {}",
            x.registered_at,
            x.agent_id,
            y.registered_at,
            y.agent_id
        );
    }
}

/// Change events reach watchers on every replica within 100 ms of the
/// write's acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_watchers_on_every_replica_within_100ms() {
    let redis = RedisProcess::start().await;
    let a = TestServer::replica(&redis, &[]).await;
    let b = ReplicaProcess::start(&redis, &[]).await;
    let mut clients = [a.client().await, b.client().await];
    let mut watchers = Vec::new();
    for client in clients.iter_mut() {
        let (stream, _) = watch_synced(client).await;
        watchers.push(Collector::spawn(stream));
    }

    let mut acks = Vec::new();
    for i in 0..20 {
        let r = register(&mut clients[i % 2], register_request(&["fast"])).await;
        acks.push((r.agent_id, Instant::now()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (w, watch) in watchers.iter().enumerate() {
        wait_until(
            Duration::from_secs(2),
            &format!("watcher {w} got all"),
            || {
                let n = watch.items().len();
                async move { n >= 20 }
            },
        )
        .await;
    }
    for (w, watch) in watchers.iter().enumerate() {
        let arrived: HashMap<String, Instant> = watch
            .timed()
            .into_iter()
            .map(|(at, e)| (id_of(&e), at))
            .collect();
        let mut worst = Duration::ZERO;
        for (id, acked) in &acks {
            let at = arrived[id];
            worst = worst.max(at.saturating_duration_since(*acked));
        }
        eprintln!("watcher {w}: slowest event {worst:?} after the acknowledgement");
        assert!(
            worst <= Duration::from_millis(100),
            "watcher {w}: an event arrived {worst:?} after its write was acknowledged"
        );
    }
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

/// Watch resume across replicas (BEHAVIOUR.md §11): the history is the
/// store's, so a watcher resumes on another replica, also after the replica
/// that took the writes stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_replica_after_the_writer_stopped() {
    let redis = RedisProcess::start().await;
    let a = TestServer::replica(&redis, &[]).await;
    let b = TestServer::replica(&redis, &[]).await;
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    register(&mut on_a, register_request(&["x"])).await;
    let (mut stream, _) = watch_synced(&mut on_a).await;
    let second = register(&mut on_a, register_request(&["x"])).await;
    let seen = stream.message().await.unwrap().unwrap();
    assert_eq!(seen.agent.as_ref().unwrap().agent_id, second.agent_id);
    // The watcher loses A; A takes more writes, then stops.
    drop(stream);
    let third = register(&mut on_a, register_request(&["x"])).await;
    let fourth = register(&mut on_a, register_request(&["x"])).await;
    a.stop().await;
    let mut resumed = on_b
        .watch_agents(pb::WatchAgentsRequest {
            start_revision: seen.revision,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    let mut last = seen.revision;
    for _ in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(5), resumed.message())
            .await
            .expect("replayed in time")
            .unwrap()
            .unwrap();
        assert_eq!(
            EventType::try_from(event.event_type),
            Ok(EventType::Registered)
        );
        assert!(event.revision > last);
        last = event.revision;
        ids.push(event.agent.unwrap().agent_id);
    }
    assert_eq!(ids, vec![third.agent_id, fourth.agent_id]);
    // Then live on B.
    let fifth = register(&mut on_b, register_request(&["x"])).await;
    let event = tokio::time::timeout(Duration::from_secs(5), resumed.message())
        .await
        .expect("live in time")
        .unwrap()
        .unwrap();
    assert_eq!(event.agent.unwrap().agent_id, fifth.agent_id);
}
