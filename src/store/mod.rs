//! The store: the registry's source of truth. Every mutation is one atomic
//! step that checks, writes, bumps the registry-wide revision and publishes
//! the change on the feed, so the feed's order is the write order.
//!
//! Depends on: domain.

pub mod memory;
pub mod redis;

use std::{future::Future, sync::Arc};

use tokio::sync::broadcast;

use crate::domain::{
    Agent, AgentId, Change, ChangeKind, History, Millis, Notification, Result, Revision, Status,
    Telemetry, Token, TokenHash, agent::Registration, to_secs,
};

pub use self::redis::{RedisConfig, RedisStore};
pub use memory::MemoryStore;

/// Notifications kept per agent.
pub const BACKLOG_LEN: usize = 100;

/// Changes the change history keeps unless configured otherwise
/// (`--watch-history`).
pub const DEFAULT_HISTORY: usize = 100_000;
/// Bytes of notifications kept per agent (BEHAVIOUR.md §9): the oldest are
/// dropped first, the newest always stays.
pub const BACKLOG_BYTES: usize = 1024 * 1024;

/// What a store publishes, in order, to every replica's feed.
#[derive(Clone, Debug)]
pub enum FeedMessage {
    /// A change, with contiguous revisions.
    Change(Change),
    /// A notification accepted for an agent (live delivery).
    Notification(Arc<Notification>),
    /// The store's feed lost messages (e.g. a dropped subscription): the
    /// receiver must reload its state.
    Reset,
}

/// A replica's subscription to the feed. Lagging (`RecvError::Lagged`) or a
/// [`FeedMessage::Reset`] means messages were lost: reload and resubscribe.
pub type Feed = broadcast::Receiver<FeedMessage>;

pub use crate::domain::Ownership;

/// A validated Register call.
#[derive(Debug)]
pub struct RegisterCommand {
    /// What to register.
    pub registration: Registration,
    /// Register again under this id (restart, or registry data loss).
    pub agent_id: Option<AgentId>,
    /// The token the client sent with `agent_id`, if any.
    pub presented: Option<Token>,
    /// Whether re-registering a live id without a token is refused.
    pub require_token: bool,
    /// Owner key of the caller's identity: a new agent belongs to it, and
    /// it may re-register its agent without the token.
    pub caller: Option<TokenHash>,
    /// A freshly minted token, used when the agent is created without one.
    pub fresh_token: Token,
}

/// What Register did.
#[derive(Debug)]
pub struct Registered {
    /// The agent as stored.
    pub agent: Arc<Agent>,
    /// The agent's token in clear; `None` only when a live agent was
    /// re-registered without presenting it (token not required).
    pub token: Option<Token>,
    /// Revision of the change.
    pub revision: Revision,
}

/// A validated Heartbeat call.
#[derive(Copy, Clone, Debug)]
pub struct HeartbeatCommand {
    /// Whose heartbeat.
    pub agent_id: AgentId,
    /// Proof of ownership.
    pub owner: Ownership,
    /// New telemetry, if reported.
    pub telemetry: Option<Telemetry>,
}

/// What Heartbeat did.
#[derive(Debug)]
pub struct Heartbeaten {
    /// The agent's status after the heartbeat.
    pub status: Status,
    /// When it was last seen (ms).
    pub last_seen_ms: Millis,
    /// Its heartbeat timeout (s).
    pub ttl_secs: u32,
    /// Revision of the last change it made.
    pub revision: Revision,
}

impl Heartbeaten {
    /// What a heartbeat of `agent` answers, at `revision`.
    pub fn of(agent: &Agent, revision: Revision) -> Self {
        Self {
            status: agent.status,
            last_seen_ms: agent.last_seen_ms,
            ttl_secs: agent.ttl_secs,
            revision,
        }
    }

    /// `last_seen` in whole seconds, as on the wire.
    pub fn last_seen(&self) -> i64 {
        to_secs(self.last_seen_ms)
    }

    /// `expires_at` in whole seconds, as on the wire: `last_seen + ttl`.
    pub fn expires_at(&self) -> i64 {
        self.last_seen() + i64::from(self.ttl_secs)
    }
}

/// A validated NotifyAgent call.
#[derive(Clone, Debug)]
pub struct NotifyCommand {
    /// Recipient.
    pub agent_id: AgentId,
    /// Type (`INFO` by default).
    pub kind: String,
    /// Payload.
    pub message: String,
    /// Metadata.
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// What NotifyAgent did.
#[derive(Clone, Debug)]
pub struct Notified {
    /// The notification as queued (with its id).
    pub notification: Arc<Notification>,
    /// How many replicas with a live subscriber of the agent received it,
    /// when the store can tell (`None`: ask this replica's mailboxes).
    pub receivers: Option<u64>,
}

/// What a reaper pass did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Agents that turned UNHEALTHY.
    pub overdue: usize,
    /// Agents removed.
    pub expired: usize,
    /// When the next transition is due, if any agent exists.
    pub next_due: Option<Millis>,
}

pub use crate::domain::Snapshot;

/// One probe result of an agent's active check (BEHAVIOUR.md §10).
#[derive(Clone, Debug)]
pub struct ProbeCommand {
    /// The agent probed.
    pub agent_id: AgentId,
    /// Whether the probe passed.
    pub passed: bool,
    /// What it found (`HTTP 503`, `SERVING`, `timeout`).
    pub output: String,
}

