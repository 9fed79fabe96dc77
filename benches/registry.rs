//! `make bench`: throughput and latency of the registry, in-process, on both
//! stores (the Redis one against a `redis-server` child on a free loopback
//! port). Prints a Markdown table; the README records the figures.
//!
//! Measured: register, heartbeat, discover with 10 000 and 100 000 agents,
//! list (one page of 100), and watch delivery latency (change acknowledged →
//! event received) with 100 watchers. Every loop is bounded.
// Printing the table is this program's whole job.
#![allow(clippy::print_stdout)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use agent_registry::{
    config::Config,
    pb::{self, service_registry_client::ServiceRegistryClient},
    server,
    store::{RedisConfig, RedisStore, Store},
};
use clap::Parser;
use tokio::sync::Mutex;
use tonic::transport::Channel;

type Client = ServiceRegistryClient<Channel>;

/// Concurrent requests in flight.
const CONCURRENCY: usize = 64;
/// Client connections shared by the request tasks.
const CHANNELS: usize = 8;

struct Sample {
    name: String,
    count: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Sample {
    fn row(&mut self, store: &str) -> String {
        self.latencies.sort();
        let pct = |p: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies.get(i).copied().unwrap_or_default()
        };
        format!(
            "| {store} | {} | {} | {:.0} | {:.2} | {:.2} |",
            self.name,
            self.count,
            self.count as f64 / self.elapsed.as_secs_f64(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
        )
    }
}

/// Runs `total` calls of `op(i)` with [`CONCURRENCY`] in flight.
async fn drive<F, Fut>(name: &str, clients: &[Client], total: usize, op: F) -> Sample
where
    F: Fn(Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let client = clients[worker % clients.len()].clone();
        let (op, next, latencies) = (op.clone(), next.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                op(client.clone(), i).await;
                local.push(t.elapsed());
            }
            latencies.lock().await.extend(local);
        }));
    }
    for task in tasks {
        task.await.expect("bench task");
    }
    let elapsed = start.elapsed();
    let latencies = Arc::try_unwrap(latencies).expect("tasks done").into_inner();
    Sample {
        name: name.to_owned(),
        count: total,
        elapsed,
        latencies,
    }
}

fn capability(i: usize) -> String {
    // 10 capability groups: a discover for one matches a tenth of agents.
    format!("skill-{}", i % 10)
}

