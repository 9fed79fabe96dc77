//! The workloads, each run the same way against every server.

use std::{
    ops::Range,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use agent_registry::pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    load::{
        CALL_TIMEOUT, Client, Done, Failures, Throughput, connect_many, drive, quantile,
        status_text,
    },
    population::{Population, Query},
    procs::Server,
};

/// Which server a target is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The trivial server that stores nothing.
    Ceiling,
    /// The registry on its memory store.
    Memory,
    /// The registry on Redis.
    Redis,
}

impl Kind {
    /// Column heading.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ceiling => "ceiling",
            Kind::Memory => "memory store",
            Kind::Redis => "Redis store",
        }
    }
}

/// A server under load and what the bench knows of it.
pub struct Target {
    /// Which one.
    pub kind: Kind,
    /// The process.
    pub server: Server,
    /// Connections for unary calls.
    pub clients: Vec<Client>,
    /// Agent `i`'s (id, token), once registered.
    pub agents: Vec<Option<(String, String)>>,
}

impl Target {
    /// Registered agents among the first `n` (id, token, population index).
    fn registered(&self, n: usize) -> Vec<(String, String, usize)> {
        self.agents
            .iter()
            .take(n)
            .enumerate()
            .filter_map(|(i, a)| a.clone().map(|(id, token)| (id, token, i)))
            .collect()
    }

    /// How many agents this server holds (per the bench).
    pub fn population(&self) -> usize {
        self.agents.iter().filter(|a| a.is_some()).count()
    }
}

/// Registers agents `range` of the population, `concurrency` in flight.
pub async fn register(
    t: &mut Target,
    population: &Arc<Population>,
    range: Range<usize>,
    concurrency: usize,
    budget: Duration,
) -> Result<Throughput, String> {
    let from = range.start;
    let pop = population.clone();
    let run = drive(
        &t.clients,
        range.len(),
        concurrency,
        budget,
        move |mut c, i| {
            let request = pop.register_request(from + i);
            async move {
                let r = c
                    .register(request)
                    .await
                    .map_err(|s| status_text(&s))?
                    .into_inner();
                Ok((r.agent_id, r.registration_token))
            }
        },
    )
    .await;
    if t.agents.len() < range.end {
        t.agents.resize(range.end, None);
    }
    for Done { index, value, .. } in &run.done {
        t.agents[from + index] = Some(value.clone());
    }
    nonzero(run.throughput())
}

fn nonzero(figures: Throughput) -> Result<Throughput, String> {
    if figures.calls == 0 {
        Err(figures
            .failures
            .first
            .unwrap_or_else(|| "no call succeeded".into()))
    } else {
        Ok(figures)
    }
}

/// Keep-alives (no telemetry) of the first `agents` agents, round-robin.
pub async fn heartbeat(
    t: &Target,
    agents: usize,
    calls: usize,
    concurrency: usize,
    budget: Duration,
) -> Result<Throughput, String> {
    let ids = Arc::new(t.registered(agents));
    if ids.is_empty() {
        return Err("no registered agent to heartbeat".into());
    }
    let run = drive(&t.clients, calls, concurrency, budget, move |mut c, i| {
        let (id, token, _) = ids[i % ids.len()].clone();
        async move {
            c.heartbeat(pb::HeartbeatRequest {
                agent_id: id,
                registration_token: token,
                telemetry: None,
            })
            .await
            .map_err(|s| status_text(&s))?;
            Ok(())
        }
    })
    .await;
    nonzero(run.throughput())
}

