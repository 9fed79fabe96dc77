//! This replica's in-memory index of every agent, applied from the feed in
//! revision order; the reads (Get/List/Discover) and the round-robin table.
//!
//! Reads are served from here without a store round trip. Index and
//! watchers change together: the feed applies a change and offers it to the
//! [`Hub`] under the index's write lock, and a new watcher takes its
//! snapshot and joins the hub under the read lock, so snapshot + live events
//! have no gap and no duplicate.
//!
//! Depends on: domain, hub, outbox.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::{
        Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

use crate::{
    domain::{
        Agent, AgentId, AgentType, Change, Revision, Snapshot, Status,
        query::{
            AgentFilter, DiscoverQuery, ListKey, RankKey, Strategy, WatchSelection, list_key,
            order_discovered,
        },
    },
    hub::{Hub, Watch},
    outbox::StreamEnd,
    sync,
};

/// Distinct round-robin queries remembered; beyond it the table starts over.
const ROUND_ROBIN_QUERIES: usize = 4096;

/// The replica's view. Cheap to share (`Arc<View>`).
#[derive(Debug)]
pub struct View {
    /// The index. Written only by the feed; std lock, never held across await.
    index: RwLock<Index>,
    /// The watchers the index's changes are offered to, under its lock.
    hub: Arc<Hub>,
    /// Last applied revision, for read-your-writes waits.
    applied: waiters::Waiters,
    /// Whether the index follows the store's feed right now (loaded, and
    /// no gap since). False at start and while the feed is lost.
    synced: watch::Sender<bool>,
    /// Round-robin position per query fingerprint.
    rotations: Mutex<HashMap<u64, u64>>,
    /// Set by the first [`View::reset`]: the index was loaded once.
    loaded: AtomicBool,
}

/// One entry of the capability catalog ([`View::capabilities`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapabilityUse {
    /// The capability.
    pub name: String,
    /// Agents that have it.
    pub agents: usize,
    /// Of those, the HEALTHY ones.
    pub healthy: usize,
}

#[derive(Debug, Default)]
struct Index {
    revision: Revision,
    agents: HashMap<AgentId, Arc<Agent>>,
    by_capability: HashMap<String, HashSet<AgentId>>,
    by_list_order: BTreeMap<ListKey, Arc<Agent>>,
    /// Per status, every agent in RANKED order: a ranked discover walks its
    /// status's partition and stops after `max_results` matches.
    by_rank: [BTreeMap<RankKey, Arc<Agent>>; 3],
    /// Agents per (type, status), for the population gauges.
    population: HashMap<(AgentType, Status), usize>,
}

/// A ranked discover whose smallest capability set is at most this big
/// scans that set instead of walking the rank order.
const SCAN_BELOW: usize = 256;

// === impl Index ===

fn rank_slot(status: Status) -> usize {
    match status {
        Status::Healthy => 0,
        Status::Unhealthy => 1,
        Status::Degraded => 2,
    }
}

