//! Selecting and ordering agents: List/Discover filters, the ranking rule,
//! round-robin and random orders, watch selections and page tokens, all as
//! pure functions over [`Agent`]s.

use std::{cmp::Ordering, collections::BTreeMap};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use super::{Agent, AgentId, AgentType, Error, Result, Status};

/// Filters shared by ListAgents and DiscoverAgents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AgentFilter {
    /// Only this type (`None` = any).
    pub agent_type: Option<AgentType>,
    /// Exact namespace.
    pub namespace: Option<String>,
    /// Exact cluster.
    pub cluster: Option<String>,
    /// Exact version.
    pub version: Option<String>,
    /// The status filter: `Healthy` selects HEALTHY *and* DEGRADED agents
    /// (the original's "serving" meaning, BEHAVIOUR.md §4); the other two
    /// select exactly that status.
    pub status: Option<Status>,
    /// Metadata entries that must be present with these values, except
    /// [`SECURITY_LEVEL_KEY`], which an agent without it passes as
    /// [`DEFAULT_SECURITY_LEVEL`].
    pub metadata: BTreeMap<String, String>,
}

/// The metadata key of an agent's security level.
pub const SECURITY_LEVEL_KEY: &str = "security_level";

/// The security level of an agent whose metadata names none.
pub const DEFAULT_SECURITY_LEVEL: &str = "INTERNAL";

/// Whether an agent of status `actual` passes the status filter `wanted`.
pub fn status_selects(wanted: Status, actual: Status) -> bool {
    wanted == actual || (wanted == Status::Healthy && actual == Status::Degraded)
}

impl AgentFilter {
    /// Whether `agent` passes every filter.
    pub fn matches(&self, agent: &Agent) -> bool {
        self.status.is_none_or(|s| status_selects(s, agent.status))
            && self.agent_type.is_none_or(|t| t == agent.agent_type)
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| *n == agent.namespace)
            && self.matches_unindexed(agent)
    }

    /// Whether `agent` passes the filters the view does not index: cluster,
    /// version and metadata (status, type and namespace it answers with
    /// its bitmaps).
    pub fn matches_unindexed(&self, agent: &Agent) -> bool {
        self.cluster.as_ref().is_none_or(|c| *c == agent.cluster)
            && self.version.as_ref().is_none_or(|v| *v == agent.version)
            && self
                .metadata
                .iter()
                .all(|(k, v)| match agent.metadata.get(k) {
                    Some(have) => have == v,
                    None => k == SECURITY_LEVEL_KEY && v == DEFAULT_SECURITY_LEVEL,
                })
    }

    /// A stable fingerprint of the filter, bound into page tokens so a token
    /// cannot be replayed with other filters.
    fn fingerprint(&self) -> [u8; 8] {
        let mut h = Sha256::new();
        h.update([self.agent_type.map_or(0, |t| t as u8)]);
        for part in [&self.namespace, &self.cluster, &self.version] {
            match part {
                Some(s) => {
                    h.update([1]);
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
                None => h.update([0]),
            }
        }
        h.update([self.status.map_or(0, |s| s as u8)]);
        for (k, v) in &self.metadata {
            h.update((k.len() as u64).to_le_bytes());
            h.update(k.as_bytes());
            h.update((v.len() as u64).to_le_bytes());
            h.update(v.as_bytes());
        }
        let digest = h.finalize();
        let mut out = [0u8; 8];
        out.copy_from_slice(&digest[..8]);
        out
    }
}

/// A WatchAgents selection: type, ALL capabilities, namespace (empty = any).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchSelection {
    /// Only this type (`None` = any).
    pub agent_type: Option<AgentType>,
    /// The agent must have all of these.
    pub capabilities: Vec<String>,
    /// Exact namespace.
    pub namespace: Option<String>,
}

impl WatchSelection {
    /// Whether a watcher of this selection is told of `change`: when the
    /// agent matches before (`before`, when given) or after it, so a watcher
    /// also learns that an agent left its selection.
    pub fn selects(&self, change: &super::Change, before: Option<&Agent>) -> bool {
        before.is_some_and(|a| self.matches(a)) || self.matches(&change.agent)
    }

    /// Whether `agent` is in the selection.
    pub fn matches(&self, agent: &Agent) -> bool {
        self.agent_type.is_none_or(|t| t == agent.agent_type)
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| *n == agent.namespace)
            && agent.has_all(&self.capabilities)
    }
}

/// Order of DiscoverAgents results.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Best score first.
    Ranked,
    /// Rotate the order across identical queries.
    RoundRobin,
    /// Uniform random sample.
    Random,
}

/// A validated DiscoverAgents query.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DiscoverQuery {
    /// Required capabilities (ALL), deduplicated and sorted.
    pub capabilities: Vec<String>,
    /// Filters; `status` defaults to HEALTHY.
    pub filter: AgentFilter,
    /// At most this many results (1..=1000).
    pub max_results: usize,
    /// Result order.
    pub strategy: Strategy,
}

