//! The registered agents and the discover queries: generated from fixed
//! seeds, so every server sees the same agents and the same queries.
//!
//! Capabilities and namespaces have a skewed (Zipf-like) popularity: a few
//! are on most agents, most are rare. Agents are HEALTHY (65 %), DEGRADED
//! (30 %) or UNHEALTHY (5 %) by their telemetry, so queries on rare
//! capabilities fall back to DEGRADED agents (BEHAVIOUR.md §4).

use std::collections::HashMap;

use agent_registry::pb;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Distinct capabilities.
pub const CAPABILITIES: usize = 200;
/// Distinct namespaces.
pub const NAMESPACES: usize = 20;
/// `max_results` of every discover query.
pub const MAX_RESULTS: i32 = 5;

/// Samples 0..n with weight 1 / (k + 1)^s.
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    /// Weights for `n` ranks with exponent `s`.
    pub fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|k| {
                total += 1.0 / ((k + 1) as f64).powf(s);
                total
            })
            .collect();
        Self { cumulative }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut StdRng) -> usize {
        let last = self.cumulative.last().copied().unwrap_or(1.0);
        let x = rng.random::<f64>() * last;
        self.cumulative
            .partition_point(|&c| c < x)
            .min(self.cumulative.len() - 1)
    }
}

/// How the registry will classify an agent (from its success rate).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// Success rate ≥ 0.5.
    Healthy,
    /// 0.3 ≤ success rate < 0.5: the discover fallback.
    Degraded,
    /// Success rate < 0.3: never discovered (status defaults to HEALTHY).
    Unhealthy,
}

/// One agent as the bench registers it.
pub struct Spec {
    /// Capability ranks (distinct).
    pub caps: Vec<u16>,
    /// Namespace rank.
    pub namespace: u8,
    /// Telemetry success rate.
    pub success_rate: f64,
    /// What the registry will make of it.
    pub class: Class,
}

/// Every agent of the run, by index.
pub struct Population {
    /// Agent `i` is `specs[i]`.
    pub specs: Vec<Spec>,
}

/// Capability of popularity rank `k` (0 = most popular).
pub fn capability(k: u16) -> String {
    format!("cap-{k:03}")
}

/// Namespace of popularity rank `n`.
pub fn namespace(n: u8) -> String {
    format!("ns-{n:02}")
}

const AGENT_TYPES: [pb::AgentType; 4] = [
    pb::AgentType::Worker,
    pb::AgentType::Scout,
    pb::AgentType::Guard,
    pb::AgentType::Analyst,
];

impl Population {
    /// `n` agents from `seed`.
    pub fn generate(n: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let caps = Zipf::new(CAPABILITIES, 1.1);
        let namespaces = Zipf::new(NAMESPACES, 0.8);
        let specs = (0..n)
            .map(|_| {
                let want = rng.random_range(1..=3);
                let mut picked: Vec<u16> = Vec::with_capacity(want);
                for _ in 0..want * 4 {
                    if picked.len() == want {
                        break;
                    }
                    let c = caps.sample(&mut rng) as u16;
                    if !picked.contains(&c) {
                        picked.push(c);
                    }
                }
                let roll = rng.random::<f64>();
                let (class, success_rate) = if roll < 0.65 {
                    (Class::Healthy, rng.random_range(0.5..1.0))
                } else if roll < 0.95 {
                    (Class::Degraded, rng.random_range(0.3..0.5))
                } else {
                    (Class::Unhealthy, rng.random_range(0.0..0.3))
                };
                Spec {
                    caps: picked,
                    namespace: namespaces.sample(&mut rng) as u8,
                    success_rate,
                    class,
                }
            })
            .collect();
        Self { specs }
    }

    /// The Register call of agent `i`.
    pub fn register_request(&self, i: usize) -> pb::RegisterRequest {
        let spec = &self.specs[i];
        let total = 100 + (i as i64 * 37) % 10_000;
        pb::RegisterRequest {
            agent_type: AGENT_TYPES[i % AGENT_TYPES.len()] as i32,
            capabilities: spec.caps.iter().map(|&c| capability(c)).collect(),
            metadata: HashMap::from([
                ("zone".to_owned(), format!("zone-{}", i % 3)),
                ("build".to_owned(), format!("2026.12.{}", i % 28)),
            ]),
            namespace: namespace(spec.namespace),
            cluster: "local".into(),
            version: "1.4.2".into(),
            telemetry: Some(self.telemetry(i, total)),
            endpoint: format!("127.0.0.1:{}", 20_000 + i % 10_000),
            ttl_seconds: 3600,
            ..Default::default()
        }
    }

    /// Agent `i`'s telemetry with `total` executions (its status unchanged).
    pub fn telemetry(&self, i: usize, total: i64) -> pb::AgentTelemetry {
        let rate = self.specs[i].success_rate;
        pb::AgentTelemetry {
            success_rate: rate,
            avg_duration_ms: 20 + (i as i64 % 500),
            total_executions: total,
            failed_executions: ((1.0 - rate) * total as f64).floor() as i64,
            last_execution_at: 0,
        }
    }

    /// Agents matching `query` among the first `registered`: (HEALTHY,
    /// DEGRADED).
    pub fn matches(&self, query: &Query, registered: usize) -> (usize, usize) {
        let mut counts = (0, 0);
        for spec in self.specs.iter().take(registered) {
            let hit = query.caps.iter().all(|c| spec.caps.contains(c))
                && query.namespace.is_none_or(|n| n == spec.namespace);
            match (hit, spec.class) {
                (true, Class::Healthy) => counts.0 += 1,
                (true, Class::Degraded) => counts.1 += 1,
                _ => {}
            }
        }
        counts
    }
}

/// One DiscoverAgents call of the mix.
#[derive(Clone, Debug)]
pub struct Query {
    /// One or two capability ranks.
    pub caps: Vec<u16>,
    /// Namespace filter, or none.
    pub namespace: Option<u8>,
}

impl Query {
    /// `n` queries from `seed`: one capability (60 %) or two, by the same
    /// popularity as the agents'; a namespace filter half the time.
    pub fn mix(n: usize, seed: u64) -> Vec<Query> {
        let mut rng = StdRng::seed_from_u64(seed);
        let caps = Zipf::new(CAPABILITIES, 1.1);
        let namespaces = Zipf::new(NAMESPACES, 0.8);
        (0..n)
            .map(|_| {
                let first = caps.sample(&mut rng) as u16;
                let mut picked = vec![first];
                if rng.random_bool(0.4) {
                    for _ in 0..8 {
                        let c = caps.sample(&mut rng) as u16;
                        if c != first {
                            picked.push(c);
                            break;
                        }
                    }
                }
                let namespace = rng
                    .random_bool(0.5)
                    .then(|| namespaces.sample(&mut rng) as u8);
                Query {
                    caps: picked,
                    namespace,
                }
            })
            .collect()
    }

    /// The request.
    pub fn request(&self) -> pb::DiscoverRequest {
        pb::DiscoverRequest {
            capabilities: self.caps.iter().map(|&c| capability(c)).collect(),
            filters: self
                .namespace
                .map(|n| HashMap::from([("namespace".to_owned(), namespace(n))]))
                .unwrap_or_default(),
            max_results: MAX_RESULTS,
            ..Default::default()
        }
    }

    /// `cap-001 + cap-017, namespace ns-03`.
    pub fn describe(&self) -> String {
        let caps: Vec<String> = self.caps.iter().map(|&c| capability(c)).collect();
        match self.namespace {
            Some(n) => format!("{} · namespace {}", caps.join(" + "), namespace(n)),
            None => caps.join(" + "),
        }
    }
}