impl Index {
    fn insert(&mut self, agent: Arc<Agent>) {
        if let Some(old) = self.agents.get(&agent.id).cloned() {
            if old.capabilities == agent.capabilities
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
        self.by_list_order.insert(list_key(&agent), agent.clone());
        self.by_rank[rank_slot(agent.status)].insert(RankKey::of(&agent), agent.clone());
        *self
            .population
            .entry((agent.agent_type, agent.status))
            .or_insert(0) += 1;
        self.agents.insert(agent.id, agent);
    }

    /// Puts `agent` in the place of `old`, whose capabilities, type, status
    /// and list key are the same.
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

    fn remove(&mut self, id: AgentId) {
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
        self.by_list_order.remove(&list_key(old));
        self.by_rank[rank_slot(old.status)].remove(&RankKey::of(old));
        if let Some(n) = self.population.get_mut(&(old.agent_type, old.status)) {
            *n = n.saturating_sub(1);
        }
    }

    /// Size of the smallest capability set of `caps` (0 when one is absent).
    fn smallest_capability_set(&self, caps: &[String]) -> usize {
        caps.iter()
            .map(|c| self.by_capability.get(c).map_or(0, HashSet::len))
            .min()
            .unwrap_or(self.agents.len())
    }

    /// RANKED discover by walking the status partitions in rank order (for
    /// `HEALTHY`, the HEALTHY partition, then the DEGRADED fallback), when
    /// matches are dense enough for that to beat scanning the capability
    /// set. `None`: the walk would not pay off (or exceeded its budget).
    fn discover_by_rank(&self, query: &DiscoverQuery, status: Status) -> Option<Vec<Arc<Agent>>> {
        let set = self.smallest_capability_set(&query.capabilities);
        if !query.capabilities.is_empty() && set <= SCAN_BELOW {
            return None;
        }
        // Visiting more than twice the capability set means the matches are
        // sparse in this partition: scanning the set is cheaper.
        let budget = if query.capabilities.is_empty() {
            usize::MAX
        } else {
            set.saturating_mul(2)
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

    /// Agents having every capability in `caps`: walks the smallest index set.
    fn with_capabilities<'a>(
        &'a self,
        caps: &'a [String],
    ) -> Box<dyn Iterator<Item = &'a Arc<Agent>> + 'a> {
        if caps.is_empty() {
            return Box::new(self.agents.values());
        }
        let mut sets = Vec::with_capacity(caps.len());
        for cap in caps {
            match self.by_capability.get(cap) {
                Some(set) => sets.push(set),
                None => return Box::new(std::iter::empty()),
            }
        }
        let smallest = sets
            .iter()
            .min_by_key(|s| s.len())
            .copied()
            .unwrap_or_else(|| sets[0]);
        Box::new(
            smallest
                .iter()
                .filter_map(|id| self.agents.get(id))
                .filter(move |a| a.has_all(caps)),
        )
    }
}

// === impl View ===

impl View {
    /// An empty view at revision 0.
    pub fn new() -> Arc<Self> {
        let (synced, _) = watch::channel(false);
        Arc::new(Self {
            synced,
            index: RwLock::new(Index::default()),
            hub: Hub::new(),
            applied: waiters::Waiters::default(),
            rotations: Mutex::new(HashMap::new()),
            loaded: AtomicBool::new(false),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        sync::read(&self.index)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        sync::write(&self.index)
    }

    /// The last revision applied.
    pub fn revision(&self) -> Revision {
        self.read().revision
    }

    /// Number of agents.
    pub fn len(&self) -> usize {
        self.read().agents.len()
    }

    /// Whether the view holds no agent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Agents per (type, status).
    pub fn population(&self) -> HashMap<(AgentType, Status), usize> {
        self.read().population.clone()
    }

    /// The capability catalog: every capability some agent has, by name,
    /// with how many agents have it and how many of those are HEALTHY.
    pub fn capabilities(&self) -> Vec<CapabilityUse> {
        let index = self.read();
        let mut catalog: Vec<CapabilityUse> = index
            .by_capability
            .iter()
            .map(|(name, ids)| CapabilityUse {
                name: name.clone(),
                agents: ids.len(),
                healthy: ids
                    .iter()
                    .filter_map(|id| index.agents.get(id))
                    .filter(|a| a.status == Status::Healthy)
                    .count(),
            })
            .collect();
        drop(index);
        catalog.sort_by(|a, b| a.name.cmp(&b.name));
        catalog
    }

    /// The hub of this view's watchers.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Replaces the whole index with `snapshot`. Every watcher is ended with
    /// [`StreamEnd::FeedReset`]: what it missed cannot be replayed.
    pub fn reset(&self, snapshot: Snapshot) {
        let mut index = self.write();
        *index = Index::default();
        index.revision = snapshot.revision;
        for agent in snapshot.agents {
            index.insert(agent);
        }
        self.hub.end_all(StreamEnd::FeedReset);
        drop(index);
        self.applied.applied(snapshot.revision);
        self.loaded.store(true, Ordering::Release);
        self.synced.send_replace(true);
    }

    /// The feed lost continuity: the index is stale until the next
    /// [`View::reset`], and every watcher is ended (it may have missed
    /// events).
    pub fn desync(&self) {
        self.synced.send_replace(false);
        self.hub.end_all(StreamEnd::FeedReset);
    }

    /// Whether the index was ever loaded from the store.
    pub fn has_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Whether the index follows the store right now.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits (at most `timeout`) until the index follows the store.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.synced.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|synced| *synced)).await,
            Ok(Ok(_))
        )
    }

