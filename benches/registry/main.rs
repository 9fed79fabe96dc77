//! `make bench`: the registry against a "ceiling", side by side in one run
//! (issue 10). Every server is a separate process on loopback: the release
//! `agent-registry` binary on its memory store, the same on Redis (a
//! `redis-server` child on a free loopback port), and the ceiling (a trivial
//! implementation of the same tonic service that stores nothing: this
//! binary re-executed, see `ceiling.rs`). This process is the load
//! generator: the same client, settings and workloads for all three.
//!
//! Measured: Register and Heartbeat throughput (32 in flight), ListAgents,
//! DiscoverAgents one call at a time at 100 000 agents (a skewed query mix;
//! the 10 slowest queries are listed), WatchAgents delivery latency and
//! missed events with 1 000 and 10 000 watchers, server memory per open
//! stream and per agent (RSS of the server process), the change history's
//! cost, and a fresh Redis-backed replica's view load and resync time.
//! Prints Markdown tables: each figure, its ratio to the ceiling, and
//! issue 10's goals met or not. A failing step prints an error row and the
//! run goes on; every loop is bounded in count and time.
//!
//! `REGISTRY_BENCH_SCALE` (0 < s ≤ 1, default 1) scales every count down for
//! a quick try; `REGISTRY_BENCH_ONLY` picks the workloads (`steps.rs`).
// Printing the tables is this program's whole job.
#![allow(clippy::print_stdout)]

mod ceiling;
mod history;
mod load;
mod population;
mod procs;
mod report;
mod steps;
mod watch;
mod workloads;

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use history::Load;
use load::{Failures, Throughput, connect_many};
use population::{Population, Query};
use procs::{Redis, Server};
use report::render;
use steps::Steps;
use watch::{Watch, WatchPlan};
use workloads::{Discover, Kind, Target};

/// Calls in flight for the throughput workloads.
const CONCURRENCY: usize = 32;
/// Client connections those calls share.
const CHANNELS: usize = 8;
/// Rounds of the heartbeat and register workloads, alternating servers.
const ROUNDS: usize = 3;
/// Every server, in column order.
const KINDS: [Kind; 3] = [Kind::Ceiling, Kind::Memory, Kind::Redis];

/// The run's counts (scaled by `REGISTRY_BENCH_SCALE`).
#[derive(Clone, Copy, Debug)]
struct Sizes {
    scale: f64,
    agents: usize,
    heartbeat_agents: usize,
    heartbeat_calls: usize,
    discover_calls: usize,
    discover_warmup: usize,
    list_calls: usize,
    watchers: usize,
    changes: usize,
    many_watchers: usize,
    many_changes: usize,
}

impl Sizes {
    fn new(scale: f64) -> Self {
        let n = |full: usize| ((full as f64 * scale).round() as usize).max(1);
        Self {
            scale,
            agents: n(100_000).max(200),
            heartbeat_agents: n(2_000).max(101),
            heartbeat_calls: n(20_000),
            discover_calls: n(5_000),
            discover_warmup: n(200),
            list_calls: n(2_000),
            watchers: n(1_000),
            changes: 50,
            many_watchers: n(10_000),
            many_changes: 5,
        }
    }
}

/// One server's figures.
#[derive(Default)]
struct Column {
    register: Option<Throughput>,
    heartbeat: Option<Throughput>,
    list: Option<Throughput>,
    discover: Option<Discover>,
    watch: Option<Watch>,
    many: Option<Watch>,
    bytes_per_agent: Option<f64>,
}

struct Report {
    sizes: Sizes,
    started: Instant,
    columns: HashMap<Kind, Column>,
    /// (step, server, error).
    errors: Vec<(String, String, String)>,
    notes: Vec<String>,
    load: Option<Load>,
    /// Agents each server holds, for the slow queries' match counts.
    populations: HashMap<Kind, usize>,
}

impl Report {
    fn column(&mut self, kind: Kind) -> &mut Column {
        self.columns.entry(kind).or_default()
    }

