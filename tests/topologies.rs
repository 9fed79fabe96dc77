//! BEHAVIOUR.md §8 on real topologies (processes of the test's own on
//! loopback, `common::topology`): a primary + replica + three Sentinels, and
//! a six-node Redis Cluster.
//!
//! - The behaviour suite's core (register, heartbeat, list, discover,
//!   watch, notify) runs on both: a selected subset of `tests/behaviour/`,
//!   because every test starts its own topology (one process per test under
//!   nextest) and the whole suite on six-node clusters would take too long.
//! - Failovers (SENTINEL FAILOVER, SIGKILL of the primary, SIGKILL of the
//!   slot's primary): writes succeed again within 5 s of the promotion with
//!   no registry restart, agents heartbeating throughout stay HEALTHY with
//!   no STATUS_CHANGED/EXPIRED event, and what was written before is there.
//! - `--redis-wait-replicas 1`: no acknowledged registration is lost when the
//!   primary is SIGKILLed right after.
//! - Two registry replicas on a cluster see each other's writes, watch
//!   events and notifications (sharded pub/sub).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

/// Stands in for `common`'s macro in the behaviour files included below:
/// instead of one test per backend, each behaviour becomes callable as
/// `<module>::on::<name>(backend)` for the selected tests of this file.
macro_rules! behaviour_tests {
    ($($name:ident),* $(,)?) => {
        #[allow(dead_code)]
        pub(crate) mod on {
            $(
                pub(crate) async fn $name(backend: $crate::common::Backend) {
                    super::$name(backend).await
                }
            )*
        }
    };
}

#[path = "behaviour/lifecycle.rs"]
mod lifecycle;
#[path = "behaviour/notify.rs"]
mod notify;
#[path = "behaviour/query.rs"]
mod query;
#[path = "behaviour/support.rs"]
mod support;
#[path = "behaviour/watch.rs"]
mod watch;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use agent_registry::pb::{
    self, agent_change_event::EventType, service_registry_client::ServiceRegistryClient,
};
use common::{
    Backend, TestServer, register_request,
    topology::{ClusterTopology, SentinelTopology},
    try_watch_synced, wait_until,
};
use tonic::transport::Channel;

/// Runs the selected behaviour tests on the Sentinel and Cluster backends.
macro_rules! core_suite {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sentinel {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::on::$name(crate::common::Backend::Sentinel).await
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::on::$name(crate::common::Backend::Cluster).await
                }
            )*
        }
    };
}

core_suite! {
    lifecycle::reregister_with_id_and_token_replaces_the_agent_in_place,
    lifecycle::heartbeat_advances_last_seen_and_expires_at,
    lifecycle::deregister_removes_the_agent,
    query::list_filters_by_agent_type_and_zero_means_any,
    query::discover_requires_all_requested_capabilities,
    watch::watch_reports_each_change_with_the_full_agent_and_increasing_revisions,
    watch::a_snapshot_watch_sends_every_matching_agent_then_synced_then_live_changes,
    notify::a_live_notification_reaches_an_open_subscription,
    notify::notifications_are_numbered_per_agent_and_report_delivery,
}

// === failover scenarios ===

/// An agent of the scenario: id and token.
#[derive(Clone)]
struct Agent {
    id: String,
    token: String,
}

