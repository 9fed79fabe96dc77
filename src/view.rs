//! This replica's in-memory index of every agent, applied from the feed in
//! revision order, and the fan-out of its changes to WatchAgents streams.
//!
//! Reads (Get/List/Discover) are served from here without a store round
//! trip. Index and watcher set change together: the feed applies a change
//! and offers it to watchers under the index's write lock, and a new watcher
//! takes its snapshot and joins under the read lock, so snapshot + live
//! events have no gap and no duplicate.
//!
//! Depends on: domain, store (snapshot type), outbox.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::{
        Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

use crate::{
    domain::{
        Agent, AgentId, Change, ChangeKind, Revision,
        query::{
            AgentFilter, DiscoverQuery, ListKey, Strategy, WatchSelection, list_key,
            order_discovered,
        },
    },
    outbox::{self, Inbox, Outbox, StreamEnd},
    store::Snapshot,
};

/// Events a watcher may have queued before it counts as lagging.
pub const WATCH_QUEUE: usize = 4096;

/// Distinct round-robin queries remembered; beyond it the table starts over.
const ROUND_ROBIN_QUERIES: usize = 4096;

/// One event for a watch stream.
#[derive(Clone, Debug)]
pub struct WatchEvent {
    /// What happened (never [`ChangeKind::Touched`]).
    pub kind: ChangeKind,
    /// The agent after the change (its last state when removed).
    pub agent: Arc<Agent>,
    /// The change's revision.
    pub revision: Revision,
    /// When it happened (ms).
    pub at: i64,
}

/// A new watcher: its snapshot and its live queue.
#[derive(Debug)]
pub struct Watch {
    /// Matching agents at `revision` (empty unless a snapshot was asked for).
    pub snapshot: Vec<Arc<Agent>>,
    /// The revision the snapshot reflects; live events are all above it.
    pub revision: Revision,
    /// Live events.
    pub events: Inbox<WatchEvent>,
    /// Removes the watcher from the view when dropped.
    pub guard: WatchGuard,
}

/// Unregisters a watcher on drop, so a cancelled stream frees its slot at once.
#[derive(Debug)]
pub struct WatchGuard {
    view: Arc<View>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.view.watchers_lock().remove(&self.id);
    }
}

/// The replica's view. Cheap to share (`Arc<View>`).
#[derive(Debug)]
pub struct View {
    /// The index. Written only by the feed; std lock, never held across await.
    index: RwLock<Index>,
    /// Watch streams by id. Locked after `index` when both are needed.
    watchers: Mutex<HashMap<u64, Watcher>>,
    next_watcher: AtomicU64,
    /// Last applied revision, for read-your-writes waits.
    applied: watch::Sender<Revision>,
    /// Whether the index follows the store's feed right now (loaded, and
    /// no gap since). False at start and while the feed is lost.
    synced: watch::Sender<bool>,
    /// Round-robin position per query fingerprint.
    rotations: Mutex<HashMap<u64, u64>>,
}

#[derive(Debug, Default)]
struct Index {
    revision: Revision,
    agents: HashMap<AgentId, Arc<Agent>>,
    by_capability: HashMap<String, HashSet<AgentId>>,
    by_list_order: BTreeSet<ListKey>,
}

#[derive(Debug)]
struct Watcher {
    selection: WatchSelection,
    outbox: Outbox<WatchEvent>,
}

// === impl Index ===

impl Index {
    fn insert(&mut self, agent: Arc<Agent>) {
        if let Some(old) = self.agents.get(&agent.id).cloned() {
            if old.capabilities == agent.capabilities && old.registered_at == agent.registered_at {
                self.agents.insert(agent.id, agent);
                return;
            }
            self.remove(&old);
        }
        for cap in &agent.capabilities {
            self.by_capability
                .entry(cap.clone())
                .or_default()
                .insert(agent.id);
        }
        self.by_list_order.insert(list_key(&agent));
        self.agents.insert(agent.id, agent);
    }

    fn remove(&mut self, agent: &Agent) {
        let Some(old) = self.agents.remove(&agent.id) else {
            return;
        };
        for cap in &old.capabilities {
            if let Some(ids) = self.by_capability.get_mut(cap) {
                ids.remove(&old.id);
                if ids.is_empty() {
                    self.by_capability.remove(cap);
                }
            }
        }
        self.by_list_order.remove(&list_key(&old));
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
        let (applied, _) = watch::channel(0);
        let (synced, _) = watch::channel(false);
        Arc::new(Self {
            synced,
            index: RwLock::new(Index::default()),
            watchers: Mutex::new(HashMap::new()),
            next_watcher: AtomicU64::new(1),
            applied,
            rotations: Mutex::new(HashMap::new()),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn watchers_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Watcher>> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Number of open watch streams.
    pub fn watcher_count(&self) -> usize {
        self.watchers_lock().len()
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
        self.end_watchers(StreamEnd::FeedReset);
        drop(index);
        self.applied.send_replace(snapshot.revision);
        self.synced.send_replace(true);
    }

    /// The feed lost continuity: the index is stale until the next
    /// [`View::reset`], and every watcher is ended (it may have missed
    /// events).
    pub fn desync(&self) {
        self.synced.send_replace(false);
        self.end_watchers(StreamEnd::FeedReset);
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

    /// Ends every watch stream with `reason`.
    pub fn end_watchers(&self, reason: StreamEnd) {
        for (_, watcher) in self.watchers_lock().drain() {
            watcher.outbox.close(reason);
        }
    }

    /// Applies the next change (its revision must follow the last applied
    /// one; the feed checks) and offers it to matching watchers.
    pub fn apply(&self, change: &Change) {
        let mut index = self.write();
        let previous = index.agents.get(&change.agent.id).cloned();
        if change.kind.is_removal() {
            index.remove(&change.agent);
        } else {
            index.insert(change.agent.clone());
        }
        index.revision = change.revision;
        if change.kind != ChangeKind::Touched {
            let mut watchers = self.watchers_lock();
            watchers.retain(|_, w| {
                let before = previous.as_deref().is_some_and(|a| w.selection.matches(a));
                if !before && !w.selection.matches(&change.agent) {
                    return true;
                }
                let event = WatchEvent {
                    kind: change.kind,
                    agent: change.agent.clone(),
                    revision: change.revision,
                    at: change.at,
                };
                w.outbox.offer(event).is_ok()
            });
        }
        drop(index);
        self.applied.send_replace(change.revision);
    }

    /// Waits (at most `timeout`) until revision `rev` is applied, so a client
    /// reads its own writes on this replica. Returns whether it was.
    pub async fn wait_applied(&self, rev: Revision, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= rev)).await,
            Ok(Ok(_))
        )
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
        let mut matching = range
            .filter_map(|key| index.agents.get(&key.id))
            .filter(|a| filter.matches(a));
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
        let mut rotations = self.rotations.lock().unwrap_or_else(|p| p.into_inner());
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
    pub fn watch(self: &Arc<Self>, selection: WatchSelection, with_snapshot: bool) -> Watch {
        let (outbox, events) = outbox::channel(WATCH_QUEUE);
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
        let id = self.next_watcher.fetch_add(1, Ordering::Relaxed);
        self.watchers_lock()
            .insert(id, Watcher { selection, outbox });
        let revision = index.revision;
        drop(index);
        Watch {
            snapshot,
            revision,
            events,
            guard: WatchGuard {
                view: self.clone(),
                id,
            },
        }
    }
}