    /// Applies the next change (its revision must follow the last applied
    /// one; the feed checks) and offers it to matching watchers.
    pub fn apply(&self, change: &Change) {
        let mut index = self.write();
        let previous = index.agents.get(&change.agent.id).cloned();
        if change.kind.is_removal() {
            index.remove(change.agent.id);
        } else {
            index.insert(change.agent.clone());
        }
        index.revision = change.revision;
        self.hub.offer(change, previous.as_deref());
        drop(index);
        self.applied.applied(change.revision);
    }

    /// Waits (at most `timeout`) until revision `rev` is applied, so a client
    /// reads its own writes on this replica. Returns whether it was.
    pub async fn wait_applied(&self, rev: Revision, timeout: Duration) -> bool {
        self.applied.wait(rev, timeout).await
    }

    /// Every agent with an active health check (the prober's work list).
    pub fn with_checks(&self) -> Vec<Arc<Agent>> {
        self.read()
            .agents
            .values()
            .filter(|a| a.health_check.is_some())
            .cloned()
            .collect()
    }

    /// One agent.
    pub fn get(&self, id: AgentId) -> Option<Arc<Agent>> {
        self.read().agents.get(&id).cloned()
    }

    /// Agents matching `filter` in list order after `after`, at most `limit`
    /// (all when `None`). The key of the last agent is returned when more
    /// matching agents follow.
    pub fn list(
        &self,
        filter: &AgentFilter,
        after: Option<ListKey>,
        limit: Option<usize>,
    ) -> (Vec<Arc<Agent>>, Option<ListKey>) {
        let index = self.read();
        let range = match after {
            Some(key) => index
                .by_list_order
                .range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded)),
            None => index.by_list_order.range(..),
        };
        let mut matching = range.map(|(_, agent)| agent).filter(|a| filter.matches(a));
        let limit = limit.unwrap_or(usize::MAX);
        let page: Vec<Arc<Agent>> = matching.by_ref().take(limit).cloned().collect();
        let more = matching.next().is_some();
        let next = if more {
            page.last().map(|a| list_key(a))
        } else {
            None
        };
        (page, next)
    }

    /// Agents for a discover query, ordered by its strategy.
    pub fn discover(&self, query: &DiscoverQuery) -> Vec<Arc<Agent>> {
        let rotation = match query.strategy {
            Strategy::RoundRobin => self.next_rotation(query),
            _ => 0,
        };
        let index = self.read();
        if let (Strategy::Ranked, Some(status)) = (query.strategy, query.filter.status)
            && let Some(found) = index.discover_by_rank(query, status)
        {
            return found;
        }
        let candidates: Vec<&Arc<Agent>> = index
            .with_capabilities(&query.capabilities)
            .filter(|a| query.filter.matches(a))
            .collect();
        order_discovered(candidates, query.strategy, query.max_results, rotation)
            .into_iter()
            .cloned()
            .collect()
    }

    fn next_rotation(&self, query: &DiscoverQuery) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&query.capabilities, &query.filter).hash(&mut hasher);
        let key = hasher.finish();
        let mut rotations = sync::lock(&self.rotations);
        if rotations.len() >= ROUND_ROBIN_QUERIES && !rotations.contains_key(&key) {
            rotations.clear();
        }
        let slot = rotations.entry(key).or_insert(0);
        let rotation = *slot;
        *slot = slot.wrapping_add(1);
        rotation
    }

    /// Opens a watch stream: the snapshot (when asked) and the live queue,
    /// taken atomically with respect to the feed.
    pub fn watch(&self, selection: WatchSelection, with_snapshot: bool) -> Watch {
        let index = self.read();
        let snapshot = if with_snapshot {
            let mut agents: Vec<Arc<Agent>> = index
                .with_capabilities(&selection.capabilities)
                .filter(|a| selection.matches(a))
                .cloned()
                .collect();
            agents.sort_by_key(|a| list_key(a));
            agents
        } else {
            Vec::new()
        };
        let membership = self.hub.join(selection);
        let revision = index.revision;
        drop(index);
        Watch {
            snapshot,
            revision,
            events: membership.events,
            guard: membership.guard,
        }
    }
}

#[cfg(test)]
mod tests;
mod waiters;
