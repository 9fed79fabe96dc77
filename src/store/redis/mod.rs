//! The Redis store: the registry's state shared by every replica.
//!
//! Every mutation is ONE round trip: a Lua script that checks, writes, bumps
//! the revision, updates the deadline zset and publishes the change, all in
//! one atomic step ([`scripts`]). Commands go through the connection layer
//! ([`topology`]: one Redis by URL, Sentinel or Cluster) with bounded waits,
//! and each call is cut off after [`COMMAND_TIMEOUT`], so a dead or stalled
//! Redis yields `Unavailable` quickly instead of a hang. The one pub/sub
//! connection per replica lives in [`listener`].
//!
//! Depends on: domain, store (trait), redis, deadpool-redis.

mod codec;
pub mod keys;
mod listener;
mod probes;
mod reads;
mod reply;
mod scripts;
pub mod topology;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use self::{
    keys::Keys,
    listener::Listener,
    reply::{
        agent_of, bytes, caller_arg, check, classify, flag, int, internal, items, token_arg,
        unavailable,
    },
    scripts::Call,
    scripts::Scripts,
    topology::{Durability, Topology},
};
use super::{
    BACKLOG_BYTES, BACKLOG_LEN, Feed, FeedMessage, HeartbeatCommand, Heartbeaten, Notified,
    NotifyCommand, Ownership, ProbeCommand, Reaped, RegisterCommand, Registered, Snapshot, Store,
};
use crate::domain::{
    AgentId, ChangeKind, Error, History, Millis, Notification, Result, Revision, Status, Telemetry,
    error_chain,
};

pub use listener::MailboxInterest;
pub use topology::{Endpoints, SentinelEndpoints};

/// Longest a store call may take, pool wait included: writes fail with
/// `Unavailable` well within the 2 s the contract allows.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long loading a full snapshot (view resync) may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a caller may wait for a pooled connection.
pub(crate) const POOL_WAIT: Duration = Duration::from_millis(500);
/// Connections in the pool.
pub(crate) const POOL_SIZE: usize = 32;
/// Messages the in-process feed buffers per consumer before it lags.
const FEED_CAPACITY: usize = 16 * 1024;
/// Transitions one reaper pass applies at most (more: the next pass follows).
const REAP_BATCH: usize = 1000;
/// A silence of the reapers longer than this means heartbeats could not be
/// recorded: deadlines move back by its length (outage fencing). Reapers run
/// every 250 ms, so this is four missed passes.
const FENCING_THRESHOLD_MS: i64 = 1000;
/// Redis expiry of a record beyond its removal time: the safety net that
/// drops records when no replica runs for this long.
const SAFETY_NET_MS: i64 = 24 * 3600 * 1000;

/// Every pooled connection stayed busy for the whole pool wait: the
/// replica is saturated; Redis is not known to be unreachable.
#[derive(Debug, thiserror::Error)]
#[error("every Redis connection of this replica is busy")]
pub(crate) struct PoolBusy;

/// Settings of the Redis store.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// Where Redis is: a URL, Sentinels or cluster seeds.
    pub endpoints: Endpoints,
    /// Replicas that must hold an acknowledged write (Redis `WAIT`; 0 =
    /// none).
    pub wait_replicas: u32,
    /// Key prefix (inside the hash tag).
    pub prefix: String,
    /// How long an overdue agent stays listed.
    pub removal_grace: Duration,
    /// Changes the change history keeps (`--watch-history`; 0 = none).
    pub history: usize,
}

/// The Redis-backed store.
#[derive(Debug)]
pub struct RedisStore {
    /// The connections to the primary, whatever the topology.
    topology: Arc<Topology>,
    keys: Keys,
    scripts: Scripts,
    listener: Arc<Listener>,
    feed: broadcast::Sender<FeedMessage>,
    grace_ms: i64,
    /// Changes the history keeps.
    history_cap: usize,
    /// Whether the last command reached Redis.
    commands_ok: AtomicBool,
    /// Whether the last command failed to reach Redis (both flags are false
    /// before the first command: not known yet).
    commands_failed: AtomicBool,
    /// The highest revision this replica has seen (replies, feed,
    /// snapshots); passed to every script as a floor, so revisions never go
    /// backwards even if Redis comes back from an older snapshot.
    highest: Arc<AtomicU64>,
}