/// ListAgents, one page of 100.
pub async fn list(
    t: &Target,
    calls: usize,
    concurrency: usize,
    budget: Duration,
) -> Result<Throughput, String> {
    let run = drive(
        &t.clients,
        calls,
        concurrency,
        budget,
        |mut c, _| async move {
            let r = c
                .list_agents(pb::ListAgentsRequest {
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .map_err(|s| status_text(&s))?;
            std::hint::black_box(r);
            Ok(())
        },
    )
    .await;
    nonzero(run.throughput())
}

/// One discover call as measured.
#[derive(Clone, Debug)]
pub struct Slow {
    /// Its latency.
    pub latency: Duration,
    /// Index into the query mix.
    pub query: usize,
    /// Agents returned.
    pub returned: usize,
}

/// DiscoverAgents one call at a time.
#[derive(Clone, Debug)]
pub struct Discover {
    /// Latency and throughput.
    pub figures: Throughput,
    /// The slowest calls, slowest first.
    pub slowest: Vec<Slow>,
    /// (query index, latency) of every call.
    pub calls: Vec<(usize, Duration)>,
}

/// `queries` one at a time, after `warmup` unmeasured calls of the same mix.
pub async fn discover(
    t: &Target,
    queries: &Arc<Vec<Query>>,
    warmup: usize,
    budget: Duration,
) -> Result<Discover, String> {
    let one = &t.clients[..1];
    let call = |queries: Arc<Vec<Query>>| {
        move |mut c: Client, i: usize| {
            let request = queries[i % queries.len()].request();
            async move {
                let r = c
                    .discover_agents(request)
                    .await
                    .map_err(|s| status_text(&s))?;
                Ok(r.into_inner().agents.len())
            }
        }
    };
    let _ = drive(one, warmup, 1, budget, call(queries.clone())).await;
    let run = drive(one, queries.len(), 1, budget, call(queries.clone())).await;
    let figures = nonzero(run.throughput())?;
    let mut slowest: Vec<Slow> = run
        .done
        .iter()
        .map(|d| Slow {
            latency: d.latency,
            query: d.index,
            returned: d.value,
        })
        .collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.latency));
    slowest.truncate(10);
    let calls = run.done.iter().map(|d| (d.index, d.latency)).collect();
    Ok(Discover {
        figures,
        slowest,
        calls,
    })
}

/// How a watch workload runs.
#[derive(Copy, Clone, Debug)]
pub struct WatchPlan {
    /// Open streams.
    pub watchers: usize,
    /// Telemetry changes made, each of one agent.
    pub changes: usize,
    /// Between two changes.
    pub pace: Duration,
    /// The changes carry `total_executions` = base + change number.
    pub base: i64,
}

/// What the watchers saw.
#[derive(Clone, Debug)]
pub struct Watch {
    /// Streams that opened.
    pub open: usize,
    /// Changes acknowledged.
    pub made: usize,
    /// (watcher, change) deliveries expected: open × made.
    pub expected: usize,
    /// Deliveries seen.
    pub delivered: usize,
    /// Median change-issued → event-received latency.
    pub p50: Duration,
    /// 99th percentile of the same.
    pub p99: Duration,
    /// Server RSS growth per open stream, in bytes.
    pub bytes_per_stream: f64,
    /// Failed opens and changes, streams that ended early.
    pub failures: Failures,
}

impl Watch {
    /// Deliveries that never arrived.
    pub fn missed(&self) -> usize {
        self.expected.saturating_sub(self.delivered)
    }
}

#[derive(Default)]
struct Seen {
    latencies: Vec<(usize, Duration)>,
    ended: Option<String>,
}

