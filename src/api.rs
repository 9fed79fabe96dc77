//! The registry's nine operations, independent of any transport: domain
//! values in, domain values out. The tonic service (and any other door,
//! such as an HTTP route) decodes its request, calls one operation here and
//! encodes the answer; none holds behaviour of its own.
//!
//! What lives here and nowhere else: the availability rules (a replica
//! whose view does not follow a reachable store refuses writes and new
//! streams, waits while the view is merely loading, and marks reads stale),
//! read-your-writes, and the token policy.
//!
//! Depends on: domain, store, view, hub, mailbox.

mod watch;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

pub use self::watch::{Progress, Replay, WatchRequest, Watching};
use crate::{
    config::TtlPolicy,
    domain::{
        Agent, AgentId, Caller, Error, Notification, Result, Revision, Telemetry, Token,
        agent::Registration,
        check::DenyList,
        clock::Clock,
        query::{AgentFilter, DiscoverQuery, ListKey},
    },
    mailbox::{Mailboxes, Subscription},
    store::{
        HeartbeatCommand, Heartbeaten, NotifyCommand, Ownership, RegisterCommand, Registered, Store,
    },
    view::{CapabilityUse, View},
};

/// How long a write waits for this replica's view to apply it before
/// answering (read-your-writes). The feed normally takes microseconds.
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(1);

/// Longest a call waits for a replica that is still loading its view (at
/// start, or after a reconnect) before it answers UNAVAILABLE (BEHAVIOUR.md
/// §7: existing callers register once, without retrying).
const LOADING_WAIT: Duration = Duration::from_secs(2);

/// How often a waiting call looks again.
const LOADING_POLL: Duration = Duration::from_millis(5);

/// What a transport knows about one call besides its request.
#[derive(Clone, Debug, Default)]
pub struct Call {
    /// The registration token the caller presented (request field or
    /// header), if any.
    pub token: Option<Token>,
    /// How long the caller is willing to wait, if it said.
    pub deadline: Option<Duration>,
    /// Who is calling (BEHAVIOUR.md §9): the identity a new agent belongs
    /// to, and that may act on it without its token.
    pub caller: Caller,
}

/// A read's answer, and whether it came from a view the store could not
/// refresh (stale but available, BEHAVIOUR.md §5).
#[derive(Clone, Debug)]
pub struct Read<T> {
    /// The answer.
    pub value: T,
    /// Served while the store is unreachable.
    pub stale: bool,
}

/// A validated Register request.
#[derive(Debug)]
pub struct RegisterRequest {
    /// What to register.
    pub registration: Registration,
    /// Register again under this id.
    pub agent_id: Option<AgentId>,
}

/// A validated ListAgents request.
#[derive(Clone, Debug)]
pub struct ListRequest {
    /// Which agents.
    pub filter: AgentFilter,
    /// Page size (`None` = all).
    pub page_size: Option<usize>,
    /// Continue after this agent (from a page token).
    pub after: Option<ListKey>,
}

/// One page of ListAgents.
#[derive(Clone, Debug)]
pub struct ListPage {
    /// The agents, in list order.
    pub agents: Vec<Arc<Agent>>,
    /// Where the next page starts, when there is one.
    pub next: Option<ListKey>,
}

/// What NotifyAgent did.
#[derive(Clone, Debug)]
pub struct NotifyOutcome {
    /// The notification as queued.
    pub notification: Arc<Notification>,
    /// Whether a live subscriber (on any replica) received it.
    pub delivered: bool,
}

/// An open notification subscription: the backlog after the client's
/// position, then live notifications.
pub struct Subscribed<I> {
    /// The id the client resumes after (0 = from the start).
    pub after: u64,
    /// The queued notifications after it, in order.
    pub backlog: Vec<Arc<Notification>>,
    /// Live notifications of this replica's mailbox.
    pub live: Subscription,
    /// Keeps the store routing the agent's notifications to this replica
    /// while the subscription lives.
    pub interest: I,
}

/// The rules of ownership that do not depend on the call.
#[derive(Clone, Debug)]
pub struct Policy {
    /// TTL rules.
    pub ttl: TtlPolicy,
    /// Whether ownership calls must carry the token.
    pub require_token: bool,
    /// How often watches that ask for progress get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Registered agents at most: a Register that would create one more is
    /// refused.
    pub max_agents: usize,
    /// Addresses an active health check may not target.
    pub deny: Arc<DenyList>,
}

