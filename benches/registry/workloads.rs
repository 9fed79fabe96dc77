//! The workloads, each run the same way against every server.

use std::{ops::Range, sync::Arc, time::Duration};

use agent_registry::pb;

use crate::{
    load::{Client, Done, Throughput, drive, status_text},
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
    pub fn registered(&self, n: usize) -> Vec<(String, String, usize)> {
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
