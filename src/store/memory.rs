//! The embedded store: all state behind one std `Mutex` (nothing awaits while
//! holding it), so every mutation is trivially atomic. Changes are published
//! on a bounded broadcast while the lock is held, so feed order equals
//! revision order. Everything is lost when the process exits.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::sync::broadcast;

use super::{
    BACKLOG_BYTES, BACKLOG_LEN, DEFAULT_HISTORY, Feed, FeedMessage, HeartbeatCommand, Heartbeaten,
    Notified, NotifyCommand, Ownership, ProbeCommand, Reaped, RegisterCommand, Registered,
    Snapshot, Store,
};
use crate::domain::{
    Agent, AgentId, Change, ChangeKind, Error, History, Millis, Notification, Replayed, Result,
    Revision, Token, TokenHash,
    clock::{Clock, SystemClock},
    token::authorize,
};
use crate::sync;

/// Messages the feed buffers per subscriber before it lags (and resyncs).
const FEED_CAPACITY: usize = 16 * 1024;

/// The in-process store.
#[derive(Debug)]
pub struct MemoryStore {
    /// All records; a std mutex because no critical section awaits.
    state: Mutex<State>,
    /// The feed. Sent to while `state` is locked, so order = revision order.
    feed: broadcast::Sender<FeedMessage>,
    /// Time an overdue agent stays listed before removal.
    grace: Duration,
    /// Changes the history keeps (0 = none).
    history_cap: usize,
}

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    records: HashMap<AgentId, Record>,
    /// `(next transition time, id)` of every agent: the reaper's index.
    due: BTreeSet<(Millis, AgentId)>,
    /// The last `history_cap` changes (no keep-alives), oldest first.
    history: VecDeque<Replayed>,
    /// Every change above this revision is in `history`.
    history_floor: Revision,
}

#[derive(Debug)]
struct Record {
    agent: Arc<Agent>,
    token: TokenHash,
    /// Owner key of the identity that registered the agent, if one did.
    /// Boxed, like the mailbox: most agents have neither, and a record per
    /// agent is most of this store's memory.
    owner: Option<Box<TokenHash>>,
    /// Its notifications, from the first one on.
    mailbox: Option<Box<Mailbox>>,
}

/// An agent's notifications: the last id issued and the backlog.
#[derive(Debug, Default)]
struct Mailbox {
    last_notification: u64,
    backlog: VecDeque<Arc<Notification>>,
    /// Bytes held in `backlog` (as [`notification_bytes`] counts them).
    backlog_bytes: usize,
}

/// What a notification weighs in its backlog: its payload and metadata.
fn notification_bytes(n: &Notification) -> usize {
    n.kind.len()
        + n.message.len()
        + n.metadata
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

impl MemoryStore {
    /// An empty store whose overdue agents are removed after `grace`, with
    /// the default change history ([`DEFAULT_HISTORY`] changes).
    pub fn new(grace: Duration) -> Self {
        Self::with_history(grace, DEFAULT_HISTORY)
    }

    /// An empty store keeping the last `history` changes for watch resume.
    ///
    /// Its revisions start from the clock (ms × 1000), as a wiped Redis
    /// store's do: a watcher resuming with a revision of an earlier process
    /// is told the history does not reach back (and takes a snapshot),
    /// instead of waiting for a revision this store may never reach.
    pub fn with_history(grace: Duration, history: usize) -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let seed = u64::try_from(SystemClock.now())
            .unwrap_or(0)
            .saturating_mul(1000);
        Self {
            state: Mutex::new(State {
                revision: seed,
                history_floor: seed,
                ..State::default()
            }),
            feed,
            grace,
            history_cap: history,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change:
        // every mutation computes first and writes last.
        sync::lock(&self.state)
    }

    /// Assigns the next revision to a change of `agent`, stores the agent and
    /// publishes the change. Returns the agent as stored and the revision.
    fn commit(
        &self,
        state: &mut State,
        kind: ChangeKind,
        mut agent: Agent,
        now: Millis,
    ) -> (Arc<Agent>, Revision) {
        state.revision += 1;
        let revision = state.revision;
        if kind != ChangeKind::Touched {
            agent.revision = revision;
        }
        let agent = Arc::new(agent);
        let before = match kind {
            ChangeKind::Registered => None,
            _ => state.records.get(&agent.id).map(|r| r.agent.clone()),
        };
        if kind.is_removal() {
            if let Some(old) = state.records.remove(&agent.id) {
                state
                    .due
                    .remove(&(old.agent.next_due_ms(self.grace), agent.id));
            }
        } else if let Some(record) = state.records.get_mut(&agent.id) {
            state
                .due
                .remove(&(record.agent.next_due_ms(self.grace), agent.id));
            state.due.insert((agent.next_due_ms(self.grace), agent.id));
            record.agent = agent.clone();
        }
        let change = Change {
            revision,
            kind,
            agent: agent.clone(),
            at: now,
        };
        if kind != ChangeKind::Touched && self.history_cap > 0 {
            state.history.push_back(Replayed {
                change: change.clone(),
                before,
            });
            while state.history.len() > self.history_cap {
                if let Some(gone) = state.history.pop_front() {
                    state.history_floor = gone.change.revision;
                }
            }
        }
        // No receiver is fine: nobody is watching yet.
        let _ = self.feed.send(FeedMessage::Change(change));
        (agent, revision)
    }

    fn insert(
        &self,
        state: &mut State,
        agent: Agent,
        token: TokenHash,
        owner: Option<TokenHash>,
        now: Millis,
    ) -> (Arc<Agent>, Revision) {
        let id = agent.id;
        state.due.insert((agent.next_due_ms(self.grace), id));
        state.records.insert(
            id,
            Record {
                agent: Arc::new(agent.clone()),
                token,
                owner: owner.map(Box::new),
                mailbox: None,
            },
        );
        self.commit(state, ChangeKind::Registered, agent, now)
    }
}

fn not_a_notification_id() -> Error {
    Error::invalid(
        "after_notification_id",
        "is not a notification id of this agent",
    )
}

fn find<'a>(state: &'a State, id: AgentId, owner: &Ownership) -> Result<&'a Record> {
    let record = state.records.get(&id).ok_or(Error::NotFound(id))?;
    authorize(&record.token, record.owner.as_deref(), owner)?;
    Ok(record)
}