/// The registry: the nine operations over one store, this replica's view
/// and mailboxes. Built once by the composition root (`server`); cheap to
/// share (`Arc<Registry<S>>`).
pub struct Registry<S> {
    /// The store.
    pub(crate) store: Arc<S>,
    /// This replica's view.
    pub(crate) view: Arc<View>,
    /// This replica's notification subscribers.
    pub(crate) mailboxes: Arc<Mailboxes>,
    /// Time source.
    pub(crate) clock: Arc<dyn Clock>,
    /// TTL and token rules.
    pub(crate) policy: Policy,
    /// Cancelled when the server stops: waits end, new work is refused.
    pub(crate) shutdown: CancellationToken,
}

impl<S: Store> Registry<S> {
    /// TTL rules requests are decoded with.
    pub fn ttl(&self) -> &TtlPolicy {
        &self.policy.ttl
    }

    /// The time source.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Cancelled when the server stops.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Register (BEHAVIOUR.md §4).
    ///
    /// # Errors
    /// Token errors, `NotServing`, store errors.
    pub async fn register(&self, call: &Call, request: RegisterRequest) -> Result<Registered> {
        if let Some(check) = &request.registration.health_check {
            self.policy.deny.admit(check)?;
        }
        let presented = match (request.agent_id, &call.token) {
            (Some(_), Some(token)) => Some(Token::from_client(token.expose().to_owned())?),
            _ => None,
        };
        let cmd = RegisterCommand {
            registration: request.registration,
            agent_id: request.agent_id,
            presented,
            require_token: self.policy.require_token,
            caller: call.caller.owner_key(),
            fresh_token: Token::mint()?,
        };
        self.refuse_while_unavailable(call).await?;
        self.refuse_beyond_max_agents(request.agent_id)?;
        let registered = self.store.register(cmd, self.clock.now()).await?;
        record_agent_id(&registered.agent.id);
        self.settle(registered.revision).await;
        Ok(registered)
    }

    /// Heartbeat.
    ///
    /// # Errors
    /// `NotFound`, token errors, `NotServing`, store errors.
    pub async fn heartbeat(
        &self,
        call: &Call,
        agent_id: AgentId,
        telemetry: Option<Telemetry>,
    ) -> Result<Heartbeaten> {
        record_agent_id(&agent_id);
        let cmd = HeartbeatCommand {
            agent_id,
            owner: self.owner(call),
            telemetry,
        };
        self.refuse_while_unavailable(call).await?;
        let done = self.store.heartbeat(cmd, self.clock.now()).await?;
        self.settle(done.revision).await;
        Ok(done)
    }

    /// Deregister: whether the agent existed.
    ///
    /// # Errors
    /// Token errors, `NotServing`, store errors.
    pub async fn deregister(&self, call: &Call, agent_id: AgentId) -> Result<bool> {
        record_agent_id(&agent_id);
        let owner = self.owner(call);
        self.refuse_while_unavailable(call).await?;
        let removed = self
            .store
            .deregister(agent_id, owner, self.clock.now())
            .await?;
        if let Some(revision) = removed {
            self.settle(revision).await;
        }
        Ok(removed.is_some())
    }

    /// GetAgent.
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn get(&self, call: &Call, agent_id: AgentId) -> Result<Read<Arc<Agent>>> {
        record_agent_id(&agent_id);
        self.await_first_load(call).await;
        let agent = self.view.get(agent_id).ok_or(Error::NotFound(agent_id))?;
        Ok(self.read(agent))
    }

    /// ListAgents: one page.
    ///
    /// # Errors
    /// None today (validation happened while decoding); kept for symmetry.
    pub async fn list(&self, call: &Call, request: &ListRequest) -> Result<Read<ListPage>> {
        self.await_first_load(call).await;
        let (agents, next) = self
            .view
            .list(&request.filter, request.after, request.page_size);
        Ok(self.read(ListPage { agents, next }))
    }

    /// DiscoverAgents.
    ///
    /// # Errors
    /// None today (validation happened while decoding); kept for symmetry.
    pub async fn discover(
        &self,
        call: &Call,
        query: &DiscoverQuery,
    ) -> Result<Read<Vec<Arc<Agent>>>> {
        self.await_first_load(call).await;
        Ok(self.read(self.view.discover(query)))
    }

    /// The capability catalog of this replica's view, sorted by name.
    pub async fn capabilities(&self, call: &Call) -> Read<Vec<CapabilityUse>> {
        self.await_first_load(call).await;
        self.read(self.view.capabilities())
    }

