//! The view's index: every agent by id, by capability, by namespace (and
//! capability within it), in list order, and per status in rank order.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use crate::domain::{
    Agent, AgentId, AgentType, Revision, Status,
    query::{DiscoverQuery, ListKey, RankKey, list_key},
};

#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) revision: Revision,
    pub(super) agents: HashMap<AgentId, Arc<Agent>>,
    pub(super) by_capability: HashMap<String, HashSet<AgentId>>,
    pub(super) by_list_order: BTreeMap<ListKey, Arc<Agent>>,
    /// Per status, every agent in RANKED order: a ranked discover walks its
    /// status's partition and stops after `max_results` matches.
    pub(super) by_rank: [BTreeMap<RankKey, Arc<Agent>>; 3],
    /// Agents per (type, status), for the population gauges.
    pub(super) population: HashMap<(AgentType, Status), usize>,
    /// Per namespace, its agents, also by capability: a query filtered by
    /// namespace walks the smallest set inside it (two popular
    /// capabilities within one namespace were the discover tail).
    pub(super) by_namespace: HashMap<String, Namespace>,
}

/// One namespace's agents.
#[derive(Debug, Default)]
pub(super) struct Namespace {
    all: HashSet<AgentId>,
    by_capability: HashMap<String, HashSet<AgentId>>,
}

/// A ranked discover whose smallest capability set is at most this big
/// scans that set instead of walking the rank order.
const SCAN_BELOW: usize = 256;

// === impl Index ===

pub(super) fn rank_slot(status: Status) -> usize {
    match status {
        Status::Healthy => 0,
        Status::Unhealthy => 1,
        Status::Degraded => 2,
    }
}

impl Index {
    pub(super) fn insert(&mut self, agent: Arc<Agent>) {
        if let Some(old) = self.agents.get(&agent.id).cloned() {
            if old.capabilities == agent.capabilities
                && old.namespace == agent.namespace
                && old.agent_type == agent.agent_type
                && old.status == agent.status
                && list_key(&old) == list_key(&agent)
            {
                // The common case (a keep-alive, a telemetry report): only
                // the rank position may move; every other index holds the
                // same key and just gets the new value.
                self.replace(&old, agent);
                return;
            }
            self.agents.remove(&agent.id);
            self.unindex(&old);
        }
        for cap in &agent.capabilities {
            self.by_capability
                .entry(cap.clone())
                .or_default()
                .insert(agent.id);
        }
        let namespace = self
            .by_namespace
            .entry(agent.namespace.clone())
            .or_default();
        namespace.all.insert(agent.id);
        for cap in &agent.capabilities {
            namespace
                .by_capability
                .entry(cap.clone())
                .or_default()
                .insert(agent.id);
        }
        self.by_list_order.insert(list_key(&agent), agent.clone());
        self.by_rank[rank_slot(agent.status)].insert(RankKey::of(&agent), agent.clone());
        *self
            .population
            .entry((agent.agent_type, agent.status))
            .or_insert(0) += 1;
        self.agents.insert(agent.id, agent);
    }

    /// Puts `agent` in the place of `old`, whose capabilities, namespace,
    /// type, status and list key are the same.
    fn replace(&mut self, old: &Agent, agent: Arc<Agent>) {
        if let Some(slot) = self.by_list_order.get_mut(&list_key(&agent)) {
            *slot = agent.clone();
        }
        let ranks = &mut self.by_rank[rank_slot(agent.status)];
        let (before, after) = (RankKey::of(old), RankKey::of(&agent));
        if before == after {
            if let Some(slot) = ranks.get_mut(&after) {
                *slot = agent.clone();
            }
        } else {
            ranks.remove(&before);
            ranks.insert(after, agent.clone());
        }
        self.agents.insert(agent.id, agent);
    }

    pub(super) fn remove(&mut self, id: AgentId) {
        if let Some(old) = self.agents.remove(&id) {
            self.unindex(&old);
        }
    }

    /// Drops `old` from every secondary index (not from `agents`).
    fn unindex(&mut self, old: &Agent) {
        for cap in &old.capabilities {
            if let Some(ids) = self.by_capability.get_mut(cap) {
                ids.remove(&old.id);
                if ids.is_empty() {
                    self.by_capability.remove(cap);
                }
            }
        }
        if let Some(namespace) = self.by_namespace.get_mut(&old.namespace) {
            namespace.all.remove(&old.id);
            for cap in &old.capabilities {
                if let Some(ids) = namespace.by_capability.get_mut(cap) {
                    ids.remove(&old.id);
                    if ids.is_empty() {
                        namespace.by_capability.remove(cap);
                    }
                }
            }
            if namespace.all.is_empty() {
                self.by_namespace.remove(&old.namespace);
            }
        }
        self.by_list_order.remove(&list_key(old));
        self.by_rank[rank_slot(old.status)].remove(&RankKey::of(old));
        if let Some(n) = self.population.get_mut(&(old.agent_type, old.status)) {
            *n = n.saturating_sub(1);
        }
    }