impl Store for MemoryStore {
    async fn register(&self, cmd: RegisterCommand, now: Millis) -> Result<Registered> {
        let mut state = self.lock();
        let existing = cmd.agent_id.and_then(|id| state.records.get(&id));
        if let Some(record) = existing {
            let proof = Ownership {
                presented: cmd.presented.as_ref().map(Token::hash),
                required: cmd.require_token,
                caller: cmd.caller,
            };
            authorize(&record.token, record.owner.as_deref(), &proof)?;
            let agent = record.agent.reregister(cmd.registration, now);
            let (agent, revision) = self.commit(&mut state, ChangeKind::Updated, agent, now);
            return Ok(Registered {
                agent,
                token: cmd.presented,
                revision,
            });
        }
        let id = cmd.agent_id.unwrap_or_else(AgentId::new_v4);
        let token = cmd.presented.unwrap_or(cmd.fresh_token);
        let agent = Agent::create(id, cmd.registration, now);
        let (agent, revision) = self.insert(&mut state, agent, token.hash(), cmd.caller, now);
        Ok(Registered {
            agent,
            token: Some(token),
            revision,
        })
    }

    async fn heartbeat(&self, cmd: HeartbeatCommand, now: Millis) -> Result<Heartbeaten> {
        let mut state = self.lock();
        let record = find(&state, cmd.agent_id, &cmd.owner)?;
        let (agent, effect) = record.agent.heartbeat(cmd.telemetry, now);
        let mut kinds = Vec::with_capacity(2);
        if effect.telemetry_changed {
            kinds.push(ChangeKind::Updated);
        }
        if let Some(previous) = effect.previous_status {
            kinds.push(ChangeKind::StatusChanged { previous });
        }
        if kinds.is_empty() {
            kinds.push(ChangeKind::Touched);
        }
        let mut last = None;
        for kind in kinds {
            last = Some(self.commit(&mut state, kind, agent.clone(), now));
        }
        let (agent, revision) = last.ok_or_else(|| Error::Internal {
            source: "heartbeat committed no change".into(),
        })?;
        Ok(Heartbeaten::of(&agent, revision))
    }

    async fn deregister(
        &self,
        agent_id: AgentId,
        owner: Ownership,
        now: Millis,
    ) -> Result<Option<Revision>> {
        let mut state = self.lock();
        let agent = match find(&state, agent_id, &owner) {
            Ok(record) => (*record.agent).clone(),
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(
            self.commit(&mut state, ChangeKind::Deregistered, agent, now)
                .1,
        ))
    }

