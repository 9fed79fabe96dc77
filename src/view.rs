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
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{
        Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

use self::index::Index;
use crate::{
    domain::{
        Agent, AgentId, AgentType, Change, Revision, Snapshot, Status,
        query::{
            AgentFilter, DiscoverQuery, ListKey, Strategy, WatchSelection, list_key,
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
        self.read().len()
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
            .capability_counts()
            .map(|c| CapabilityUse {
                name: c.name.to_owned(),
                agents: usize::try_from(c.agents).unwrap_or(usize::MAX),
                healthy: usize::try_from(c.healthy).unwrap_or(usize::MAX),
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
        let previous = index.get(&change.agent.id).cloned();
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
        self.read().with_checks().cloned().collect()
    }

    /// One agent.
    pub fn get(&self, id: AgentId) -> Option<Arc<Agent>> {
        self.read().get(&id).cloned()
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
        if let (Strategy::Ranked, Some(status)) = (query.strategy, query.filter.status) {
            return index.discover_ranked(query, status);
        }
        let candidates: Vec<&Arc<Agent>> = index
            .with_capabilities(&query.capabilities, query.filter.namespace.as_deref())
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
                .with_capabilities(&selection.capabilities, None)
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

mod index;
#[cfg(test)]
mod tests;
mod waiters;