    /// NotifyAgent.
    ///
    /// # Errors
    /// `NotFound`, `NotServing`, store errors.
    pub async fn notify(&self, call: &Call, cmd: NotifyCommand) -> Result<NotifyOutcome> {
        record_agent_id(&cmd.agent_id);
        let agent_id = cmd.agent_id;
        self.refuse_while_unavailable(call).await?;
        let notified = self.store.notify(cmd, self.clock.now()).await?;
        let delivered = match notified.receivers {
            Some(receivers) => receivers > 0,
            None => self.mailboxes.subscriber_count(agent_id) > 0,
        };
        Ok(NotifyOutcome {
            notification: notified.notification,
            delivered,
        })
    }

    /// SubscribeNotifications: the backlog after `after`, then live
    /// notifications, with nothing falling in between.
    ///
    /// # Errors
    /// `NotFound`, token errors, `InvalidArgument` for an `after` that is not
    /// one of the agent's ids, `NotServing`, store errors.
    pub async fn subscribe(
        &self,
        call: &Call,
        agent_id: AgentId,
        after: Option<u64>,
    ) -> Result<Subscribed<S::Interest>> {
        record_agent_id(&agent_id);
        let owner = self.owner(call);
        self.refuse_while_unavailable(call).await?;
        // Subscribe first, then read the backlog: nothing falls in between.
        let interest = self.store.watch_mailbox(agent_id).await?;
        let live = self.mailboxes.subscribe(agent_id);
        let backlog = self.store.open_mailbox(agent_id, owner, after).await?;
        Ok(Subscribed {
            after: after.unwrap_or(0),
            backlog,
            live,
            interest,
        })
    }

    fn owner(&self, call: &Call) -> Ownership {
        Ownership {
            presented: call.token.as_ref().map(Token::hash),
            required: self.policy.require_token,
            caller: call.caller.owner_key(),
        }
    }

    /// A Register that would create an agent beyond `max_agents` is
    /// refused; re-registering an agent this replica knows is not. Counted
    /// on this replica's view, so replicas racing at the bound may overshoot
    /// it by the writes in flight.
    fn refuse_beyond_max_agents(&self, agent_id: Option<AgentId>) -> Result<()> {
        if agent_id.is_some_and(|id| self.view.get(id).is_some()) {
            return Ok(());
        }
        if self.view.len() >= self.policy.max_agents {
            return Err(Error::ResourceExhausted(format!(
                "the registry holds its maximum of {} agents (--max-agents)",
                self.policy.max_agents
            )));
        }
        Ok(())
    }

    /// A replica whose view does not follow a reachable store refuses writes
    /// (it could not show the client its own write) and new streams (it
    /// could not promise them completeness), before touching the store.
    /// While the store is merely still loading, the call waits for it (up to
    /// [`LOADING_WAIT`] or the call's deadline); a store known to be down
    /// refuses at once.
    async fn refuse_while_unavailable(&self, call: &Call) -> Result<()> {
        if self.wait_current(call).await {
            Ok(())
        } else {
            Err(Error::NotServing)
        }
    }

    /// Waits while this replica is loading its view and the store is not
    /// known to be down. Returns whether the view is current.
    async fn wait_current(&self, call: &Call) -> bool {
        if self.is_current() {
            return true;
        }
        let bound = call.deadline.map_or(LOADING_WAIT, |d| d.min(LOADING_WAIT));
        let started = Instant::now();
        while !self.store.is_down() && !self.shutdown.is_cancelled() && started.elapsed() < bound {
            tokio::time::sleep(LOADING_POLL).await;
            if self.is_current() {
                return true;
            }
        }
        false
    }

    /// Reads on a replica that has not loaded its view even once would
    /// answer from nothing: they wait for the first load like writes do.
    /// Afterwards reads never wait (stale but available, BEHAVIOUR.md §5).
    async fn await_first_load(&self, call: &Call) {
        if !self.view.has_loaded() {
            self.wait_current(call).await;
        }
    }

    fn read<T>(&self, value: T) -> Read<T> {
        Read {
            value,
            stale: !self.is_current(),
        }
    }

    /// Whether this replica's view follows a reachable store.
    fn is_current(&self) -> bool {
        self.view.is_synced() && self.store.is_available()
    }

    /// Makes the answer to a write wait until this replica's view shows it.
    /// Without a feed the view cannot catch up: answer at once.
    async fn settle(&self, revision: Revision) {
        if !self.is_current() {
            return;
        }
        if !self
            .view
            .wait_applied(revision, READ_YOUR_WRITES_WAIT)
            .await
        {
            tracing::warn!(revision, "view did not apply a write in time");
        }
    }
}

/// Names the agent in the current call's span.
fn record_agent_id(id: &AgentId) {
    tracing::Span::current().record("agent_id", tracing::field::display(id));
}
