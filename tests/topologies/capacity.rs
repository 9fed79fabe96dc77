//! Start-up times of the topologies and the write capacity measured on them.

use std::{sync::Arc, time::Instant};

use crate::common::{
    Backend, TestServer,
    topology::{ClusterTopology, SentinelTopology},
};
use agent_registry::pb::{self, service_registry_client::ServiceRegistryClient};
use tonic::transport::Channel;

use crate::common;
use crate::{Agent, register};

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