// Short names for the store's two failure kinds (built by the domain).
impl RedisStore {
    /// A store for `config`. Connects lazily: a Redis that is down now only
    /// makes the store unavailable until it answers.
    ///
    /// # Errors
    /// When an address cannot be parsed.
    pub fn new(config: &RedisConfig) -> std::result::Result<Self, redis::RedisError> {
        // redis-rs cuts every reply at 500 ms by default; our own bound is
        // COMMAND_TIMEOUT for the whole call, pool wait included.
        let topology = Arc::new(Topology::new(
            config.endpoints.clone(),
            config.wait_replicas,
            COMMAND_TIMEOUT,
        )?);
        let keys = Keys::new(&config.prefix);
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let highest = Arc::new(AtomicU64::new(0));
        let listener = Listener::new(
            topology.clone(),
            keys.clone(),
            feed.clone(),
            highest.clone(),
        );
        Ok(Self {
            topology,
            keys,
            scripts: Scripts::new(),
            listener,
            feed,
            grace_ms: i64::try_from(config.removal_grace.as_millis()).unwrap_or(i64::MAX / 4),
            history_cap: config.history,
            commands_ok: AtomicBool::new(false),
            commands_failed: AtomicBool::new(false),
            highest,
        })
    }

    /// The pub/sub listener task (and, on Sentinel, the one that hears of
    /// a new primary); the server spawns it next to the others.
    pub fn run_listener(
        &self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let listener = self.listener.clone().run(shutdown.clone());
        let announcements = self.topology.clone().run_announcements(shutdown);
        async move {
            tokio::join!(listener, announcements);
        }
    }

    fn floor(&self) -> u64 {
        self.highest.load(Ordering::Acquire)
    }

    fn saw(&self, revision: Revision) {
        self.highest.fetch_max(revision, Ordering::AcqRel);
    }

    /// Runs one script invocation that no client is told about, bounded
    /// by [`COMMAND_TIMEOUT`].
    async fn invoke(&self, invocation: Call<'_>) -> Result<Value> {
        self.invoke_with(invocation, Durability::Plain).await
    }

    /// Runs one client-acknowledged write (it waits for replicas when
    /// configured), bounded by [`COMMAND_TIMEOUT`].
    async fn invoke_write(&self, invocation: Call<'_>) -> Result<Value> {
        self.invoke_with(invocation, Durability::Acknowledged).await
    }

    async fn invoke_with(&self, invocation: Call<'_>, durability: Durability) -> Result<Value> {
        let call = self.topology.run(&invocation, durability);
        let result = match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err(unavailable("Redis did not answer in time")),
        };
        self.note_reachability(&result);
        result
    }

    /// Records whether a command reached Redis, and logs when that changes.
    /// A call that only found every pooled connection busy says nothing
    /// about Redis (this replica is saturated): it changes nothing, so a
    /// burst of callers cannot make the replica refuse everything else.
    fn note_reachability<T>(&self, result: &Result<T>) {
        if let Err(Error::Unavailable { source }) = result
            && source.is::<PoolBusy>()
        {
            return;
        }
        let reachable = !matches!(result, Err(Error::Unavailable { .. }));
        self.commands_failed.store(!reachable, Ordering::Release);
        let was = self.commands_ok.swap(reachable, Ordering::AcqRel);
        if was != reachable {
            if reachable {
                tracing::info!("Redis reachable");
            } else if let Err(error) = result {
                tracing::warn!(error = %error_chain(error), "Redis unreachable");
            }
        }
    }
}