/// `plan.watchers` streams, then `plan.changes` telemetry changes; latency
/// from issuing each change's Heartbeat to each watcher receiving it.
pub async fn watch(t: &Target, population: &Population, plan: WatchPlan) -> Result<Watch, String> {
    let WatchPlan {
        watchers,
        changes,
        pace,
        base,
    } = plan;
    let agents = t.registered(t.agents.len());
    if agents.is_empty() {
        return Err("no registered agent to change".into());
    }
    // Under 150 streams per connection (servers allow 256).
    let conns = connect_many(&t.server.endpoint, watchers.div_ceil(150).max(4)).await?;
    let sent: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..changes).map(|_| OnceLock::new()).collect());
    let stop = CancellationToken::new();
    let (opened_tx, mut opened_rx) = mpsc::channel::<Result<(), String>>(watchers.max(1));
    let rss_before = t.server.child.rss()?;
    let mut tasks = Vec::with_capacity(watchers);
    for w in 0..watchers {
        let mut c = conns[w % conns.len()].clone();
        let (sent, stop, opened) = (sent.clone(), stop.clone(), opened_tx.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let open = c.watch_agents(pb::WatchAgentsRequest::default());
            let mut stream = match tokio::time::timeout(Duration::from_secs(30), open).await {
                Ok(Ok(r)) => {
                    let _ = opened.send(Ok(())).await;
                    r.into_inner()
                }
                Ok(Err(s)) => {
                    let _ = opened.send(Err(status_text(&s))).await;
                    return seen;
                }
                Err(_) => {
                    let _ = opened.send(Err("open timed out (30 s)".into())).await;
                    return seen;
                }
            };
            drop(opened);
            let mut got = vec![false; changes];
            while seen.latencies.len() < changes {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = stream.message() => m,
                };
                let at = Instant::now();
                let event = match message {
                    Ok(Some(event)) => event,
                    Ok(None) => {
                        seen.ended = Some("stream ended by the server".into());
                        break;
                    }
                    Err(s) => {
                        seen.ended = Some(status_text(&s));
                        break;
                    }
                };
                let total = event
                    .agent
                    .as_ref()
                    .and_then(|a| a.telemetry.as_ref())
                    .map_or(-1, |t| t.total_executions);
                let Some(i) = total
                    .checked_sub(base)
                    .and_then(|i| usize::try_from(i).ok())
                    .filter(|&i| i < changes && !got[i])
                else {
                    continue;
                };
                got[i] = true;
                if let Some(issued) = sent[i].get() {
                    seen.latencies
                        .push((i, at.saturating_duration_since(*issued)));
                }
            }
            seen
        }));
    }
    drop(opened_tx);
    let mut failures = Failures::default();
    let mut open = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while open + failures.count < watchers {
        match tokio::time::timeout_at(deadline, opened_rx.recv()).await {
            Ok(Some(Ok(()))) => open += 1,
            Ok(Some(Err(e))) => failures.add(format!("open: {e}")),
            Ok(None) | Err(_) => break,
        }
    }
    let pending = watchers - open - failures.count;
    if pending > 0 {
        failures.count += pending;
        failures
            .first
            .get_or_insert_with(|| format!("{pending} streams not open after 90 s"));
    }
    // Let the server finish setting the streams up before weighing it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_open = t.server.child.rss()?;

    let mut client = t.clients[0].clone();
    let mut made = vec![false; changes];
    let mut ticker = tokio::time::interval(pace);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for (i, made) in made.iter_mut().enumerate() {
        ticker.tick().await;
        let (id, token, index) = agents[(i * 7919) % agents.len()].clone();
        let _ = sent[i].set(Instant::now());
        let call = client.heartbeat(pb::HeartbeatRequest {
            agent_id: id,
            registration_token: token,
            telemetry: Some(population.telemetry(index, base + i as i64)),
        });
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(_)) => *made = true,
            Ok(Err(s)) => failures.add(format!("change {i}: {}", status_text(&s))),
            Err(_) => failures.add(format!("change {i}: no answer within {CALL_TIMEOUT:?}")),
        }
    }
    // Every delivery has 10 s after the last change.
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.cancel();
        })
    };
    let mut latencies = Vec::with_capacity(open * changes);
    let mut ended = Failures::default();
    for task in tasks {
        match task.await {
            Ok(seen) => {
                latencies.extend(
                    seen.latencies
                        .into_iter()
                        .filter(|(i, _)| made[*i])
                        .map(|(_, l)| l),
                );
                if let Some(why) = seen.ended {
                    ended.add(format!("stream ended early: {why}"));
                }
            }
            Err(e) => ended.add(format!("watcher task failed: {e}")),
        }
    }
    timer.abort();
    failures.merge(ended);
    drop(conns);
    latencies.sort();
    let made = made.iter().filter(|m| **m).count();
    Ok(Watch {
        open,
        made,
        expected: open * made,
        delivered: latencies.len(),
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        bytes_per_stream: rss_open.saturating_sub(rss_before) as f64 / open.max(1) as f64,
        failures,
    })
}

