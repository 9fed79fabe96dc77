//! The fan-out of changes to WatchAgents streams: every open watch, its
//! selection and its bounded queue.
//!
//! The view feeds the hub under the lock it applies changes under, and a new
//! watcher joins under the view's read lock while the snapshot is taken, so
//! snapshot + live events have no gap and no duplicate. A watcher whose queue
//! is full is ended with [`StreamEnd::Lagged`] (never silently skipped).
//! [`Change`]s travel as they are: the agent is shared, not copied.
//!
//! Depends on: domain, outbox.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{
    domain::{Agent, Change, ChangeKind, query::WatchSelection},
    outbox::{self, Inbox, Outbox, StreamEnd},
    sync,
};

/// Events a watcher may have queued before it counts as lagging.
pub const WATCH_QUEUE: usize = 4096;

/// Every open watch of this replica. Cheap to share (`Arc<Hub>`).
#[derive(Debug, Default)]
pub struct Hub {
    /// Watch streams by id. Locked after the view's index when both are
    /// held.
    watchers: Mutex<HashMap<u64, Watcher>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Watcher {
    selection: WatchSelection,
    outbox: Outbox<Change>,
}

/// A watcher's side of the hub: its live queue and its membership.
#[derive(Debug)]
pub struct Membership {
    /// Live changes, in revision order.
    pub events: Inbox<Change>,
    /// Leaves the hub when dropped.
    pub guard: WatchGuard,
}

/// A new watch: the snapshot the view took (when asked for) and the hub
/// membership it joined at the same revision.
#[derive(Debug)]
pub struct Watch {
    /// Matching agents at `revision` (empty unless a snapshot was asked for).
    pub snapshot: Vec<Arc<Agent>>,
    /// The revision the snapshot reflects; live events are all above it.
    pub revision: crate::domain::Revision,
    /// Live changes.
    pub events: Inbox<Change>,
    /// Leaves the hub when dropped.
    pub guard: WatchGuard,
}

/// Removes a watcher on drop, so a cancelled stream frees its slot at once.
#[derive(Debug)]
pub struct WatchGuard {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        sync::lock(&self.hub.watchers).remove(&self.id);
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            watchers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        })
    }

    /// Adds a watcher of `selection`. Call it under the view's read lock,
    /// so no change is applied between the snapshot and the join.
    pub fn join(self: &Arc<Self>, selection: WatchSelection) -> Membership {
        let (outbox, events) = outbox::channel(WATCH_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        sync::lock(&self.watchers).insert(id, Watcher { selection, outbox });
        Membership {
            events,
            guard: WatchGuard {
                hub: self.clone(),
                id,
            },
        }
    }

    /// Offers `change` to every watcher whose selection matches the agent
    /// before (`previous`) or after it: a watcher also learns that an agent
    /// left its selection. Keep-alives are never offered. Watchers that are
    /// gone or lagging are dropped.
    pub fn offer(&self, change: &Change, previous: Option<&Agent>) {
        if change.kind == ChangeKind::Touched {
            return;
        }
        sync::lock(&self.watchers).retain(|_, w| {
            !w.selection.selects(change, previous) || w.outbox.offer(change.clone()).is_ok()
        });
    }

    /// Ends every watch stream with `reason`.
    pub fn end_all(&self, reason: StreamEnd) {
        for (_, watcher) in sync::lock(&self.watchers).drain() {
            watcher.outbox.close(reason);
        }
    }

    /// Number of open watch streams.
    pub fn len(&self) -> usize {
        sync::lock(&self.watchers).len()
    }

    /// Whether no watch stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::domain::{AgentId, AgentType, Status, agent::Registration};

    fn agent(namespace: &str) -> Arc<Agent> {
        let reg = Registration {
            agent_type: AgentType::Worker,
            capabilities: vec!["a".into()],
            metadata: crate::domain::Labels::new(),
            namespace: namespace.into(),
            cluster: "local".into(),
            version: "1.0.0".into(),
            endpoint: Default::default(),
            telemetry: None,
            ttl_secs: 60,
            health_check: None,
        };
        Arc::new(Agent::create(AgentId::new_v4(), reg, 0))
    }

    fn change(revision: u64, kind: ChangeKind, agent: &Arc<Agent>) -> Change {
        Change {
            revision,
            kind,
            agent: agent.clone(),
            at: 0,
        }
    }

    #[tokio::test]
    async fn watchers_see_agents_entering_and_leaving_their_selection() {
        let hub = Hub::new();
        let mut blue = hub.join(WatchSelection {
            namespace: Some("blue".into()),
            ..WatchSelection::default()
        });
        let inside = agent("blue");
        let outside = agent("red");
        hub.offer(&change(1, ChangeKind::Registered, &outside), None);
        hub.offer(&change(2, ChangeKind::Registered, &inside), None);
        // The agent moves out of the selection: still told.
        hub.offer(&change(3, ChangeKind::Updated, &outside), Some(&inside));
        hub.offer(
            &change(
                4,
                ChangeKind::StatusChanged {
                    previous: Status::Healthy,
                },
                &inside,
            ),
            Some(&inside),
        );
        hub.offer(&change(5, ChangeKind::Touched, &inside), Some(&inside));
        let revisions: Vec<u64> = [
            blue.events.recv().await,
            blue.events.recv().await,
            blue.events.recv().await,
        ]
        .into_iter()
        .map(|c| c.unwrap().revision)
        .collect();
        assert_eq!(revisions, vec![2, 3, 4]);
        assert_eq!(hub.len(), 1);
        drop(blue);
        assert!(hub.is_empty(), "a dropped watcher leaves at once");
    }

    #[tokio::test]
    async fn ending_all_tells_each_watcher_why() {
        let hub = Hub::new();
        let mut w = hub.join(WatchSelection::default());
        hub.end_all(StreamEnd::FeedReset);
        assert_eq!(w.events.recv().await.unwrap_err(), StreamEnd::FeedReset);
        assert!(hub.is_empty());
    }
}