impl Store for RedisStore {
    async fn register(&self, cmd: RegisterCommand, now: Millis) -> Result<Registered> {
        let tel = cmd
            .registration
            .telemetry
            .map(|t| codec::encode_telemetry(&t))
            .unwrap_or_default();
        let tst = cmd.registration.telemetry.map_or(1, |t| t.status() as i32);
        let reg = codec::encode_registration(&cmd.registration);
        let presented = cmd
            .presented
            .as_ref()
            .map(|t| codec::encode_token(&t.hash()))
            .unwrap_or_default();
        let fresh = codec::encode_token(&cmd.fresh_token.hash());
        let safety = SAFETY_NET_MS + self.grace_ms;
        let zero_tel = codec::encode_telemetry(&Telemetry::default());
        let check_rule = cmd
            .registration
            .health_check
            .as_ref()
            .map(|c| c.script_params())
            .unwrap_or_default();
        loop {
            let (id, mode) = match cmd.agent_id {
                Some(id) => (id, "id"),
                None => (AgentId::new_v4(), "new"),
            };
            let mut invocation = self.scripts.register.prepare_invoke();
            invocation
                .key(self.keys.agent(id))
                .key(self.keys.due())
                .key(self.keys.revision())
                .key(self.keys.agents())
                .key(self.keys.shift())
                .key(self.keys.history())
                .key(self.keys.history_floor())
                .arg(id.to_string())
                .arg(now)
                .arg(mode)
                .arg(reg.as_slice())
                .arg(tel.as_str())
                .arg(tst)
                .arg(cmd.registration.ttl_secs)
                .arg(presented.as_str())
                .arg(flag(cmd.require_token))
                .arg(fresh.as_str())
                .arg(self.keys.changes_channel())
                .arg(safety)
                .arg(zero_tel.as_str())
                .arg(self.floor())
                .arg(self.history_cap)
                .arg(caller_arg(cmd.caller.as_ref()))
                .arg(check_rule.as_str());
            let reply = items(self.invoke_write(invocation).await?)?;
            if reply.first().map(bytes).transpose()? == Some(b"CONFLICT".as_slice()) {
                continue; // a fresh UUIDv4 collided: draw another
            }
            check(&reply, id)?;
            let created = reply.get(1).map(bytes).transpose()? == Some(b"REGISTERED".as_slice());
            let (agent, revision) = agent_of(reply.get(2).ok_or_else(|| internal("short reply"))?)?;
            self.saw(revision);
            let token = match (created, cmd.presented) {
                (true, None) => Some(cmd.fresh_token),
                (_, presented) => presented,
            };
            return Ok(Registered {
                agent,
                token,
                revision,
            });
        }
    }

    async fn heartbeat(&self, cmd: HeartbeatCommand, now: Millis) -> Result<Heartbeaten> {
        let tel = cmd
            .telemetry
            .map(|t| codec::encode_telemetry(&t))
            .unwrap_or_default();
        let tst = cmd.telemetry.map_or(0, |t| t.status() as i32);
        let mut invocation = self.scripts.heartbeat.prepare_invoke();
        invocation
            .key(self.keys.agent(cmd.agent_id))
            .key(self.keys.due())
            .key(self.keys.revision())
            .key(self.keys.shift())
            .key(self.keys.history())
            .key(self.keys.history_floor())
            .arg(cmd.agent_id.to_string())
            .arg(now)
            .arg(tel.as_str())
            .arg(tst)
            .arg(token_arg(&cmd.owner))
            .arg(flag(cmd.owner.required))
            .arg(self.keys.changes_channel())
            .arg(SAFETY_NET_MS + self.grace_ms)
            .arg(self.floor())
            .arg(self.history_cap)
            .arg(caller_arg(cmd.owner.caller.as_ref()));
        let reply = items(self.invoke_write(invocation).await?)?;
        check(&reply, cmd.agent_id)?;
        let [_, revision, status, last_seen, ttl] = reply.as_slice() else {
            return Err(internal("short heartbeat reply"));
        };
        let revision = u64::try_from(int(revision)?).map_err(|_| internal("revision"))?;
        self.saw(revision);
        Ok(Heartbeaten {
            status: Status::from_wire(i32::try_from(int(status)?).map_err(|_| internal("status"))?)
                .ok_or_else(|| internal("status"))?,
            last_seen_ms: int(last_seen)?,
            ttl_secs: u32::try_from(int(ttl)?).map_err(|_| internal("ttl"))?,
            revision,
        })
    }

    async fn deregister(
        &self,
        agent_id: AgentId,
        owner: Ownership,
        now: Millis,
    ) -> Result<Option<Revision>> {
        let mut invocation = self.scripts.deregister.prepare_invoke();
        invocation
            .key(self.keys.agent(agent_id))
            .key(self.keys.due())
            .key(self.keys.revision())
            .key(self.keys.agents())
            .key(self.keys.backlog(agent_id))
            .key(self.keys.history())
            .key(self.keys.history_floor())
            .arg(agent_id.to_string())
            .arg(now)
            .arg(token_arg(&owner))
            .arg(flag(owner.required))
            .arg(self.keys.changes_channel())
            .arg(self.floor())
            .arg(self.history_cap)
            .arg(caller_arg(owner.caller.as_ref()));
        let reply = items(self.invoke_write(invocation).await?)?;
        if reply.first().map(bytes).transpose()? == Some(b"NONE".as_slice()) {
            return Ok(None);
        }
        check(&reply, agent_id)?;
        let (_, revision) = agent_of(reply.get(1).ok_or_else(|| internal("short reply"))?)?;
        self.saw(revision);
        Ok(Some(revision))
    }