async fn register_many(
    clients: &[Client],
    from: usize,
    to: usize,
    ids: Arc<Mutex<Vec<(String, String)>>>,
) -> Sample {
    drive(
        &format!("register (to {to} agents)"),
        clients,
        to - from,
        move |mut c, i| {
            let ids = ids.clone();
            async move {
                let i = from + i;
                let resp = c
                    .register(pb::RegisterRequest {
                        agent_type: pb::AgentType::Worker as i32,
                        capabilities: vec![capability(i), "common".into()],
                        ttl_seconds: 3600,
                        telemetry: Some(pb::AgentTelemetry {
                            success_rate: (i % 100) as f64 / 100.0,
                            total_executions: 100,
                            avg_duration_ms: (i % 50) as i64,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
                    .expect("register")
                    .into_inner();
                ids.lock()
                    .await
                    .push((resp.agent_id, resp.registration_token));
            }
        },
    )
    .await
}

async fn discover(clients: &[Client], agents: usize, calls: usize) -> Sample {
    drive(
        &format!("discover ({agents} agents, 1/10 match)"),
        clients,
        calls,
        |mut c, i| async move {
            let resp = c
                .discover_agents(pb::DiscoverRequest {
                    capabilities: vec![capability(i)],
                    max_results: 5,
                    filters: [("status".to_owned(), "UNHEALTHY".to_owned())]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                })
                .await
                .expect("discover");
            std::hint::black_box(resp);
        },
    )
    .await
}

/// `used_memory` of the Redis at `url`, in bytes.
async fn redis_used_memory(url: &str) -> Option<u64> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

async fn bench_store(store: &str, extra: &[String], redis_url: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = [
        "agent-registry",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-port",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    let settings = Config::try_parse_from(&args)
        .expect("args")
        .settings()
        .expect("settings");
    let running = server::start(settings).await.expect("server");
    let endpoint = format!("http://{}", running.grpc_addr());
    let mut clients = Vec::new();
    for _ in 0..CHANNELS {
        clients.push(Client::connect(endpoint.clone()).await.expect("connect"));
    }
    let mut rows = Vec::new();
    let ids = Arc::new(Mutex::new(Vec::new()));

    rows.push(
        register_many(&clients, 0, 10_000, ids.clone())
            .await
            .row(store),
    );
    let agents: Arc<Vec<(String, String)>> = Arc::new(ids.lock().await.clone());

    let hb_agents = agents.clone();
    rows.push(
        drive("heartbeat", &clients, 20_000, move |mut c, i| {
            let agents = hb_agents.clone();
            async move {
                let (id, token) = &agents[i % agents.len()];
                c.heartbeat(pb::HeartbeatRequest {
                    agent_id: id.clone(),
                    registration_token: token.clone(),
                    telemetry: None,
                })
                .await
                .expect("heartbeat");
            }
        })
        .await
        .row(store),
    );
    // Most agents have success rates < 0.3 or ≥ 0.5; the status filter in
    // `discover` keeps the ranked set a realistic size (~300 / 3000).
    rows.push(discover(&clients, 10_000, 5_000).await.row(store));
    rows.push(
        drive(
            "list (page of 100)",
            &clients,
            2_000,
            |mut c, _| async move {
                let resp = c
                    .list_agents(pb::ListAgentsRequest {
                        page_size: 100,
                        ..Default::default()
                    })
                    .await
                    .expect("list");
                std::hint::black_box(resp);
            },
        )
        .await
        .row(store),
    );
    rows.push(watch_latency(&clients, agents.clone()).await.row(store));

    let before = match redis_url {
        Some(url) => redis_used_memory(url).await,
        None => None,
    };
    rows.push(
        register_many(&clients, 10_000, 100_000, ids.clone())
            .await
            .row(store),
    );
    if let (Some(url), Some(before)) = (redis_url, before)
        && let Some(after) = redis_used_memory(url).await
    {
        println!(
            "<!-- redis used_memory: {:.1} MiB for 100 000 agents, {} bytes/agent -->",
            after as f64 / (1 << 20) as f64,
            after.saturating_sub(before) / 90_000
        );
    }
    if let Some(url) = redis_url {
        // What a replica pays to (re)load its view: one snapshot script.
        let store = RedisStore::new(&RedisConfig {
            endpoints: agent_registry::store::redis::Endpoints::Url(url.to_owned()),
            prefix: "registry".into(),
            removal_grace: Duration::from_secs(60),
            history: agent_registry::store::DEFAULT_HISTORY,
            wait_replicas: 0,
        })
        .expect("redis url");
        let started = Instant::now();
        let snapshot = store.load().await.expect("snapshot");
        println!(
            "<!-- snapshot load: {} agents in {:?} -->",
            snapshot.agents.len(),
            started.elapsed()
        );
    }
    rows.push(discover(&clients, 100_000, 2_000).await.row(store));
    history_cost(&clients, &agents, redis_url).await;

    running.shutdown().await;
    rows
}

/// The change history (watch resume, BEHAVIOUR.md §11): what it holds per
/// change, and what 1 000 watchers resuming after 100 missed changes cost
/// next to watchers re-snapshotting 100 000 agents instead.
async fn history_cost(clients: &[Client], agents: &[(String, String)], redis_url: Option<&str>) {
    const MISSED: usize = 100;
    const RESUMERS: usize = 1_000;
    const SNAPSHOTTERS: usize = 10;
    // The revision "before the cut": from the first of MISSED changes.
    let mut probe = clients[0]
        .clone()
        .watch_agents(pb::WatchAgentsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let mut start = None;
    for (i, (id, token)) in agents.iter().take(MISSED + 1).enumerate() {
        clients[i % clients.len()]
            .clone()
            .heartbeat(pb::HeartbeatRequest {
                agent_id: id.clone(),
                registration_token: token.clone(),
                telemetry: Some(pb::AgentTelemetry {
                    success_rate: 0.99,
                    total_executions: 1000 + i as i64,
                    ..Default::default()
                }),
            })
            .await
            .expect("heartbeat");
        if start.is_none() {
            let event = probe.message().await.expect("event").expect("open");
            start = Some(event.revision);
        }
    }
    drop(probe);
    let start = start.unwrap_or(0);
    let began = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..RESUMERS {
        let mut c = clients[w % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = c
                .watch_agents(pb::WatchAgentsRequest {
                    start_revision: start,
                    ..Default::default()
                })
                .await
                .expect("resume")
                .into_inner();
            let mut got = 0;
            while got < MISSED {
                match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                    Ok(Ok(Some(_))) => got += 1,
                    _ => break,
                }
            }
            got
        }));
    }
    let mut replayed = 0;
    for task in tasks {
        replayed += task.await.unwrap_or(0);
    }
    let resume = began.elapsed();
    let began = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..SNAPSHOTTERS {
        let mut c = clients[w % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = c
                .watch_agents(pb::WatchAgentsRequest {
                    send_initial_snapshot: true,
                    ..Default::default()
                })
                .await
                .expect("snapshot")
                .into_inner();
            let synced = pb::agent_change_event::EventType::Synced as i32;
            let mut bytes = 0usize;
            while let Ok(Ok(Some(event))) =
                tokio::time::timeout(Duration::from_secs(30), stream.message()).await
            {
                bytes += prost::Message::encoded_len(&event);
                if event.event_type == synced {
                    break;
                }
            }
            bytes
        }));
    }
    let mut snapshot_bytes = 0;
    for task in tasks {
        snapshot_bytes += task.await.unwrap_or(0);
    }
    let snapshot = began.elapsed();
    println!(
        "<!-- resume: {RESUMERS} watchers × {MISSED} missed changes in {resume:?} \
         ({replayed} events, {:.2} ms per watcher); re-snapshot of 100 000 agents: \
         {SNAPSHOTTERS} watchers in {snapshot:?} ({:.0} ms and {:.1} MB per watcher) -->",
        resume.as_secs_f64() * 1e3 / RESUMERS as f64,
        snapshot.as_secs_f64() * 1e3 / SNAPSHOTTERS as f64,
        snapshot_bytes as f64 / SNAPSHOTTERS as f64 / 1e6,
    );
    if let Some(url) = redis_url
        && let Ok(client) = redis::Client::open(url)
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let len: u64 = redis::cmd("XLEN")
            .arg("{registry}:history")
            .query_async(&mut conn)
            .await
            .unwrap_or(0);
        let bytes: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg("{registry}:history")
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await
            .unwrap_or(0);
        println!(
            "<!-- redis history: {len} changes, {:.1} MiB, {} bytes/change -->",
            bytes as f64 / (1 << 20) as f64,
            bytes / len.max(1)
        );
    } else {
        // The memory store's ring holds each change as published: the
        // entry, and the agent version it carries (about its encoded size
        // plus the allocations of its strings).
        let entry = std::mem::size_of::<agent_registry::domain::Replayed>()
            + std::mem::size_of::<agent_registry::domain::Agent>();
        println!("<!-- memory history: about {entry} bytes/change plus the agent's strings -->");
    }
}