/// The ranking score: 0.5 × health + 0.5 × telemetry.
pub fn score(agent: &Agent) -> f64 {
    let health = match agent.status {
        Status::Healthy => 1.0,
        Status::Degraded => 0.5,
        Status::Unhealthy => 0.0,
    };
    let telemetry = if agent.telemetry.total_executions == 0 {
        0.5
    } else {
        agent.telemetry.success_rate
    };
    0.5 * health + 0.5 * telemetry
}

/// An agent's position in RANKED order: higher score, then lower
/// `avg_duration_ms`, then later `last_seen` (whole seconds), then `agent_id`
/// ascending. Total and deterministic; views keep agents sorted by it.
#[derive(Copy, Clone, Debug)]
pub struct RankKey {
    score: f64,
    avg_duration_ms: i64,
    last_seen: i64,
    id: AgentId,
}

impl RankKey {
    /// The key of `agent`.
    pub fn of(agent: &Agent) -> Self {
        Self {
            score: score(agent),
            avg_duration_ms: agent.telemetry.avg_duration_ms,
            last_seen: agent.last_seen(),
            id: agent.id,
        }
    }
}

impl Ord for RankKey {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.avg_duration_ms.cmp(&other.avg_duration_ms))
            .then(other.last_seen.cmp(&self.last_seen))
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for RankKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for RankKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for RankKey {}

/// RANKED order of two agents (see [`RankKey`]).
pub fn rank_order(a: &Agent, b: &Agent) -> Ordering {
    RankKey::of(a).cmp(&RankKey::of(b))
}

/// List order: `(registered_at, agent_id)`.
pub fn list_key(agent: &Agent) -> ListKey {
    ListKey {
        registered_at: agent.registered_at,
        id: agent.id,
    }
}

/// Position of an agent in List order; also what a page token resumes after.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListKey {
    /// Unix seconds of first registration.
    pub registered_at: i64,
    /// Tie-breaker.
    pub id: AgentId,
}

const PAGE_TOKEN_VERSION: u8 = 1;
const PAGE_TOKEN_LEN: usize = 1 + 8 + 16 + 8 + 4;