/// How long a prober replica stays a member after its last announcement.
pub const PROBER_STALE_MS: Millis = 3000;

/// The registry's storage. Implementations make each method one atomic step
/// and publish its changes, in revision order, to [`Store::subscribe`]rs.
pub trait Store: Send + Sync + 'static {
    /// Registers (or re-registers) an agent.
    ///
    /// # Errors
    /// `Unauthenticated`/`PermissionDenied` re-registering a live id without
    /// or with a wrong token; `Unavailable` when the store cannot be reached.
    fn register(
        &self,
        cmd: RegisterCommand,
        now: Millis,
    ) -> impl Future<Output = Result<Registered>> + Send;

    /// Records a heartbeat.
    ///
    /// # Errors
    /// `NotFound`, then the token errors, then `Unavailable`.
    fn heartbeat(
        &self,
        cmd: HeartbeatCommand,
        now: Millis,
    ) -> impl Future<Output = Result<Heartbeaten>> + Send;

    /// Removes an agent; `None` when it did not exist.
    ///
    /// # Errors
    /// Token errors, `Unavailable`.
    fn deregister(
        &self,
        agent_id: AgentId,
        owner: Ownership,
        now: Millis,
    ) -> impl Future<Output = Result<Option<Revision>>> + Send;

    /// Applies every liveness transition due at `now`: overdue agents turn
    /// UNHEALTHY, those past the removal grace are removed. Safe to call from
    /// several replicas at once: each transition happens once.
    ///
    /// # Errors
    /// `Unavailable`.
    fn expire_due(&self, now: Millis) -> impl Future<Output = Result<Reaped>> + Send;

    /// Applies one probe result in one atomic step: the hysteresis, the
    /// deadline renewed on a pass, removal after continuous failure; emits
    /// STATUS_CHANGED, EXPIRED, or a keep-alive. `None` when the agent is
    /// gone or no longer has a check.
    ///
    /// # Errors
    /// `Unavailable`.
    fn record_probe(
        &self,
        cmd: ProbeCommand,
        now: Millis,
    ) -> impl Future<Output = Result<Option<ChangeKind>>> + Send;

    /// Announces prober replica `me` at `now` (or, with `leave`, withdraws
    /// it) and returns the ids of the live prober replicas: those announced
    /// within [`PROBER_STALE_MS`].
    ///
    /// # Errors
    /// `Unavailable`.
    fn probers(
        &self,
        me: &str,
        now: Millis,
        leave: bool,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Queues a notification in the agent's backlog and publishes it.
    ///
    /// # Errors
    /// `NotFound`, `Unavailable`.
    fn notify(
        &self,
        cmd: NotifyCommand,
        now: Millis,
    ) -> impl Future<Output = Result<Notified>> + Send;

    /// Held while this replica has a live notification subscriber of an
    /// agent; dropping it lets the store stop routing them here.
    type Interest: Send + 'static;

    /// Makes the store deliver `agent_id`'s notifications to this replica's
    /// feed while the returned value lives. Call before
    /// [`Store::open_mailbox`], so nothing falls between backlog and live.
    ///
    /// # Errors
    /// `Unavailable`.
    fn watch_mailbox(
        &self,
        agent_id: AgentId,
    ) -> impl Future<Output = Result<Self::Interest>> + Send;

    /// Whether the store answered recently and its feed is connected. While
    /// false, reads are served stale and new streams are refused.
    fn is_available(&self) -> bool;

    /// Whether the store is known to be unreachable right now: a command or
    /// the feed's connection failed, and nothing has succeeded since. False
    /// while the store is merely still connecting or loading, when callers
    /// wait for it rather than fail (BEHAVIOUR.md §7).
    fn is_down(&self) -> bool {
        !self.is_available()
    }

    /// Checks that the caller owns the agent and returns its backlog after
    /// `after` (the whole backlog when `after` is older than it).
    ///
    /// # Errors
    /// `NotFound`, token errors, `InvalidArgument` on `after_notification_id`
    /// when `after` is not an id of this agent, `Unavailable`.
    fn open_mailbox(
        &self,
        agent_id: AgentId,
        owner: Ownership,
        after: Option<u64>,
    ) -> impl Future<Output = Result<Vec<Arc<Notification>>>> + Send;

    /// Every agent and the revision they reflect.
    ///
    /// # Errors
    /// `Unavailable`.
    fn load(&self) -> impl Future<Output = Result<Snapshot>> + Send;

    /// At most `limit` changes of the change history (keep-alives are not
    /// changes) with revisions in `(after, upto]`, in order; or
    /// [`History::Compacted`] when the history no longer reaches back to
    /// `after` (BEHAVIOUR.md §11).
    ///
    /// # Errors
    /// `Unavailable`.
    fn history(
        &self,
        after: Revision,
        upto: Revision,
        limit: usize,
    ) -> impl Future<Output = Result<History>> + Send;

    /// Subscribes to the feed. Subscribe before [`Store::load`], then skip
    /// changes at or below the snapshot's revision: nothing is missed.
    ///
    /// # Errors
    /// `Unavailable`.
    fn subscribe(&self) -> impl Future<Output = Result<Feed>> + Send;
}
