//! Live SubscribeNotifications streams of this replica, by agent. The feed
//! delivers each accepted notification here; a subscriber that cannot keep
//! up is ended (it resumes by id), never silently skipped.
//!
//! Depends on: domain, outbox.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{
    domain::{AgentId, Notification},
    outbox::{self, Inbox, Outbox, StreamEnd},
    sync,
};

/// Notifications a subscriber may have queued before it counts as lagging.
pub const SUBSCRIBER_QUEUE: usize = 256;

/// Subscriber id → its queue, for one agent.
type AgentSubscribers = HashMap<u64, Outbox<Arc<Notification>>>;

/// The subscribers of this replica.
#[derive(Debug, Default)]
pub struct Mailboxes {
    /// Agent → (subscriber id → queue). Std lock: never held across await.
    subscribers: Mutex<HashMap<AgentId, AgentSubscribers>>,
    next_id: AtomicU64,
}

/// A live subscription: its queue, and its registration (dropped = gone).
#[derive(Debug)]
pub struct Subscription {
    /// Live notifications for the agent.
    pub inbox: Inbox<Arc<Notification>>,
    /// Removes the subscriber when dropped.
    pub guard: SubscriptionGuard,
}

/// Unregisters a subscriber on drop.
#[derive(Debug)]
pub struct SubscriptionGuard {
    mailboxes: Arc<Mailboxes>,
    agent_id: AgentId,
    id: u64,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        let mut subscribers = self.mailboxes.lock();
        if let Some(agent) = subscribers.get_mut(&self.agent_id) {
            agent.remove(&self.id);
            if agent.is_empty() {
                subscribers.remove(&self.agent_id);
            }
        }
    }
}

impl Mailboxes {
    /// No subscribers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<AgentId, AgentSubscribers>> {
        sync::lock(&self.subscribers)
    }

    /// Registers a live subscriber of `agent_id`. Do this before reading the
    /// backlog, so nothing falls between the two.
    pub fn subscribe(self: &Arc<Self>, agent_id: AgentId) -> Subscription {
        let (outbox, inbox) = outbox::channel(SUBSCRIBER_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(agent_id).or_default().insert(id, outbox);
        Subscription {
            inbox,
            guard: SubscriptionGuard {
                mailboxes: self.clone(),
                agent_id,
                id,
            },
        }
    }

    /// Offers a notification to every subscriber of its agent; returns how
    /// many took it.
    pub fn deliver(&self, notification: &Arc<Notification>) -> usize {
        let mut subscribers = self.lock();
        let Some(agent) = subscribers.get_mut(&notification.agent_id) else {
            return 0;
        };
        let before = agent.len();
        agent.retain(|_, outbox| outbox.offer(notification.clone()).is_ok());
        let delivered = agent.len();
        if delivered == 0 {
            subscribers.remove(&notification.agent_id);
        }
        tracing::debug!(agent_id = %notification.agent_id, delivered, dropped = before - delivered, "notification delivered");
        delivered
    }

    /// Number of live subscribers of `agent_id` on this replica.
    pub fn subscriber_count(&self, agent_id: AgentId) -> usize {
        self.lock().get(&agent_id).map_or(0, HashMap::len)
    }

    /// Number of live subscribers of all agents on this replica.
    pub fn total(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    /// Ends every stream of `agent_id` (it was removed).
    pub fn close_agent(&self, agent_id: AgentId) {
        if let Some(agent) = self.lock().remove(&agent_id) {
            for outbox in agent.values() {
                outbox.close(StreamEnd::AgentRemoved(agent_id));
            }
        }
    }

    /// Ends every stream with `reason` (the feed was lost: they resume by id).
    pub fn close_all(&self, reason: StreamEnd) {
        for (_, agent) in self.lock().drain() {
            for outbox in agent.values() {
                outbox.close(reason);
            }
        }
    }
}
