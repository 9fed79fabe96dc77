//! Outage fencing: agents that keep heartbeating through an outage of Redis
//! or of every replica neither turn UNHEALTHY nor expire.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use agent_registry::pb::{self, agent_change_event::EventType};

use crate::{
    common::{calls::*, *},
    support::*,
};

/// Heartbeats every agent (no telemetry) about every second through the
/// given clients in turn, ignoring errors, until `stop` (at most `rounds`).
/// Counts successful heartbeats.
async fn heartbeater(
    clients: Vec<Client>,
    agents: Vec<pb::RegisterResponse>,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    rounds: usize,
) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for round in 0..rounds {
        interval.tick().await;
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let beats = agents.iter().enumerate().map(|(i, agent)| {
            let mut client = clients[(round + i) % clients.len()].clone();
            let request = heartbeat_request(agent, None);
            let ok = ok.clone();
            async move {
                let result =
                    tokio::time::timeout(Duration::from_millis(900), client.heartbeat(request))
                        .await;
                if matches!(result, Ok(Ok(_))) {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        futures_join_all(beats).await;
    }
}

/// Runs futures concurrently (no `futures` crate among the dependencies).
async fn futures_join_all<F: Future<Output = ()> + Send + 'static>(
    futures: impl IntoIterator<Item = F>,
) {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for handle in handles {
        handle.await.unwrap();
    }
}

/// After an outage: a watcher opened now (with snapshot) sees every agent
/// HEALTHY, heartbeats go on for `keep` and the watcher sees no liveness
/// transition of them; List and Get agree they are all HEALTHY.
async fn assert_all_survived(client: &mut Client, agents: &[pb::RegisterResponse], keep: Duration) {
    let mine: HashSet<String> = agents.iter().map(|a| a.agent_id.clone()).collect();
    let (stream, snapshot) = watch_synced(client).await;
    let watch = Collector::spawn(stream);
    let snap: HashMap<String, i32> = snapshot
        .iter()
        .map(|e| (id_of(e), e.agent.as_ref().unwrap().status))
        .collect();
    for agent in agents {
        assert_eq!(
            snap.get(&agent.agent_id),
            Some(&(pb::AgentStatus::Healthy as i32)),
            "snapshot after recovery shows {} HEALTHY (snapshot: {snap:?})",
            agent.agent_id
        );
    }

    tokio::time::sleep(keep).await;

    let transitions: Vec<(EventType, String)> = watch
        .events()
        .iter()
        .filter(|e| mine.contains(&id_of(e)))
        .filter(|e| matches!(kind(e), EventType::StatusChanged | EventType::Expired))
        .map(|e| (kind(e), id_of(e)))
        .collect();
    assert!(
        transitions.is_empty(),
        "no liveness transition after the outage, got {transitions:?}"
    );
    assert!(
        watch.ended().is_none(),
        "watch stays open: {:?}",
        watch.ended()
    );

    let listed: HashMap<String, i32> = list(client)
        .await
        .into_inner()
        .agents
        .into_iter()
        .map(|a| (a.agent_id, a.status))
        .collect();
    for agent in agents {
        assert_eq!(
            listed.get(&agent.agent_id),
            Some(&(pb::AgentStatus::Healthy as i32)),
            "ListAgents shows {} HEALTHY",
            agent.agent_id
        );
        let got = client
            .get_agent(get_request(&agent.agent_id))
            .await
            .unwrap_or_else(|s| panic!("GetAgent {}: {s:?}", agent.agent_id))
            .into_inner()
            .agent
            .unwrap();
        assert_eq!(
            got.status,
            pb::AgentStatus::Healthy as i32,
            "GetAgent {}",
            agent.agent_id
        );
    }
}

/// Agents heartbeating through a 10 s Redis outage (Redis restarted from
/// its saved data) neither turn UNHEALTHY nor expire: deadlines move back
/// by the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_does_not_expire_heartbeating_agents() {
    let mut redis = RedisProcess::start().await;
    let server = TestServer::replica(&redis, &[]).await;
    let mut client = server.client().await;

    let mut agents = Vec::new();
    for i in 0..10 {
        let r = register(
            &mut client,
            with_ttl(register_request(&["fenced", &format!("f{i}")]), 3),
        )
        .await;
        assert_eq!(r.ttl_seconds, 3);
        agents.push(r);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let beats = tokio::spawn(heartbeater(
        vec![client.clone()],
        agents.clone(),
        stop.clone(),
        ok.clone(),
        40,
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        ok.load(Ordering::SeqCst) >= 10,
        "heartbeats work before the outage"
    );

    let mut conn = redis.connection().await;
    let _: redis::Value = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    drop(conn);
    redis.kill();
    let before_outage = ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        ok.load(Ordering::SeqCst),
        before_outage,
        "no heartbeat can succeed while Redis is down"
    );
    redis.restart().await;

    let restarted = Instant::now();
    wait_until(RECOVERY, "a heartbeat succeeds again", || {
        let mut client = client.clone();
        let request = heartbeat_request(&agents[0], None);
        async move { client.heartbeat(request).await.is_ok() }
    })
    .await;
    let writable = restarted.elapsed();
    wait_until(
        RECOVERY.saturating_sub(restarted.elapsed()),
        "reads are fresh and watches open again",
        || {
            let mut client = client.clone();
            async move {
                let fresh = !is_stale(&list(&mut client).await);
                let watch = client
                    .watch_agents(pb::WatchAgentsRequest::default())
                    .await
                    .is_ok();
                fresh && watch
            }
        },
    )
    .await;
    eprintln!(
        "writes ok {writable:?}, reads/watches ok {:?} after the restart",
        restarted.elapsed()
    );
    assert_all_survived(&mut client, &agents, Duration::from_secs(4)).await;

    stop.store(true, Ordering::SeqCst);
    beats.await.unwrap();
}

/// Agents heartbeating while every registry replica is down for 10 s
/// (Redis keeps running) neither turn UNHEALTHY nor expire when the
/// replicas come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_every_replica_does_not_expire_heartbeating_agents() {
    let redis = RedisProcess::start().await;
    let mut r1 = ReplicaProcess::start(&redis, &[]).await;
    let mut r2 = ReplicaProcess::start(&redis, &[]).await;
    let clients = vec![r1.client().await, r2.client().await];

    let mut agents = Vec::new();
    for i in 0..10 {
        let r = register(
            &mut clients[i % 2].clone(),
            with_ttl(register_request(&["fenced", &format!("f{i}")]), 3),
        )
        .await;
        agents.push(r);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let beats = tokio::spawn(heartbeater(
        clients.clone(),
        agents.clone(),
        stop.clone(),
        ok.clone(),
        40,
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        ok.load(Ordering::SeqCst) >= 10,
        "heartbeats work before the outage"
    );

    r1.kill();
    r2.kill();
    let before_outage = ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        ok.load(Ordering::SeqCst),
        before_outage,
        "no heartbeat can succeed while no replica runs"
    );
    r1.start_again().await;
    let mut client = r1.client().await;
    // Open the watcher right after the restart, before the other replica.
    let mine: HashSet<String> = agents.iter().map(|a| a.agent_id.clone()).collect();
    let (stream, snapshot) = watch_synced(&mut client).await;
    let early_watch = Collector::spawn(stream);
    let unhealthy: Vec<String> = snapshot
        .iter()
        .filter(|e| e.agent.as_ref().unwrap().status != pb::AgentStatus::Healthy as i32)
        .map(id_of)
        .collect();
    assert!(
        unhealthy.is_empty(),
        "agents not HEALTHY right after the restart: {unhealthy:?}"
    );
    assert_eq!(
        snapshot.iter().map(id_of).collect::<HashSet<_>>(),
        mine,
        "every agent survived the replicas' absence"
    );
    r2.start_again().await;

    assert_all_survived(&mut client, &agents, Duration::from_secs(4)).await;
    let transitions: Vec<(EventType, String)> = early_watch
        .events()
        .iter()
        .filter(|e| matches!(kind(e), EventType::StatusChanged | EventType::Expired))
        .map(|e| (kind(e), id_of(e)))
        .collect();
    assert!(
        transitions.is_empty(),
        "the watcher opened right after the restart saw {transitions:?}"
    );
    stop.store(true, Ordering::SeqCst);
    beats.await.unwrap();
}
