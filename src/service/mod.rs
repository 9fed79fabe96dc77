//! The tonic service: each RPC decodes and validates its request
//! ([`convert`]), makes one store or view call, and encodes the answer.
//! Errors become statuses only through [`status`].
//!
//! Depends on: domain, store, view, mailbox, pb.

pub mod convert;
pub mod status;
mod streams;

use std::{
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, metadata::MetadataMap};
use tracing::instrument;

use crate::{
    config::TtlPolicy,
    domain::{
        Result, Revision, Token,
        clock::Clock,
        query::{decode_page_token, encode_page_token},
        validate,
    },
    mailbox::Mailboxes,
    metrics::{Counted, Metrics, result_label},
    pb::{self, service_registry_server::ServiceRegistry},
    store::{HeartbeatCommand, NotifyCommand, Ownership, RegisterCommand, Store},
    view::View,
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

/// Response metadata set on reads served while the store is unreachable.
pub const STALE_METADATA_KEY: &str = "x-registry-stale";

/// A server-streaming response.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Everything a request handler needs; cheap to clone.
pub struct RegistryService<S> {
    store: Arc<S>,
    view: Arc<View>,
    mailboxes: Arc<Mailboxes>,
    clock: Arc<dyn Clock>,
    ttl: TtlPolicy,
    require_token: bool,
    /// Cancelled when the server stops: open streams end with UNAVAILABLE.
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

/// Parts of [`RegistryService`] fixed at start-up.
pub struct ServiceParts<S> {
    /// The store.
    pub store: Arc<S>,
    /// This replica's view.
    pub view: Arc<View>,
    /// This replica's notification subscribers.
    pub mailboxes: Arc<Mailboxes>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// TTL rules.
    pub ttl: TtlPolicy,
    /// Whether ownership calls must carry the token.
    pub require_token: bool,
    /// Server shutdown signal.
    pub shutdown: CancellationToken,
    /// Metric handles.
    pub metrics: Arc<Metrics>,
}

impl<S: Store> RegistryService<S> {
    /// Builds the service.
    pub fn new(parts: ServiceParts<S>) -> Self {
        Self {
            store: parts.store,
            view: parts.view,
            mailboxes: parts.mailboxes,
            clock: parts.clock,
            ttl: parts.ttl,
            require_token: parts.require_token,
            shutdown: parts.shutdown,
            metrics: parts.metrics,
        }
    }

    /// Runs one call: records its latency, counts its result (for the
    /// counted RPCs), counts store failures, and completes the call's span
    /// with its status code and duration.
    async fn observe<T>(
        &self,
        operation: &'static str,
        counted: Option<Counted>,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let result = call.await;
        let elapsed = started.elapsed();
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.metrics
            .latency
            .with_label_values(&[operation])
            .observe(elapsed.as_secs_f64());
        if let Some(op) = counted {
            self.metrics.count(op, code);
        }
        if matches!(code, Code::Unavailable | Code::Internal) {
            self.metrics.store_errors.inc();
        }
        let span = tracing::Span::current();
        span.record("code", result_label(code));
        span.record("duration_ms", elapsed.as_secs_f64() * 1e3);
        tracing::debug!("call finished");
        result
    }

    fn stream_context(&self) -> streams::StreamContext {
        streams::StreamContext {
            shutdown: self.shutdown.clone(),
            aborted: self.metrics.streams_aborted.clone(),
        }
    }

    fn owner(&self, token: Option<Token>) -> Ownership {
        Ownership {
            presented: token.map(|t| t.hash()),
            required: self.require_token,
        }
    }

    /// A replica whose view does not follow a reachable store refuses writes
    /// (it could not show the client its own write) and new streams (it
    /// could not promise them completeness), before touching the store.
    /// While the store is merely still loading, the call waits for it (up to
    /// [`LOADING_WAIT`] or the call's deadline); a store known to be down
    /// refuses at once.
    async fn refuse_while_unavailable(&self, metadata: &MetadataMap) -> Result<(), Status> {
        if self.wait_current(metadata).await {
            Ok(())
        } else {
            Err(status::store_unavailable())
        }
    }

    /// Waits while this replica is loading its view and the store is not
    /// known to be down. Returns whether the view is current.
    async fn wait_current(&self, metadata: &MetadataMap) -> bool {
        if self.is_current() {
            return true;
        }
        let bound = call_deadline(metadata).map_or(LOADING_WAIT, |d| d.min(LOADING_WAIT));
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
    async fn await_first_load(&self, metadata: &MetadataMap) {
        if !self.view.has_loaded() {
            self.wait_current(metadata).await;
        }
    }

    /// Marks a read answered from a view the store could not refresh.
    fn read_response<T>(&self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        if !self.is_current() {
            response.metadata_mut().insert(
                STALE_METADATA_KEY,
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        response
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

/// The call's deadline from its `grpc-timeout` header (digits and a unit:
/// `H`, `M`, `S`, `m`, `u`, `n`), if it sent one that parses.
fn call_deadline(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = (value.get(..split)?, value.get(split..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn record_agent_id(id: &impl std::fmt::Display) {
    tracing::Span::current().record("agent_id", tracing::field::display(id));
}

#[tonic::async_trait]
impl<S: Store> ServiceRegistry for RegistryService<S> {
    #[instrument(skip_all, fields(rpc = "Register", agent_id, code, duration_ms))]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        self.observe("register", Some(Counted::Register), async move {
            let (metadata, _, mut req) = request.into_parts();
            let registration = convert::registration(&mut req, &self.ttl)?;
            let agent_id = match req.agent_id.as_str() {
                "" => None,
                id => Some(validate::agent_id("agent_id", id)?),
            };
            let presented = match (
                agent_id,
                convert::presented_token(req.registration_token, &metadata),
            ) {
                (Some(_), Some(token)) => Some(Token::from_client(token.expose().to_owned())?),
                _ => None,
            };
            let cmd = RegisterCommand {
                registration,
                agent_id,
                presented,
                require_token: self.require_token,
                fresh_token: Token::mint()?,
            };
            self.refuse_while_unavailable(&metadata).await?;
            let registered = self.store.register(cmd, self.clock.now()).await?;
            record_agent_id(&registered.agent.id);
            self.settle(registered.revision).await;
            let ttl = registered.agent.ttl_secs;
            Ok(Response::new(pb::RegisterResponse {
                agent_id: registered.agent.id.to_string(),
                registration_token: registered
                    .token
                    .map(|t| t.expose().to_owned())
                    .unwrap_or_default(),
                registered_at: registered.agent.registered_at,
                ttl_seconds: i32::try_from(ttl).unwrap_or(i32::MAX),
                heartbeat_interval_seconds: i32::try_from((ttl / 3).max(1)).unwrap_or(i32::MAX),
            }))
        })
        .await
    }

    #[instrument(skip_all, fields(rpc = "Heartbeat", agent_id, code, duration_ms))]
    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.observe("heartbeat", Some(Counted::Heartbeat), async move {
            let (metadata, _, req) = request.into_parts();
            let agent_id = validate::agent_id("agent_id", &req.agent_id)?;
            record_agent_id(&agent_id);
            let telemetry = req.telemetry.map(convert::telemetry).transpose()?;
            let owner = self.owner(convert::presented_token(req.registration_token, &metadata));
            let cmd = HeartbeatCommand {
                agent_id,
                owner,
                telemetry,
            };
            self.refuse_while_unavailable(&metadata).await?;
            let done = self.store.heartbeat(cmd, self.clock.now()).await?;
            self.settle(done.revision).await;
            Ok(Response::new(pb::HeartbeatResponse {
                status: done.agent.status as i32,
                last_seen: done.agent.last_seen(),
                expires_at: done.agent.expires_at(),
            }))
        })
        .await
    }

    #[instrument(skip_all, fields(rpc = "Deregister", agent_id, code, duration_ms))]
    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        self.observe("deregister", Some(Counted::Deregister), async move {
            let (metadata, _, req) = request.into_parts();
            let agent_id = validate::agent_id("agent_id", &req.agent_id)?;
            record_agent_id(&agent_id);
            let owner = self.owner(convert::presented_token(req.registration_token, &metadata));
            self.refuse_while_unavailable(&metadata).await?;
            let removed = self
                .store
                .deregister(agent_id, owner, self.clock.now())
                .await?;
            if let Some(revision) = removed {
                self.settle(revision).await;
            }
            Ok(Response::new(pb::DeregisterResponse {
                success: removed.is_some(),
            }))
        })
        .await
    }

    #[instrument(skip_all, fields(rpc = "DiscoverAgents", code, duration_ms))]
    async fn discover_agents(
        &self,
        request: Request<pb::DiscoverRequest>,
    ) -> Result<Response<pb::DiscoverResponse>, Status> {
        self.observe("discover_agents", Some(Counted::Discover), async move {
            let (metadata, _, req) = request.into_parts();
            let query = convert::discover_query(req)?;
            self.await_first_load(&metadata).await;
            let agents = self.view.discover(&query);
            Ok(self.read_response(pb::DiscoverResponse {
                agents: agents.iter().map(|a| convert::agent_info(a)).collect(),
                ranked: query.strategy == crate::domain::query::Strategy::Ranked,
            }))
        })
        .await
    }

    #[instrument(skip_all, fields(rpc = "GetAgent", agent_id, code, duration_ms))]
    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::GetAgentResponse>, Status> {
        self.observe("get_agent", None, async move {
            let agent_id = validate::agent_id("agent_id", &request.get_ref().agent_id)?;
            record_agent_id(&agent_id);
            self.await_first_load(request.metadata()).await;
            let agent = self
                .view
                .get(agent_id)
                .ok_or(crate::domain::Error::NotFound(agent_id))?;
            Ok(self.read_response(pb::GetAgentResponse {
                agent: Some(convert::agent_info(&agent)),
            }))
        })
        .await
    }

    #[instrument(skip_all, fields(rpc = "ListAgents", code, duration_ms))]
    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.observe("list_agents", None, async move {
            let (metadata, _, req) = request.into_parts();
            let filter = convert::filter(req.agent_type, req.filters)?;
            let page_size = validate::page_size(req.page_size)?;
            let after = match req.page_token.as_str() {
                "" => None,
                token => Some(decode_page_token(token, &filter)?),
            };
            self.await_first_load(&metadata).await;
            let (agents, next) = self.view.list(&filter, after, page_size);
            Ok(self.read_response(pb::ListAgentsResponse {
                agents: agents.iter().map(|a| convert::agent_info(a)).collect(),
                next_page_token: next
                    .map(|key| encode_page_token(key, &filter))
                    .unwrap_or_default(),
            }))
        })
        .await
    }

    type WatchAgentsStream = ResponseStream<pb::AgentChangeEvent>;

    #[instrument(skip_all, fields(rpc = "WatchAgents", code, duration_ms))]
    async fn watch_agents(
        &self,
        request: Request<pb::WatchAgentsRequest>,
    ) -> Result<Response<Self::WatchAgentsStream>, Status> {
        self.observe("watch_agents", None, async move {
            let (metadata, _, mut req) = request.into_parts();
            let selection = convert::watch_selection(&mut req)?;
            self.refuse_while_unavailable(&metadata).await?;
            let watch = self.view.watch(selection, req.send_initial_snapshot);
            let stream = streams::watch(
                watch,
                req.send_initial_snapshot,
                self.clock.clone(),
                self.stream_context(),
            );
            Ok(Response::new(stream))
        })
        .await
    }

    #[instrument(skip_all, fields(rpc = "NotifyAgent", agent_id, code, duration_ms))]
    async fn notify_agent(
        &self,
        request: Request<pb::NotifyAgentRequest>,
    ) -> Result<Response<pb::NotifyAgentResponse>, Status> {
        self.observe("notify_agent", Some(Counted::Notify), async move {
            let (metadata, _, req) = request.into_parts();
            let agent_id = validate::agent_id("agent_id", &req.agent_id)?;
            record_agent_id(&agent_id);
            let cmd = NotifyCommand {
                agent_id,
                kind: validate::notification_type(req.notification_type)?,
                message: validate::message(req.message)?,
                metadata: validate::metadata("metadata", req.metadata)?,
            };
            self.refuse_while_unavailable(&metadata).await?;
            let notified = self.store.notify(cmd, self.clock.now()).await?;
            let notification = notified.notification;
            let delivered = match notified.receivers {
                Some(receivers) => receivers > 0,
                None => self.mailboxes.subscriber_count(agent_id) > 0,
            };
            Ok(Response::new(pb::NotifyAgentResponse {
                success: true,
                error: String::new(),
                notification_id: notification.id.to_string(),
                delivered,
            }))
        })
        .await
    }

    type SubscribeNotificationsStream = ResponseStream<pb::AgentNotification>;

    #[instrument(
        skip_all,
        fields(rpc = "SubscribeNotifications", agent_id, code, duration_ms)
    )]
    async fn subscribe_notifications(
        &self,
        request: Request<pb::SubscribeNotificationsRequest>,
    ) -> Result<Response<Self::SubscribeNotificationsStream>, Status> {
        self.observe("subscribe_notifications", None, async move {
            let (metadata, _, req) = request.into_parts();
            let agent_id = validate::agent_id("agent_id", &req.agent_id)?;
            record_agent_id(&agent_id);
            let after = validate::after_notification_id(&req.after_notification_id)?;
            let owner = self.owner(convert::presented_token(req.registration_token, &metadata));
            self.refuse_while_unavailable(&metadata).await?;
            // Subscribe first, then read the backlog: nothing falls in between.
            let interest = self.store.watch_mailbox(agent_id).await?;
            let subscription = self.mailboxes.subscribe(agent_id);
            let notifications = self.store.open_mailbox(agent_id, owner, after).await?;
            let backlog = streams::Backlog {
                after: after.unwrap_or(0),
                notifications,
            };
            Ok(Response::new(streams::notifications(
                backlog,
                subscription,
                interest,
                self.stream_context(),
            )))
        })
        .await
    }
}