/// Encodes "continue after `last` with `filter`" as an opaque token. The token
/// carries a checksum, so anything the server did not hand out is refused.
pub fn encode_page_token(last: ListKey, filter: &AgentFilter) -> String {
    let mut buf = Vec::with_capacity(PAGE_TOKEN_LEN);
    buf.push(PAGE_TOKEN_VERSION);
    buf.extend_from_slice(&last.registered_at.to_be_bytes());
    buf.extend_from_slice(last.id.as_bytes());
    buf.extend_from_slice(&filter.fingerprint());
    let check = Sha256::digest(&buf);
    buf.extend_from_slice(&check[..4]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Decodes a page token produced by [`encode_page_token`] for `filter`.
///
/// # Errors
/// `InvalidArgument` on `page_token` when it is not one of ours, or was made
/// for other filters.
pub fn decode_page_token(token: &str, filter: &AgentFilter) -> Result<ListKey> {
    let bad = |reason: &str| Error::invalid("page_token", reason.to_owned());
    let buf = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad("not a page token of this server"))?;
    if buf.len() != PAGE_TOKEN_LEN || buf[0] != PAGE_TOKEN_VERSION {
        return Err(bad("not a page token of this server"));
    }
    let (body, check) = buf.split_at(PAGE_TOKEN_LEN - 4);
    if Sha256::digest(body)[..4] != *check {
        return Err(bad("not a page token of this server"));
    }
    if body[25..33] != filter.fingerprint() {
        return Err(bad("was issued for different filters"));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&body[1..9]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&body[9..25]);
    Ok(ListKey {
        registered_at: i64::from_be_bytes(ts),
        id: AgentId::from_bytes(id),
    })
}

/// Orders `candidates` (any order, all matching the query) for a discover
/// query and keeps at most `max_results`. DEGRADED agents are the fallback
/// group: every other candidate comes first, whatever the strategy, and the
/// strategy orders each group (BEHAVIOUR.md §4). `rotation` is the
/// round-robin counter of this query.
pub fn order_discovered<T: AsRef<Agent>>(
    candidates: Vec<T>,
    strategy: Strategy,
    max_results: usize,
    rotation: u64,
) -> Vec<T> {
    let (first, fallback): (Vec<T>, Vec<T>) = candidates
        .into_iter()
        .partition(|a| a.as_ref().status != Status::Degraded);
    let mut out = order_group(first, strategy, max_results, rotation);
    if out.len() < max_results {
        let room = max_results - out.len();
        out.extend(order_group(fallback, strategy, room, rotation));
    }
    out
}

/// The strategy's order of one group of candidates, at most `max_results`.
fn order_group<T: AsRef<Agent>>(
    mut candidates: Vec<T>,
    strategy: Strategy,
    max_results: usize,
    rotation: u64,
) -> Vec<T> {
    match strategy {
        Strategy::Ranked => {
            if candidates.len() > max_results {
                candidates
                    .select_nth_unstable_by(max_results, |a, b| rank_order(a.as_ref(), b.as_ref()));
                candidates.truncate(max_results);
            }
            candidates.sort_by(|a, b| rank_order(a.as_ref(), b.as_ref()));
        }
        Strategy::RoundRobin => {
            candidates.sort_by_key(|a| a.as_ref().id);
            if !candidates.is_empty() {
                let start = (rotation % candidates.len() as u64) as usize;
                candidates.rotate_left(start);
            }
            candidates.truncate(max_results);
        }
        Strategy::Random => {
            use rand::seq::SliceRandom;
            let mut rng = rand::rng();
            candidates.shuffle(&mut rng);
            candidates.truncate(max_results);
        }
    }
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Telemetry, agent::tests::registration};

    fn agent(rate: f64, total: i64, avg: i64, last_seen_ms: i64) -> Agent {
        let mut reg = registration();
        reg.telemetry = Some(Telemetry {
            success_rate: rate,
            total_executions: total,
            avg_duration_ms: avg,
            ..Telemetry::default()
        });
        Agent::create(AgentId::new_v4(), reg, last_seen_ms)
    }

    #[test]
    fn score_follows_the_formula() {
        assert_eq!(score(&agent(0.0, 0, 0, 0)), 0.75);
        assert_eq!(score(&agent(0.9, 10, 0, 0)), 0.95);
        assert_eq!(score(&agent(0.4, 10, 0, 0)), 0.45);
        assert_eq!(score(&agent(0.1, 10, 0, 0)), 0.05);
    }

    #[test]
    fn ranking_breaks_ties_by_duration_then_recency_then_id() {
        let best = agent(0.9, 10, 50, 0);
        let fast = agent(0.8, 10, 10, 0);
        let slow_recent = agent(0.8, 10, 20, 9_000);
        let slow_old = agent(0.8, 10, 20, 1_000);
        let mut all = [&slow_old, &slow_recent, &fast, &best];
        all.sort_by(|a, b| rank_order(a, b));
        let ids: Vec<_> = all.iter().map(|a| a.id).collect();
        assert_eq!(ids, vec![best.id, fast.id, slow_recent.id, slow_old.id]);
        let (a, b) = (agent(0.8, 10, 20, 1_000), agent(0.8, 10, 20, 1_999));
        let expected = a.id.min(b.id);
        let mut pair = [&a, &b];
        pair.sort_by(|x, y| rank_order(x, y));
        assert_eq!(pair[0].id, expected, "same whole second: id ascending");
    }

    #[test]
    fn ranked_keeps_the_best_max_results() {
        let agents: Vec<Agent> = (0..20)
            .map(|i| agent(f64::from(i) / 20.0, 10, 0, 0))
            .collect();
        let out = order_discovered(agents.iter().collect(), Strategy::Ranked, 3, 0);
        let rates: Vec<f64> = out.iter().map(|a| a.telemetry.success_rate).collect();
        assert_eq!(rates, vec![0.95, 0.9, 0.85]);
    }

    #[test]
    fn round_robin_rotates_by_one_per_call() {
        let agents: Vec<Agent> = (0..4).map(|_| agent(0.9, 1, 0, 0)).collect();
        let mut seen = std::collections::HashMap::new();
        for call in 0..8 {
            let out = order_discovered(agents.iter().collect(), Strategy::RoundRobin, 1, call);
            *seen.entry(out[0].id).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 4);
        assert!(seen.values().all(|n| *n == 2));
    }

    #[test]
    fn random_samples_without_repeats() {
        let agents: Vec<Agent> = (0..10).map(|_| agent(0.9, 1, 0, 0)).collect();
        let out = order_discovered(agents.iter().collect(), Strategy::Random, 5, 0);
        let mut ids: Vec<_> = out.iter().map(|a| a.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5);
    }

    #[test]
    fn filters_match_fields_and_metadata() {
        let mut reg = registration();
        reg.metadata.insert("zone", "eu");
        let a = Agent::create(AgentId::new_v4(), reg, 0);
        let mut f = AgentFilter {
            namespace: Some("default".into()),
            status: Some(Status::Healthy),
            ..AgentFilter::default()
        };
        f.metadata.insert("zone".into(), "eu".into());
        assert!(f.matches(&a));
        f.metadata.insert("rack".into(), "1".into());
        assert!(!f.matches(&a), "a missing metadata key does not match");
    }

    #[test]
    fn page_tokens_round_trip_and_bind_their_filters() {
        let key = ListKey {
            registered_at: 1_700_000_000,
            id: AgentId::new_v4(),
        };
        let f = AgentFilter::default();
        let token = encode_page_token(key, &f);
        assert_eq!(decode_page_token(&token, &f).unwrap(), key);
        let other = AgentFilter {
            namespace: Some("x".into()),
            ..AgentFilter::default()
        };
        assert!(decode_page_token(&token, &other).is_err());
        assert!(decode_page_token("garbage", &f).is_err());
        let mut tampered = token.clone().into_bytes();
        tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
        assert!(decode_page_token(&String::from_utf8(tampered).unwrap(), &f).is_err());
    }
}