async fn register(client: &mut ServiceRegistryClient<Channel>, ttl: i32) -> Agent {
    let mut request = register_request(&["failover"]);
    request.ttl_seconds = ttl;
    let reply = tokio::time::timeout(Duration::from_secs(3), client.register(request))
        .await
        .expect("register answers")
        .expect("register succeeds")
        .into_inner();
    Agent {
        id: reply.agent_id,
        token: reply.registration_token,
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_no_acknowledged_registration_is_lost_to_a_sigkill() {
    let mut topology = SentinelTopology::start().await;
    let server = TestServer::on_store(
        Backend::Sentinel,
        &topology.store_args(),
        &["--redis-wait-replicas", "1"],
    )
    .await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(register(&mut client, 600).await.id);
    }
    let old = topology.primary_port().await.unwrap();
    let index = topology.primary_index().await;
    topology.data[index].kill();
    let promoted = topology.wait_promotion(old).await;
    let count: usize = topology.data[promoted]
        .query(redis::cmd("SCARD").arg("{registry}:agents"))
        .await
        .unwrap();
    assert_eq!(count, 200, "acknowledged registrations lost");
    // No replica is left to acknowledge a write now: writes answer
    // UNAVAILABLE (outcome unknown) until one joins; reads follow the new
    // primary (the view reloads from it).
    let refused = client
        .register(register_request(&["no-replica-left"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    for id in &ids {
        wait_until(
            Duration::from_secs(10),
            "registry reads the new primary",
            || {
                let mut client = client.clone();
                let id = id.clone();
                async move {
                    client
                        .get_agent(pb::GetAgentRequest { agent_id: id })
                        .await
                        .is_ok()
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_a_cluster_see_each_others_writes_watch_events_and_notifications() {
    let cluster = ClusterTopology::start().await;
    let a = TestServer::on_store(Backend::Cluster, &cluster.store_args(), &[]).await;
    let b = TestServer::on_store(Backend::Cluster, &cluster.store_args(), &[]).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let (mut watch_b, _) = common::watch_synced(&mut cb).await;

    let agent = register(&mut ca, 60).await;
    let event = tokio::time::timeout(Duration::from_secs(5), watch_b.message())
        .await
        .expect("B's watch sees A's write")
        .unwrap()
        .unwrap();
    assert_eq!(event.event_type, EventType::Registered as i32);
    assert_eq!(event.agent.unwrap().agent_id, agent.id);
    let read = cb
        .get_agent(pb::GetAgentRequest {
            agent_id: agent.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.agent.unwrap().agent_id, agent.id);

    // A subscriber on A, a notification through B.
    let mut request = tonic::Request::new(pb::SubscribeNotificationsRequest {
        agent_id: agent.id.clone(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-registration-token", agent.token.parse().unwrap());
    let mut notifications = ca
        .subscribe_notifications(request)
        .await
        .unwrap()
        .into_inner();
    let mut delivered = false;
    for _ in 0..50 {
        let reply = cb
            .notify_agent(pb::NotifyAgentRequest {
                agent_id: agent.id.clone(),
                notification_type: "task".into(),
                message: "hello".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if reply.delivered {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(delivered, "the subscriber on A never counted as a receiver");
    let got = tokio::time::timeout(Duration::from_secs(5), notifications.message())
        .await
        .expect("A's subscriber gets B's notification")
        .unwrap()
        .unwrap();
    assert_eq!(got.message, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_nodes_that_are_not_a_cluster_are_one_plain_redis() {
    let redis = common::RedisProcess::start().await;
    let store = vec![
        "--store".to_owned(),
        "redis".to_owned(),
        "--redis-cluster-nodes".to_owned(),
        format!("127.0.0.1:{},127.0.0.1:1", redis.port),
    ];
    let server = TestServer::on_store(Backend::Redis, &store, &[]).await;
    let mut client = server.client().await;
    let agent = register(&mut client, 60).await;
    let mut conn = redis.connection().await;
    let count: usize = redis::cmd("SCARD")
        .arg("{registry}:agents")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 1, "the agent {} is in the plain Redis", agent.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_start_up_times() {
    let started = Instant::now();
    let sentinel = SentinelTopology::start().await;
    let sentinel_up = started.elapsed();
    let started = Instant::now();
    let cluster = ClusterTopology::start().await;
    let cluster_up = started.elapsed();
    eprintln!("start-up: Sentinel topology {sentinel_up:?}, cluster {cluster_up:?}");
    drop((sentinel, cluster));
}

// === capacity (run by hand: `cargo nextest run --test topologies --run-ignored only`) ===

/// Drives `calls` calls, 32 at a time over 4 connections; returns calls/s.
async fn drive<F, Fut>(server: &TestServer, calls: usize, call: F) -> f64
where
    F: Fn(ServiceRegistryClient<Channel>, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(server.client().await);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let client = clients[worker % 4].clone();
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..calls).step_by(32) {
                call(client.clone(), i).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

/// The primary's CPU seconds (user + system) so far, and its script
/// statistics since the last reset.
async fn primary_cost(primary: &common::topology::Node) -> (f64, String) {
    let cpu = primary.info("cpu").await;
    let seconds = cpu
        .lines()
        .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum();
    let stats = primary.info("commandstats").await;
    let evalsha = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .unwrap_or("none")
        .to_owned();
    (seconds, evalsha)
}

/// Registers 2 000 agents and heartbeats them 10 000 times through one
/// registry, and reads what the primary spent per call: its CPU time
/// (`INFO cpu`, I/O included) and the script's own time (`INFO
/// commandstats`). One primary core takes about 1 s / that CPU time.
async fn measure(server: &TestServer, primary: &common::topology::Node, label: &str) {
    let agents = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = agents.clone();
    let _: Option<String> = primary.query(redis::cmd("CONFIG").arg("RESETSTAT")).await;
    let (cpu_before, _) = primary_cost(primary).await;
    let registers = drive(server, 2000, move |mut c, _| {
        let sink = sink.clone();
        async move {
            let agent = register(&mut c, 600).await;
            sink.lock().unwrap().push(agent);
        }
    })
    .await;
    let (cpu_registered, register_stats) = primary_cost(primary).await;
    let _: Option<String> = primary.query(redis::cmd("CONFIG").arg("RESETSTAT")).await;
    let agents: Arc<Vec<Agent>> = Arc::new(agents.lock().unwrap().clone());
    let heartbeats = drive(server, 10_000, move |mut c, i| {
        let agent = agents[i % agents.len()].clone();
        async move {
            c.heartbeat(pb::HeartbeatRequest {
                agent_id: agent.id,
                registration_token: agent.token,
                ..Default::default()
            })
            .await
            .expect("heartbeat");
        }
    })
    .await;
    let (cpu_heartbeats, heartbeat_stats) = primary_cost(primary).await;
    eprintln!(
        "capacity[{label}]: {registers:.0} registers/s, {heartbeats:.0} heartbeats/s through \
         one registry; primary CPU per register {:.0} us ({register_stats}), per heartbeat \
         {:.0} us ({heartbeat_stats})",
        (cpu_registered - cpu_before) * 1e6 / 2000.0,
        (cpu_heartbeats - cpu_registered) * 1e6 / 10_000.0,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_write_capacity() {
    let sentinel = SentinelTopology::start().await;
    let server = TestServer::on_store(Backend::Sentinel, &sentinel.store_args(), &[]).await;
    measure(&server, &sentinel.data[0], "sentinel").await;
    drop(server);
    let waiting = SentinelTopology::start().await;
    let server = TestServer::on_store(
        Backend::Sentinel,
        &waiting.store_args(),
        &["--redis-wait-replicas", "1"],
    )
    .await;
    measure(&server, &waiting.data[0], "sentinel, wait 1 replica").await;
    drop(server);
    let cluster = ClusterTopology::start().await;
    let server = TestServer::on_store(Backend::Cluster, &cluster.store_args(), &[]).await;
    let index = cluster.registry_primary().await;
    measure(&server, &cluster.nodes[index], "cluster").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_replica_that_is_not_there_is_unavailable_within_two_seconds() {
    let redis = common::RedisProcess::start().await;
    let server = TestServer::replica(&redis, &["--redis-wait-replicas", "1"]).await;
    let mut client = server.client().await;
    let started = Instant::now();
    let refused = client
        .register(register_request(&["unreplicated"]))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(2),
        "WAIT should block about 1 s: {took:?}"
    );
    // The outcome is unknown to the client, but here the write was applied.
    let mut conn = redis.connection().await;
    let count: usize = redis::cmd("SCARD")
        .arg("{registry}:agents")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 1);
}
