//! The WatchAgents workload: delivery latency and missed events with many
//! watchers.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use agent_registry::pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    load::{CALL_TIMEOUT, Failures, connect_many, quantile, status_text},
    population::Population,
};

use crate::workloads::Target;

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