/// The change history (watch resume, BEHAVIOUR.md §11): what 1 000 watchers
/// resuming after 100 missed changes cost next to 10 watchers re-snapshotting
/// the whole registry instead, and what the history holds per change.
pub async fn history_cost(
    t: &Target,
    redis_url: Option<&str>,
) -> Result<(Vec<String>, Failures), String> {
    const MISSED: usize = 100;
    const RESUMERS: usize = 1_000;
    const SNAPSHOTTERS: usize = 10;
    let clients = &t.clients;
    let agents = t.registered(MISSED + 1);
    if agents.len() <= MISSED {
        return Err(format!("needs {} registered agents", MISSED + 1));
    }
    let streams = connect_many(&t.server.endpoint, 8).await?;
    // The revision "before the cut": from the first of MISSED changes.
    let mut probe = tokio::time::timeout(
        CALL_TIMEOUT,
        streams[0]
            .clone()
            .watch_agents(pb::WatchAgentsRequest::default()),
    )
    .await
    .map_err(|_| "watch: timed out".to_owned())?
    .map_err(|s| format!("watch: {}", status_text(&s)))?
    .into_inner();
    let mut start = None;
    for (i, (id, token, _)) in agents.iter().enumerate() {
        let mut client = clients[i % clients.len()].clone();
        let call = client.heartbeat(pb::HeartbeatRequest {
            agent_id: id.clone(),
            registration_token: token.clone(),
            telemetry: Some(pb::AgentTelemetry {
                success_rate: 0.99,
                total_executions: 1000 + i as i64,
                ..Default::default()
            }),
        });
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| "heartbeat: timed out".to_owned())?
            .map_err(|s| format!("heartbeat: {}", status_text(&s)))?;
        if start.is_none() {
            let event = tokio::time::timeout(CALL_TIMEOUT, probe.message())
                .await
                .map_err(|_| "first event: timed out".to_owned())?
                .map_err(|s| format!("first event: {}", status_text(&s)))?
                .ok_or("watch ended")?;
            start = Some(event.revision);
        }
    }
    drop(probe);
    let start = start.unwrap_or(0);
    let began = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..RESUMERS {
        let mut c = streams[w % streams.len()].clone();
        tasks.push(tokio::spawn(async move {
            let resume = c.watch_agents(pb::WatchAgentsRequest {
                start_revision: start,
                ..Default::default()
            });
            let stream = match tokio::time::timeout(CALL_TIMEOUT, resume).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(s)) => return (0, Some(format!("resume refused: {}", status_text(&s)))),
                Err(_) => return (0, Some("resume: no answer in 10 s".to_owned())),
            };
            let mut stream = stream.into_inner();
            let mut got = 0;
            while got < MISSED {
                match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                    Ok(Ok(Some(_))) => got += 1,
                    Ok(Ok(None)) => return (got, Some("stream ended".to_owned())),
                    Ok(Err(s)) => return (got, Some(status_text(&s))),
                    Err(_) => return (got, Some("no event in 30 s".to_owned())),
                }
            }
            (got, None)
        }));
    }
    let mut replayed = 0;
    let mut short = Failures::default();
    for task in tasks {
        match task.await {
            Ok((got, why)) => {
                replayed += got;
                if let Some(why) = why {
                    short.add(why);
                }
            }
            Err(e) => short.add(e.to_string()),
        }
    }
    let resume = began.elapsed();
    let began = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..SNAPSHOTTERS {
        let mut c = streams[w % streams.len()].clone();
        tasks.push(tokio::spawn(async move {
            let open = c.watch_agents(pb::WatchAgentsRequest {
                send_initial_snapshot: true,
                ..Default::default()
            });
            let Ok(Ok(stream)) = tokio::time::timeout(CALL_TIMEOUT, open).await else {
                return 0;
            };
            let mut stream = stream.into_inner();
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
    let mut lines = vec![format!(
        "resume: {RESUMERS} watchers × {MISSED} missed changes in {:.0} ms ({replayed} of {} \
         events, {:.2} ms per watcher{}); re-snapshot of {} agents: {SNAPSHOTTERS} watchers in \
         {:.0} ms ({:.0} ms and {:.1} MB per watcher)",
        resume.as_secs_f64() * 1e3,
        RESUMERS * MISSED,
        resume.as_secs_f64() * 1e3 / RESUMERS as f64,
        short
            .first
            .as_ref()
            .map_or_else(String::new, |first| format!(
                "; {} watchers short, first: {first}",
                short.count
            )),
        t.population(),
        snapshot.as_secs_f64() * 1e3,
        snapshot.as_secs_f64() * 1e3 / SNAPSHOTTERS as f64,
        snapshot_bytes as f64 / SNAPSHOTTERS as f64 / 1e6,
    )];
    if let Some(url) = redis_url {
        let len: u64 = crate::procs::redis_cmd(url, &["XLEN", "{registry}:history"]).await?;
        let bytes: u64 = crate::procs::redis_cmd(
            url,
            &["MEMORY", "USAGE", "{registry}:history", "SAMPLES", "0"],
        )
        .await?;
        lines.push(format!(
            "Redis history: {len} changes, {:.1} MiB, {} bytes/change",
            bytes as f64 / (1 << 20) as f64,
            bytes / len.max(1)
        ));
    }
    Ok((lines, short))
}

/// A fresh Redis-backed replica against a Redis already holding the
/// registry.
#[derive(Clone, Debug)]
pub struct Load {
    /// Process start to the first answered GetAgent of `probe`.
    pub start: Duration,
    /// Agents in its view then (its `service_registry_agents_total` gauges).
    pub population: u64,
    /// Its RSS over an empty replica's, per agent, in bytes.
    pub bytes_per_agent: f64,
    /// Process start to the first WatchAgents accepted (a replica refuses
    /// new streams while it does not consider its view current).
    pub ready: Result<Duration, String>,
    /// The first refusal of a watch after the first read, if any.
    pub refused: Option<String>,
    /// Pub/sub connection cut to a new watch accepted again.
    pub resync: Result<Duration, String>,
    /// The last lines the fresh replica logged (warnings and errors).
    pub log: String,
}

/// Starts a replica of an empty registry (another key prefix, for the
/// baseline RSS), then a fresh one against the loaded registry, timing it
/// until it answers a read; then cuts its pub/sub connection (`CLIENT KILL
/// TYPE pubsub`) and times the resync.
pub async fn view_load(
    redis_url: &str,
    dir: &std::path::Path,
    probe: &str,
) -> Result<Load, String> {
    let flags = ["--store", "redis", "--redis-url", redis_url];
    let mut empty = Server::registry(
        "redis-empty",
        &[&flags[..], &["--redis-prefix", "bench-empty"]].concat(),
        dir,
    )?;
    empty.ready().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_empty = empty.child.rss()?;
    drop(empty);

    let started = Instant::now();
    let mut fresh = Server::registry("redis-fresh", &flags, dir)?;
    let mut last = String::from("never connected");
    let mut answered = None;
    while started.elapsed() < Duration::from_secs(60) {
        if let Some(why) = fresh.child.exited() {
            return Err(why);
        }
        if let Ok(mut client) = crate::load::connect(&fresh.endpoint).await {
            let get = client.get_agent(pb::GetAgentRequest {
                agent_id: probe.to_owned(),
            });
            match tokio::time::timeout(CALL_TIMEOUT, get).await {
                Ok(Ok(_)) => {
                    answered = Some((started.elapsed(), client));
                    break;
                }
                Ok(Err(s)) => last = status_text(&s),
                Err(_) => last = "GetAgent timed out".into(),
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let Some((start, mut client)) = answered else {
        return Err(format!("no answer within 60 s: {last}"));
    };
    let population = fresh.population().await?;
    let rss_loaded = fresh.child.rss()?;

    let mut refused = None;
    let mut stream = None;
    while started.elapsed() < Duration::from_secs(90) {
        let open = client.watch_agents(pb::WatchAgentsRequest::default());
        match tokio::time::timeout(CALL_TIMEOUT, open).await {
            Ok(Ok(s)) => {
                stream = Some((started.elapsed(), s.into_inner()));
                break;
            }
            Ok(Err(s)) => {
                refused.get_or_insert_with(|| {
                    format!(
                        "{} at {:.2} s",
                        status_text(&s),
                        started.elapsed().as_secs_f64()
                    )
                });
            }
            Err(_) => {
                refused.get_or_insert_with(|| "watch: no answer in 10 s".into());
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready = stream.as_ref().map(|(d, _)| *d).ok_or_else(|| {
        format!(
            "no watch accepted within 90 s of the start: {}",
            refused.clone().unwrap_or_default()
        )
    });
    let resync = async {
        let Some((_, mut old)) = stream else {
            return Err("not measured: the replica accepted no watch".to_owned());
        };
        let cut = Instant::now();
        let killed: i64 =
            crate::procs::redis_cmd(redis_url, &["CLIENT", "KILL", "TYPE", "pubsub"]).await?;
        if killed == 0 {
            return Err("CLIENT KILL TYPE pubsub killed no connection".into());
        }
        // The replica noticed once its open streams end.
        let noticed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(_)) = old.message().await {}
        });
        noticed
            .await
            .map_err(|_| "open watch still running 10 s after the cut".to_owned())?;
        while cut.elapsed() < Duration::from_secs(30) {
            let open = client.watch_agents(pb::WatchAgentsRequest::default());
            if let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, open).await {
                return Ok(cut.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err("no watch accepted within 30 s of the cut".into())
    }
    .await;
    Ok(Load {
        start,
        population,
        bytes_per_agent: rss_loaded.saturating_sub(rss_empty) as f64 / population.max(1) as f64,
        ready,
        refused,
        resync,
        log: fresh.child.log_tail(4),
    })
}