/// 100 watchers; 2 000 telemetry changes (each of a different agent) at
/// about 1 000/s; latency from issuing the change to each watcher receiving
/// its UPDATED event.
async fn watch_latency(clients: &[Client], agents: Arc<Vec<(String, String)>>) -> Sample {
    const WATCHERS: usize = 100;
    const CHANGES: usize = 2_000;
    type Sent = std::collections::HashMap<String, Instant>;
    let sent: Arc<std::sync::Mutex<Sent>> = Arc::default();
    let updated = pb::agent_change_event::EventType::Updated as i32;
    let mut watchers = Vec::new();
    for w in 0..WATCHERS {
        let mut c = clients[w % clients.len()].clone();
        let mut stream = c
            .watch_agents(pb::WatchAgentsRequest::default())
            .await
            .expect("watch")
            .into_inner();
        let sent = sent.clone();
        watchers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(CHANGES);
            while latencies.len() < CHANGES {
                let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
                let Ok(Ok(Some(event))) = next else { break };
                let received = Instant::now();
                if event.event_type != updated {
                    continue;
                }
                let id = event.agent.map(|a| a.agent_id).unwrap_or_default();
                if let Some(at) = sent.lock().expect("lock").get(&id).copied() {
                    latencies.push(received.saturating_duration_since(at));
                }
            }
            latencies
        }));
    }
    let mut c = clients[0].clone();
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    for (i, (id, token)) in agents.iter().take(CHANGES).enumerate() {
        ticker.tick().await;
        sent.lock()
            .expect("lock")
            .insert(id.clone(), Instant::now());
        c.heartbeat(pb::HeartbeatRequest {
            agent_id: id.clone(),
            registration_token: token.clone(),
            telemetry: Some(pb::AgentTelemetry {
                success_rate: 0.9,
                total_executions: 1_000 + i as i64,
                ..Default::default()
            }),
        })
        .await
        .expect("heartbeat");
    }
    let elapsed = start.elapsed();
    let mut latencies = Vec::new();
    for w in watchers {
        latencies.extend(w.await.expect("watcher"));
    }
    Sample {
        name: format!("watch delivery ({WATCHERS} watchers)"),
        count: latencies.len(),
        elapsed,
        latencies,
    }
}

/// A throwaway redis-server on a free loopback port.
struct Redis {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (make deps)");
        let redis = Self {
            child,
            port,
            _dir: dir,
        };
        let url = format!("redis://127.0.0.1:{port}");
        for _ in 0..250 {
            if let Ok(client) = redis::Client::open(url.as_str())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; test runners that list or run every
    // target (`--list`, no arguments) must not start a minutes-long run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "agent-registry benchmark: {cores} cores, concurrency {CONCURRENCY}, client and server in one process\n"
    );
    println!("| store | operation | calls | calls/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    for row in bench_store("memory", &["--store".into(), "memory".into()], None).await {
        println!("{row}");
    }
    let redis = Redis::start().await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    for row in bench_store(
        "redis",
        &[
            "--store".into(),
            "redis".into(),
            "--redis-url".into(),
            url.clone(),
        ],
        Some(&url),
    )
    .await
    {
        println!("{row}");
    }
}