    fn progress(&self, step: &str, server: &str, what: &str) {
        eprintln!(
            "[{:>6.1} s] {step} ({server}): {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// The value, or an error row naming the step.
    fn record<T>(&mut self, step: &str, server: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => {
                self.progress(step, server, "done");
                Some(value)
            }
            Err(error) => {
                self.progress(step, server, &format!("FAILED: {error}"));
                self.errors
                    .push((step.to_owned(), server.to_owned(), error));
                None
            }
        }
    }

    /// An error row for calls that failed in a step that still has figures.
    fn failures(&mut self, step: &str, server: &str, failures: &Failures, skipped: usize) {
        if failures.count > 0 {
            let first = failures.first.clone().unwrap_or_default();
            self.progress(
                step,
                server,
                &format!("{} failed, first: {first}", failures.count),
            );
            self.errors.push((
                step.to_owned(),
                server.to_owned(),
                format!("{} failed; first: {first}", failures.count),
            ));
        }
        if skipped > 0 {
            self.errors.push((
                step.to_owned(),
                server.to_owned(),
                format!("{skipped} calls not issued: time bound reached"),
            ));
        }
    }

    fn throughput(
        &mut self,
        step: &str,
        kind: Kind,
        r: Result<Throughput, String>,
    ) -> Option<Throughput> {
        let figures = self.record(step, kind.label(), r)?;
        self.failures(step, kind.label(), &figures.failures, figures.skipped);
        Some(figures)
    }

    fn watch(&mut self, step: &str, kind: Kind, r: Result<Watch, String>) -> Option<Watch> {
        let figures = self.record(step, kind.label(), r)?;
        self.failures(step, kind.label(), &figures.failures, 0);
        Some(figures)
    }
}

async fn start(kind: Kind, dir: &Path, redis: Option<&Redis>) -> Result<Target, String> {
    let mut server = match (kind, redis) {
        (Kind::Ceiling, _) => Server::ceiling(dir)?,
        (Kind::Memory, _) => Server::registry("memory", &["--store", "memory"], dir)?,
        (Kind::Redis, Some(redis)) => Server::registry(
            "redis",
            &["--store", "redis", "--redis-url", &redis.url],
            dir,
        )?,
        (Kind::Redis, None) => return Err("no redis-server".into()),
    };
    server.ready().await?;
    let clients = connect_many(&server.endpoint, CHANNELS).await?;
    Ok(Target {
        kind,
        server,
        clients,
        agents: Vec::new(),
    })
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or_else(String::new, |kb| {
            format!(", {:.0} GiB", kb as f64 / 1048576.0)
        });
    format!("{cores} cores ({cpu}{memory})")
}

async fn run(sizes: Sizes) {
    let steps = Steps::from_env();
    let mut report = Report {
        sizes,
        started: Instant::now(),
        columns: HashMap::new(),
        errors: Vec::new(),
        notes: Vec::new(),
        load: None,
        populations: HashMap::new(),
    };
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            println!("cannot create a temporary directory: {e}");
            return;
        }
    };
    let population = Arc::new(Population::generate(sizes.agents, 1));
    let queries = Arc::new(Query::mix(sizes.discover_calls, 2));
    let redis = Redis::start(dir.path()).await;
    let redis = report.record("start redis-server", "Redis store", redis);
    let mut targets = Vec::new();
    for kind in KINDS {
        if kind == Kind::Redis && redis.is_none() {
            continue;
        }
        let started = start(kind, dir.path(), redis.as_ref()).await;
        if let Some(t) = report.record("start", kind.label(), started) {
            targets.push(t);
        }
    }
    let mut rss_empty = HashMap::new();
    for t in &targets {
        if let Some(rss) = report.record("RSS", t.kind.label(), t.server.child.rss()) {
            rss_empty.insert(t.kind, rss);
        }
    }

    let hb = sizes.heartbeat_agents;
    let budget = Duration::from_secs(120);
    for t in &mut targets {
        let step = format!("register the first {hb} agents");
        let r = workloads::register(t, &population, 0..hb, CONCURRENCY, budget).await;
        report.throughput(&step, t.kind, r);
    }
    // Throughput rounds alternate between the servers, so that a slow
    // moment of the shared machine does not fall on one server only.
    let mut rounds: HashMap<Kind, Vec<Throughput>> = HashMap::new();
    for round in (1..=ROUNDS).filter(|_| steps.runs("heartbeat")) {
        for t in &targets {
            let step = format!(
                "heartbeat ({hb} agents, {} calls), round {round}/{ROUNDS}",
                sizes.heartbeat_calls
            );
            let r = workloads::heartbeat(t, hb, sizes.heartbeat_calls, CONCURRENCY, budget).await;
            if let Some(figures) = report.throughput(&step, t.kind, r) {
                rounds.entry(t.kind).or_default().push(figures);
            }
        }
    }
    for (kind, r) in rounds.drain() {
        report.column(kind).heartbeat = Throughput::combine(r);
    }
    let redis_before = match &redis {
        Some(redis) => procs::redis_used_memory(&redis.url).await.ok(),
        None => None,
    };
    let bounds: Vec<usize> = (0..=ROUNDS)
        .map(|r| hb + (sizes.agents - hb) * r / ROUNDS)
        .collect();
    for round in bounds.windows(2) {
        for t in &mut targets {
            let step = format!("register {} → {} agents", round[0], round[1]);
            let budget = Duration::from_secs(90);
            let kind = t.kind;
            let r = workloads::register(t, &population, round[0]..round[1], CONCURRENCY, budget);
            if let Some(figures) = report.throughput(&step, kind, r.await) {
                rounds.entry(kind).or_default().push(figures);
            }
        }
    }
    for (kind, r) in rounds.drain() {
        report.column(kind).register = Throughput::combine(r);
    }
    if let (Some(redis), Some(before)) = (&redis, redis_before) {
        let redis_target = targets.iter().find(|t| t.kind == Kind::Redis);
        if let (Ok(after), Some(t)) = (procs::redis_used_memory(&redis.url).await, redis_target) {
            let added = t.population().saturating_sub(hb).max(1);
            report.notes.push(format!(
                "Redis `used_memory`: {:.1} MiB with {} agents, {} bytes per agent added \
                 (record, deadline, set member, history entry)",
                after as f64 / (1 << 20) as f64,
                t.population(),
                after.saturating_sub(before) / added as u64
            ));
        }
    }
    for t in &targets {
        let agents = t.population();
        report.populations.insert(t.kind, agents);
        let Some(empty) = rss_empty.get(&t.kind).copied() else {
            continue;
        };
        let per_agent = t
            .server
            .child
            .rss()
            .map(|rss| rss.saturating_sub(empty) as f64 / agents.max(1) as f64);
        report.column(t.kind).bytes_per_agent =
            report.record("RSS per agent", t.kind.label(), per_agent);
    }
    for t in targets.iter().filter(|_| steps.runs("list")) {
        let r = workloads::list(t, sizes.list_calls, CONCURRENCY, Duration::from_secs(60)).await;
        report.column(t.kind).list = report.throughput("list (page of 100)", t.kind, r);
    }
    for t in targets.iter().filter(|_| steps.runs("discover")) {
        let step = format!("discover ({} agents, one at a time)", t.population());
        let r =
            workloads::discover(t, &queries, sizes.discover_warmup, Duration::from_secs(120)).await;
        let figures = report.record(&step, t.kind.label(), r);
        if let Some(d) = &figures {
            report.failures(
                &step,
                t.kind.label(),
                &d.figures.failures,
                d.figures.skipped,
            );
        }
        report.column(t.kind).discover = figures;
    }
    let few = WatchPlan {
        watchers: sizes.watchers,
        changes: sizes.changes,
        pace: Duration::from_millis(20),
        base: 1_000_000_000,
    };
    let many = WatchPlan {
        watchers: sizes.many_watchers,
        changes: sizes.many_changes,
        pace: Duration::from_millis(200),
        base: 2_000_000_000,
    };
    let plans = [(few, false), (many, true)];
    for (plan, is_many) in plans.into_iter().filter(|_| steps.runs("watch")) {
        for t in &targets {
            let step = format!(
                "watch ({} watchers × {} changes)",
                plan.watchers, plan.changes
            );
            let r = watch::watch(t, &population, plan).await;
            let figures = report.watch(&step, t.kind, r);
            let column = report.column(t.kind);
            if is_many {
                column.many = figures;
            } else {
                column.watch = figures;
            }
        }
    }
    for t in targets
        .iter()
        .filter(|t| t.kind != Kind::Ceiling && steps.runs("history"))
    {
        let url = (t.kind == Kind::Redis)
            .then(|| redis.as_ref().map(|r| r.url.as_str()))
            .flatten();
        let r = history::history_cost(t, url).await;
        if let Some((lines, short)) = report.record("history cost", t.kind.label(), r) {
            report.failures("history cost (resume)", t.kind.label(), &short, 0);
            if short.count > 0 {
                report.notes.push(format!(
                    "{}: last log lines after the resumes (RUST_LOG={}): {}",
                    t.kind.label(),
                    procs::server_log(),
                    t.server.child.log_tail(4)
                ));
            }
            for line in lines {
                report.notes.push(format!("{}: {line}", t.kind.label()));
            }
        }
    }
    let probe = targets
        .iter()
        .find(|t| t.kind == Kind::Redis)
        .and_then(|t| {
            t.agents
                .iter()
                .rev()
                .flatten()
                .next()
                .map(|(id, _)| id.clone())
        });
    // Only the fresh replica runs from here on.
    drop(targets);
    if let (Some(redis), Some(probe), true) = (&redis, probe, steps.runs("load")) {
        let r = history::view_load(&redis.url, dir.path(), &probe).await;
        report.load = report.record("view load (fresh Redis-backed replica)", "Redis store", r);
        let expected = report.populations.get(&Kind::Redis).copied().unwrap_or(0) as u64;
        if let Some(load) = &report.load
            && load.population != expected
        {
            report.errors.push((
                "view load".into(),
                "Redis store".into(),
                format!(
                    "{} agents in the fresh view, {expected} registered",
                    load.population
                ),
            ));
        }
        if let Some(load) = report.load.clone() {
            if let Some(e) = load.refused {
                let step = "view load: WatchAgents after the first read";
                report.errors.push((step.into(), "Redis store".into(), e));
            }
            if let Err(e) = load.ready {
                let step = "view load: WatchAgents accepted";
                report.errors.push((step.into(), "Redis store".into(), e));
            }
            if let Err(e) = load.resync {
                let step = "view resync";
                report.errors.push((step.into(), "Redis store".into(), e));
            }
            report.notes.push(format!(
                "fresh Redis-backed replica, last log lines (RUST_LOG={}): {}",
                procs::server_log(),
                load.log
            ));
        }
    }
    let took = report.started.elapsed();
    println!("{}", render(&report, &population, &queries, took));
}

fn main() -> std::process::ExitCode {
    if let Ok(addr) = std::env::var(procs::CEILING_ENV) {
        return ceiling::main(&addr);
    }
    // `cargo bench` passes --bench; test runners that list or run every
    // target (`--list`, no arguments) must not start a minutes-long run.
    if !std::env::args().any(|a| a == "--bench") {
        return std::process::ExitCode::SUCCESS;
    }
    let scale = std::env::var("REGISTRY_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0 && *s <= 1.0)
        .unwrap_or(1.0);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Ctrl-C drops the run, and with it every child's guard.
    runtime.block_on(async {
        tokio::select! {
            () = run(Sizes::new(scale)) => {}
            _ = tokio::signal::ctrl_c() => eprintln!("interrupted: stopping the servers"),
        }
    });
    std::process::ExitCode::SUCCESS
}
