//! The load generator: one client, the same for every server. Calls are
//! driven with a fixed number in flight over a few connections, each call
//! bounded in time, each run bounded in count and time.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use agent_registry::pb::service_registry_client::ServiceRegistryClient;
use tonic::transport::{Channel, Endpoint};

/// The generated client over one HTTP/2 connection.
pub type Client = ServiceRegistryClient<Channel>;

/// The longest a single call may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A new connection to `endpoint` (connect bounded to 5 s).
pub async fn connect(endpoint: &str) -> Result<Client, String> {
    let channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect {endpoint}: {e}"))?;
    Ok(Client::new(channel).max_decoding_message_size(256 << 20))
}

/// `n` connections to `endpoint`.
pub async fn connect_many(endpoint: &str, n: usize) -> Result<Vec<Client>, String> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(connect(endpoint).await?);
    }
    Ok(clients)
}

/// A gRPC status as one short line.
pub fn status_text(status: &tonic::Status) -> String {
    let message: String = status.message().chars().take(200).collect();
    format!("{:?}: {message}", status.code())
}

/// One call that succeeded.
pub struct Done<T> {
    /// Which call (0-based).
    pub index: usize,
    /// Issue to answer.
    pub latency: Duration,
    /// What the call returned.
    pub value: T,
}

/// Failed calls of a run: how many, and the first one's error.
#[derive(Clone, Debug, Default)]
pub struct Failures {
    /// Calls that failed or timed out.
    pub count: usize,
    /// The first error seen.
    pub first: Option<String>,
}

impl Failures {
    /// Counts one failure.
    pub fn add(&mut self, error: String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(error);
        }
    }

    /// Adds another run's failures.
    pub fn merge(&mut self, other: Failures) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// The outcome of [`drive`].
pub struct Run<T> {
    /// First call issued to last answer.
    pub elapsed: Duration,
    /// Successful calls, in no particular order.
    pub done: Vec<Done<T>>,
    /// Failed calls.
    pub failures: Failures,
    /// Calls never issued because the time bound was reached.
    pub skipped: usize,
}

/// Runs `total` calls `op(client, i)` with `concurrency` in flight over
/// `clients`; stops issuing new calls once `budget` has passed.
pub async fn drive<T, F, Fut>(
    clients: &[Client],
    total: usize,
    concurrency: usize,
    budget: Duration,
    op: F,
) -> Run<T>
where
    T: Send + 'static,
    F: Fn(Client, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, String>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency.max(1) {
        let client = clients[worker % clients.len()].clone();
        let (op, next) = (op.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut failures = Failures::default();
            loop {
                if start.elapsed() >= budget {
                    break;
                }
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let issued = Instant::now();
                match tokio::time::timeout(CALL_TIMEOUT, op(client.clone(), index)).await {
                    Ok(Ok(value)) => done.push(Done {
                        index,
                        latency: issued.elapsed(),
                        value,
                    }),
                    Ok(Err(e)) => failures.add(e),
                    Err(_) => failures.add(format!("no answer within {CALL_TIMEOUT:?}")),
                }
            }
            (done, failures)
        }));
    }
    let mut run = Run {
        elapsed: Duration::ZERO,
        done: Vec::with_capacity(total),
        failures: Failures::default(),
        skipped: 0,
    };
    for worker in workers {
        match worker.await {
            Ok((done, failures)) => {
                run.done.extend(done);
                run.failures.merge(failures);
            }
            Err(e) => run.failures.add(format!("load task failed: {e}")),
        }
    }
    run.elapsed = start.elapsed();
    run.skipped = total.saturating_sub(run.done.len() + run.failures.count);
    run
}

/// The `p` quantile (0..=1) of sorted latencies.
pub fn quantile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Throughput and latency of a driven run.
#[derive(Clone, Debug)]
pub struct Throughput {
    /// Successful calls.
    pub calls: usize,
    /// Successful calls per second.
    pub per_second: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Failed calls.
    pub failures: Failures,
    /// Calls not issued (time bound).
    pub skipped: usize,
    /// Wall time of the run(s).
    pub elapsed: Duration,
    /// Every successful call's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl Throughput {
    fn from_parts(
        mut latencies: Vec<Duration>,
        elapsed: Duration,
        failures: Failures,
        skipped: usize,
    ) -> Self {
        latencies.sort();
        Self {
            calls: latencies.len(),
            per_second: latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50: quantile(&latencies, 0.50),
            p99: quantile(&latencies, 0.99),
            failures,
            skipped,
            elapsed,
            latencies,
        }
    }

    /// Several rounds as one: every call over the rounds' summed time.
    pub fn combine(rounds: Vec<Throughput>) -> Option<Throughput> {
        if rounds.is_empty() {
            return None;
        }
        let mut latencies = Vec::new();
        let mut elapsed = Duration::ZERO;
        let mut failures = Failures::default();
        let mut skipped = 0;
        for r in rounds {
            latencies.extend(r.latencies);
            elapsed += r.elapsed;
            failures.merge(r.failures);
            skipped += r.skipped;
        }
        Some(Self::from_parts(latencies, elapsed, failures, skipped))
    }
}

impl<T> Run<T> {
    /// The run's figures.
    pub fn throughput(&self) -> Throughput {
        Throughput::from_parts(
            self.done.iter().map(|d| d.latency).collect(),
            self.elapsed,
            self.failures.clone(),
            self.skipped,
        )
    }
}