    async fn expire_due(&self, now: Millis) -> Result<Reaped> {
        let mut state = self.lock();
        let mut reaped = Reaped::default();
        while let Some(&(due, id)) = state.due.first() {
            if due > now {
                break;
            }
            let Some(record) = state.records.get(&id) else {
                state.due.remove(&(due, id));
                continue;
            };
            let agent = record.agent.clone();
            if agent.overdue {
                self.commit(&mut state, ChangeKind::Expired, (*agent).clone(), now);
                reaped.expired += 1;
                continue;
            }
            let (next, previous) = agent.mark_overdue();
            reaped.overdue += 1;
            match previous {
                Some(previous) => {
                    self.commit(
                        &mut state,
                        ChangeKind::StatusChanged { previous },
                        next,
                        now,
                    );
                }
                None => {
                    // Already UNHEALTHY by its telemetry: nothing for watchers
                    // to see, but the record now waits for removal.
                    state.due.remove(&(due, id));
                    state.due.insert((next.next_due_ms(self.grace), id));
                    if let Some(record) = state.records.get_mut(&id) {
                        record.agent = Arc::new(next);
                    }
                }
            }
        }
        reaped.next_due = state.due.first().map(|(due, _)| *due);
        Ok(reaped)
    }

    async fn record_probe(&self, cmd: ProbeCommand, now: Millis) -> Result<Option<ChangeKind>> {
        let mut state = self.lock();
        let Some(record) = state.records.get(&cmd.agent_id) else {
            return Ok(None);
        };
        let Some((agent, effect)) = record.agent.probed(cmd.passed, cmd.output, now) else {
            return Ok(None);
        };
        let kind = if effect.remove {
            ChangeKind::Expired
        } else if let Some(previous) = effect.previous_status {
            ChangeKind::StatusChanged { previous }
        } else {
            ChangeKind::Touched
        };
        self.commit(&mut state, kind, agent, now);
        Ok(Some(kind))
    }

    /// One process, one prober.
    async fn probers(&self, me: &str, _now: Millis, leave: bool) -> Result<Vec<String>> {
        Ok(if leave {
            Vec::new()
        } else {
            vec![me.to_owned()]
        })
    }

    async fn notify(&self, cmd: NotifyCommand, now: Millis) -> Result<Notified> {
        let mut state = self.lock();
        let record = state
            .records
            .get_mut(&cmd.agent_id)
            .ok_or(Error::NotFound(cmd.agent_id))?;
        let mailbox = record.mailbox.get_or_insert_with(Box::default);
        mailbox.last_notification += 1;
        let notification = Arc::new(Notification {
            id: mailbox.last_notification,
            agent_id: cmd.agent_id,
            kind: cmd.kind,
            message: cmd.message,
            metadata: cmd.metadata,
            at: now,
        });
        mailbox.backlog_bytes += notification_bytes(&notification);
        mailbox.backlog.push_back(notification.clone());
        while mailbox.backlog.len() > 1
            && (mailbox.backlog.len() > BACKLOG_LEN || mailbox.backlog_bytes > BACKLOG_BYTES)
        {
            if let Some(old) = mailbox.backlog.pop_front() {
                mailbox.backlog_bytes -= notification_bytes(&old);
            }
        }
        // No receiver is fine: no replica view is subscribed yet.
        let _ = self
            .feed
            .send(FeedMessage::Notification(notification.clone()));
        Ok(Notified {
            notification,
            receivers: None,
        })
    }

    /// Every notification is on the in-process feed already.
    type Interest = ();

    async fn watch_mailbox(&self, _agent_id: AgentId) -> Result<()> {
        Ok(())
    }

    fn is_available(&self) -> bool {
        true
    }

    fn is_down(&self) -> bool {
        false
    }

    async fn open_mailbox(
        &self,
        agent_id: AgentId,
        owner: Ownership,
        after: Option<u64>,
    ) -> Result<Vec<Arc<Notification>>> {
        let state = self.lock();
        let record = find(&state, agent_id, &owner)?;
        let after = after.unwrap_or(0);
        let Some(mailbox) = &record.mailbox else {
            return if after > 0 {
                Err(not_a_notification_id())
            } else {
                Ok(Vec::new())
            };
        };
        if after > mailbox.last_notification {
            return Err(not_a_notification_id());
        }
        Ok(mailbox
            .backlog
            .iter()
            .filter(|n| n.id > after)
            .cloned()
            .collect())
    }

    async fn load(&self) -> Result<Snapshot> {
        let state = self.lock();
        Ok(Snapshot {
            revision: state.revision,
            agents: state.records.values().map(|r| r.agent.clone()).collect(),
        })
    }

    async fn subscribe(&self) -> Result<Feed> {
        Ok(self.feed.subscribe())
    }

    async fn history(&self, after: Revision, upto: Revision, limit: usize) -> Result<History> {
        let state = self.lock();
        let floor = if self.history_cap == 0 {
            state.revision
        } else {
            state.history_floor
        };
        if after < floor {
            return Ok(History::Compacted { oldest: floor });
        }
        let start = state
            .history
            .partition_point(|r| r.change.revision <= after);
        Ok(History::Changes(
            state
                .history
                .range(start..)
                .take_while(|r| r.change.revision <= upto)
                .take(limit)
                .cloned()
                .collect(),
        ))
    }
}