    async fn expire_due(&self, now: Millis) -> Result<Reaped> {
        let mut invocation = self.scripts.expire.prepare_invoke();
        invocation
            .key(self.keys.due())
            .key(self.keys.revision())
            .key(self.keys.agents())
            .key(self.keys.clock())
            .key(self.keys.shift())
            .key(self.keys.history())
            .key(self.keys.history_floor())
            .arg(now)
            .arg(self.grace_ms)
            .arg(REAP_BATCH)
            .arg(self.keys.agent_prefix())
            .arg(self.keys.backlog_prefix())
            .arg(self.keys.changes_channel())
            .arg(FENCING_THRESHOLD_MS)
            .arg(self.floor())
            .arg(self.history_cap);
        let reply = items(self.invoke(invocation).await?)?;
        let [overdue, expired, next_due, shifted] = reply.as_slice() else {
            return Err(internal("short reaper reply"));
        };
        let shifted = int(shifted)?;
        if shifted > 0 {
            tracing::warn!(
                shifted_ms = shifted,
                "heartbeats could not be recorded for a while: every deadline moved back"
            );
        }
        let next_due = int(next_due)?;
        Ok(Reaped {
            overdue: usize::try_from(int(overdue)?).unwrap_or(0),
            expired: usize::try_from(int(expired)?).unwrap_or(0),
            next_due: (next_due >= 0).then_some(next_due),
        })
    }

    async fn record_probe(&self, cmd: ProbeCommand, now: Millis) -> Result<Option<ChangeKind>> {
        self.write_probe(cmd, now).await
    }

    async fn probers(&self, me: &str, now: Millis, leave: bool) -> Result<Vec<String>> {
        self.announce_prober(me, now, leave).await
    }

    async fn notify(&self, cmd: NotifyCommand, now: Millis) -> Result<Notified> {
        let payload = codec::encode_notification_payload(&cmd.kind, &cmd.message, &cmd.metadata);
        let mut invocation = self.scripts.notify.prepare_invoke();
        invocation
            .key(self.keys.agent(cmd.agent_id))
            .key(self.keys.backlog(cmd.agent_id))
            .arg(cmd.agent_id.to_string())
            .arg(now)
            .arg(payload.as_slice())
            .arg(self.keys.mailbox_channel(cmd.agent_id))
            .arg(BACKLOG_LEN)
            .arg(BACKLOG_BYTES);
        let reply = items(self.invoke_write(invocation).await?)?;
        check(&reply, cmd.agent_id)?;
        let [_, message, receivers] = reply.as_slice() else {
            return Err(internal("short notify reply"));
        };
        Ok(Notified {
            notification: Arc::new(codec::decode_notification(bytes(message)?)?),
            receivers: Some(u64::try_from(int(receivers)?).unwrap_or(0)),
        })
    }

    type Interest = MailboxInterest;

    async fn watch_mailbox(&self, agent_id: AgentId) -> Result<MailboxInterest> {
        self.listener.watch_mailbox(agent_id).await
    }

    fn is_available(&self) -> bool {
        self.listener.is_connected() && self.commands_ok.load(Ordering::Acquire)
    }

    fn is_down(&self) -> bool {
        self.listener.has_failed() || self.commands_failed.load(Ordering::Acquire)
    }

    async fn open_mailbox(
        &self,
        agent_id: AgentId,
        owner: Ownership,
        after: Option<u64>,
    ) -> Result<Vec<Arc<Notification>>> {
        self.read_mailbox(agent_id, owner, after).await
    }

    async fn load(&self) -> Result<Snapshot> {
        self.read_snapshot().await
    }

    async fn history(&self, after: Revision, upto: Revision, limit: usize) -> Result<History> {
        self.read_history(after, upto, limit).await
    }

    async fn subscribe(&self) -> Result<Feed> {
        if !self.listener.is_connected() {
            return Err(unavailable("Redis pub/sub not connected"));
        }
        Ok(self.feed.subscribe())
    }
}
