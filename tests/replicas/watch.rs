//! Watches across replicas: the same events in the same order, one transition
//! per racing reaper, delivery within 100 ms, and resuming on another replica.

use crate::common::{calls::*, *};

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use agent_registry::pb::{self, agent_change_event::EventType};
use tonic::Code;

use crate::{
    Collector, REPLICATION, assert_strictly_increasing, changes, deregister, get, heartbeat,
};

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
