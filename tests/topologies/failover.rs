//! Failovers: SENTINEL FAILOVER, SIGKILL of the primary and of the slot's primary;
//! writes back within 5 s, heartbeating agents stay HEALTHY, data kept.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::common::{Backend, TestServer, register_request, try_watch_synced};
use agent_registry::pb::{
    self, agent_change_event::EventType, service_registry_client::ServiceRegistryClient,
};
use tonic::transport::Channel;

use crate::common;
use crate::{Agent, register};

/// Heartbeats every agent once a second until `stop`; the agents must
/// never be told NOT_FOUND (their records survive the failover).
fn heartbeat_throughout(
    endpoint: String,
    agents: Vec<Agent>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = ServiceRegistryClient::connect(endpoint).await.unwrap();
        for _ in 0..600 {
            if stop.load(Ordering::Acquire) {
                return;
            }
            for agent in &agents {
                let request = pb::HeartbeatRequest {
                    agent_id: agent.id.clone(),
                    registration_token: agent.token.clone(),
                    ..Default::default()
                };
                let call = tokio::time::timeout(Duration::from_secs(3), client.heartbeat(request));
                if let Ok(Err(status)) = call.await {
                    assert_ne!(
                        status.code(),
                        tonic::Code::NotFound,
                        "agent {} lost: {status:?}",
                        agent.id
                    );
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Watches everything until `stop`, reopening the watch whenever it ends
/// (a failover ends it with ABORTED: the feed was lost). Returns every
/// event type seen for `ids`, snapshots included.
fn watch_throughout(
    endpoint: String,
    ids: HashSet<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(EventType, String, i32)>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut client = ServiceRegistryClient::connect(endpoint).await.unwrap();
        for _ in 0..1000 {
            if stop.load(Ordering::Acquire) {
                break;
            }
            let Ok((mut stream, snapshot)) = try_watch_synced(&mut client).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            for event in snapshot {
                let agent = event.agent.clone().unwrap_or_default();
                if ids.contains(&agent.agent_id) {
                    seen.push((EventType::Snapshot, agent.agent_id, agent.status));
                }
            }
            while !stop.load(Ordering::Acquire) {
                match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                    Err(_) => continue,
                    Ok(Ok(Some(event))) => {
                        let agent = event.agent.clone().unwrap_or_default();
                        if ids.contains(&agent.agent_id) {
                            let kind = EventType::try_from(event.event_type).unwrap();
                            seen.push((kind, agent.agent_id, agent.status));
                        }
                    }
                    Ok(_) => break, // ended (ABORTED on feed loss): reopen
                }
            }
        }
        seen
    })
}

/// Registers until it succeeds (each attempt bounded); returns when.
async fn first_successful_write(client: &mut ServiceRegistryClient<Channel>) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let call = tokio::time::timeout(
            Duration::from_secs(3),
            client.register(register_request(&["after-failover"])),
        );
        if let Ok(Ok(_)) = call.await {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no write succeeded within 30 s of the failover");
}

/// What a failover scenario measured.
struct Measured {
    promotion: Duration,
    recovery_after_promotion: Duration,
}

/// The common scenario: five agents with a 3 s TTL heartbeat throughout
/// while `failover` runs (it returns once the new primary is promoted);
/// writes must succeed within 5 s of the promotion; afterwards every agent
/// is HEALTHY, none ever went STATUS_CHANGED or EXPIRED, and an agent
/// registered before (not heartbeating, long TTL) is still there. A second
/// replica `other` sees a write made after the failover: its feed followed
/// the new primary.
async fn survives_failover<F, Fut>(server: &TestServer, other: &TestServer, failover: F) -> Measured
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut client = server.client().await;
    let mut agents = Vec::new();
    for _ in 0..5 {
        agents.push(register(&mut client, 3).await);
    }
    let keeper = register(&mut client, 600).await;
    let ids: HashSet<String> = agents.iter().map(|a| a.id.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let heartbeats = heartbeat_throughout(server.endpoint(), agents.clone(), stop.clone());
    let watcher = watch_throughout(server.endpoint(), ids.clone(), stop.clone());
    // Let a few heartbeats and the watch settle first.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let started = Instant::now();
    failover().await;
    let promoted = Instant::now();
    let recovered = first_successful_write(&mut client).await;
    let measured = Measured {
        promotion: promoted - started,
        recovery_after_promotion: recovered.saturating_duration_since(promoted),
    };
    eprintln!(
        "failover: promotion after {:?}, writes again {:?} after the promotion",
        measured.promotion, measured.recovery_after_promotion
    );
    assert!(
        measured.recovery_after_promotion <= Duration::from_secs(5),
        "writes came back {:?} after the promotion",
        measured.recovery_after_promotion
    );

    // Past a whole TTL after the failover: nobody may have expired.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Release);
    heartbeats.await.unwrap();
    let seen = watcher.await.unwrap();
    for (kind, id, _) in &seen {
        assert!(
            !matches!(
                kind,
                EventType::StatusChanged | EventType::Expired | EventType::Deregistered
            ),
            "{kind:?} for {id} during the failover: {seen:?}"
        );
    }
    let healthy = pb::AgentStatus::Healthy as i32;
    for (kind, id, status) in &seen {
        assert_eq!(*status, healthy, "{kind:?} of {id} not HEALTHY: {seen:?}");
    }
    for id in ids.iter().chain([&keeper.id]) {
        let agent = client
            .get_agent(pb::GetAgentRequest {
                agent_id: id.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("{id} lost in the failover: {s:?}"))
            .into_inner()
            .agent
            .unwrap();
        assert_eq!(agent.status, healthy, "{id}");
    }
    let after = register(&mut client, 60).await;
    let mut other = other.client().await;
    let (mut watch, snapshot) = common::watch_synced(&mut other).await;
    if !snapshot
        .iter()
        .any(|e| e.agent.as_ref().is_some_and(|a| a.agent_id == after.id))
    {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("the other replica hears of the write")
            .unwrap()
            .unwrap();
        assert_eq!(event.agent.unwrap().agent_id, after.id);
    }
    let late = register(&mut client, 60).await;
    let event = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the other replica's feed follows the new primary")
        .unwrap()
        .unwrap();
    assert_eq!(event.event_type, EventType::Registered as i32);
    assert_eq!(event.agent.unwrap().agent_id, late.id);
    measured
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_by_command_keeps_writes_agents_and_data() {
    let server = TestServer::start(Backend::Sentinel).await;
    let topology = server.sentinel.as_ref().unwrap();
    let other = TestServer::on_store(Backend::Sentinel, &topology.store_args(), &[]).await;
    let old = topology.primary_port().await.unwrap();
    survives_failover(&server, &other, || async {
        let _: String = topology.sentinels[0]
            .query(redis::cmd("SENTINEL").arg("FAILOVER").arg("mymaster"))
            .await
            .expect("SENTINEL FAILOVER accepted");
        topology.wait_promotion(old).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_after_sigkill_of_the_primary_keeps_writes_agents_and_data() {
    let mut server = TestServer::start(Backend::Sentinel).await;
    let mut topology = server.sentinel.take().unwrap();
    let other = TestServer::on_store(Backend::Sentinel, &topology.store_args(), &[]).await;
    let old = topology.primary_port().await.unwrap();
    let index = topology.primary_index().await;
    survives_failover(&server, &other, || async {
        topology.data[index].kill();
        topology.wait_promotion(old).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_after_sigkill_of_the_slots_primary_keeps_writes_agents_and_data() {
    let mut server = TestServer::start(Backend::Cluster).await;
    let mut cluster = server.cluster.take().unwrap();
    let other = TestServer::on_store(Backend::Cluster, &cluster.store_args(), &[]).await;
    let index = cluster.registry_primary().await;
    let old = cluster.nodes[index].port;
    survives_failover(&server, &other, || async {
        cluster.nodes[index].kill();
        cluster.wait_promotion(old).await;
    })
    .await;
}