    /// The index sets whose intersection is every agent with all of `caps`
    /// (in `namespace`, when given), the smallest first; `None` when one of
    /// them is empty, so no agent can match.
    fn candidate_sets(
        &self,
        caps: &[String],
        namespace: Option<&str>,
    ) -> Option<(Candidates<'_>, Vec<&HashSet<AgentId>>)> {
        let (all, by_capability) = match namespace {
            Some(ns) => {
                let namespace = self.by_namespace.get(ns)?;
                (Candidates::Ids(&namespace.all), &namespace.by_capability)
            }
            None => (Candidates::All(&self.agents), &self.by_capability),
        };
        let mut sets = Vec::with_capacity(caps.len());
        for cap in caps {
            sets.push(by_capability.get(cap)?);
        }
        sets.sort_by_key(|set| set.len());
        if sets.is_empty() {
            return Some((all, sets));
        }
        // Within a namespace, every capability set lies inside it.
        let smallest = Candidates::Ids(sets.remove(0));
        Some((smallest, sets))
    }

    /// RANKED discover by walking the status partitions in rank order (for
    /// `HEALTHY`, the HEALTHY partition, then the DEGRADED fallback), when
    /// matches are dense enough for that to beat scanning the capability
    /// set. `None`: the walk would not pay off (or exceeded its budget).
    pub(super) fn discover_by_rank(
        &self,
        query: &DiscoverQuery,
        status: Status,
    ) -> Option<Vec<Arc<Agent>>> {
        let namespace = query.filter.namespace.as_deref();
        let narrowed = !query.capabilities.is_empty() || namespace.is_some();
        let set = self
            .candidate_sets(&query.capabilities, namespace)
            .map_or(0, |(smallest, _)| smallest.len());
        if narrowed && set <= SCAN_BELOW {
            return None;
        }
        // Visiting more than twice the candidate set means the matches are
        // sparse in this partition: scanning the set is cheaper.
        let budget = if narrowed {
            set.saturating_mul(2)
        } else {
            usize::MAX
        };
        let groups: &[Status] = match status {
            Status::Healthy => &[Status::Healthy, Status::Degraded],
            Status::Degraded => &[Status::Degraded],
            Status::Unhealthy => &[Status::Unhealthy],
        };
        let mut out = Vec::with_capacity(query.max_results);
        let mut visited = 0usize;
        for group in groups {
            for agent in self.by_rank[rank_slot(*group)].values() {
                if visited >= budget {
                    return None;
                }
                visited += 1;
                if agent.has_all(&query.capabilities) && query.filter.matches_except_status(agent) {
                    out.push(agent.clone());
                    if out.len() == query.max_results {
                        return Some(out);
                    }
                }
            }
        }
        Some(out)
    }

    /// Agents having every capability in `caps` (and in `namespace`, when
    /// given): walks the smallest index set, keeping the ids every other
    /// set holds (hash lookups; only the matches' records are read).
    pub(super) fn with_capabilities<'a>(
        &'a self,
        caps: &'a [String],
        namespace: Option<&str>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Agent>> + 'a> {
        match self.candidate_sets(caps, namespace) {
            None => Box::new(std::iter::empty()),
            Some((Candidates::All(agents), _)) => {
                Box::new(agents.values().filter(move |a| a.has_all(caps)))
            }
            Some((Candidates::Ids(ids), others)) => Box::new(
                ids.iter()
                    .filter(move |id| others.iter().all(|set| set.contains(*id)))
                    .filter_map(|id| self.agents.get(id)),
            ),
        }
    }
}

/// The set a query walks.
#[derive(Clone, Copy)]
enum Candidates<'a> {
    /// Every agent.
    All(&'a HashMap<AgentId, Arc<Agent>>),
    /// The agents of one index set.
    Ids(&'a HashSet<AgentId>),
}

impl Candidates<'_> {
    fn len(&self) -> usize {
        match self {
            Self::All(agents) => agents.len(),
            Self::Ids(ids) => ids.len(),
        }
    }
}
