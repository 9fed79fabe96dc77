//! The Rust SDK: what agents, schedulers and tools use to talk to the
//! registry.
//!
//! - [`RegistryClient`]: typed calls for all nine RPCs, a timeout on every
//!   call, the registration token sent as `x-registration-token` metadata.
//! - [`AgentSession`]: an agent's side. It registers, heartbeats in the
//!   background at the server's interval (with jitter), re-registers under
//!   the same id and token when the registry lost it, backs off while the
//!   registry is unreachable, streams the agent's notifications across
//!   reconnects, and deregisters on [`AgentSession::shutdown`].
//! - [`DiscoveryCache`]: a scheduler's side. A local copy of the selected
//!   agents kept by `WatchAgents` (snapshot, then changes; re-watched after
//!   any interruption), with [`DiscoveryCache::pick`] choosing an agent
//!   locally, with no call per pick.
//!
//! ```no_run
//! use agent_registry::{client::{AgentSession, RegistryClient}, pb};
//!
//! # async fn run() -> Result<(), agent_registry::client::ClientError> {
//! let client = RegistryClient::connect("http://127.0.0.1:50051").await?;
//! let mut session = AgentSession::start(client.clone(), pb::RegisterRequest {
//!     agent_type: pb::AgentType::Worker as i32,
//!     capabilities: vec!["python".into()],
//!     ..Default::default()
//! }).await?;
//! session.telemetry().set(pb::AgentTelemetry { success_rate: 0.98, total_executions: 10, ..Default::default() });
//! let found = client.discover(pb::DiscoverRequest { capabilities: vec!["python".into()], ..Default::default() }).await?;
//! assert!(found.iter().any(|a| a.agent_id == session.agent_id()));
//! session.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod cache;
mod connect;
mod session;

use std::{collections::HashMap, time::Duration};

use tonic::{
    Code, Request, Streaming,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};

pub use cache::DiscoveryCache;
pub use connect::ClientSecurity;
pub use session::{AgentSession, SessionState, TelemetryHandle};

use crate::pb::{self, service_registry_client::ServiceRegistryClient};

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The registry answered with an error status.
    #[error("{}: {message}", crate::convert::code_name(*code))]
    Status {
        /// The gRPC code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// The call did not finish within the client's timeout.
    #[error("DEADLINE_EXCEEDED: no answer within {0:?}")]
    Timeout(Duration),
    /// The endpoint is not a valid URI.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// What was given.
        endpoint: String,
        /// Why it is unusable.
        reason: String,
    },
}

impl ClientError {
    /// The gRPC code this error stands for.
    pub fn code(&self) -> Code {
        match self {
            Self::Status { code, .. } => *code,
            Self::Timeout(_) => Code::DeadlineExceeded,
            Self::Endpoint { .. } => Code::InvalidArgument,
        }
    }

    /// Whether retrying later may help (the registry or the network was
    /// unavailable, or slow).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::Unknown
                | Code::Cancelled
        )
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        // tonic's server answers an expired `grpc-timeout` with CANCELLED
        // "Timeout expired"; gRPC calls that DEADLINE_EXCEEDED.
        let code = match status.code() {
            Code::Cancelled if status.message() == "Timeout expired" => Code::DeadlineExceeded,
            code => code,
        };
        Self::Status {
            code,
            message: status.message().to_owned(),
        }
    }
}

/// Result of SDK calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// An active health check for `RegisterRequest::health_check` (BEHAVIOUR.md
/// §10): the registry probes `target` (`host:port`; empty = the agent's
/// endpoint) with `kind`. Every other field is 0 = the server's default;
/// set them on the returned value to tune the check:
///
/// ```
/// use agent_registry::{client, pb};
/// let mut check = client::health_check(pb::health_check::Kind::Http, "10.0.0.7:8080");
/// check.path = "/ready".into();
/// check.interval_seconds = 5;
/// let request = pb::RegisterRequest { health_check: Some(check), ..Default::default() };
/// # let _ = request;
/// ```
pub fn health_check(kind: pb::health_check::Kind, target: impl Into<String>) -> pb::HealthCheck {
    pb::HealthCheck {
        kind: kind as i32,
        target: target.into(),
        ..pb::HealthCheck::default()
    }
}

/// A connection to the registry; cheap to clone (clones share the HTTP/2
/// connection, which reconnects by itself after a failure).
#[derive(Debug, Clone)]
pub struct RegistryClient {
    inner: ServiceRegistryClient<Channel>,
    timeout: Duration,
    /// `Bearer <jwt>` sent on every call (marked sensitive: never printed).
    bearer: Option<MetadataValue<Ascii>>,
}

impl RegistryClient {
    /// Per-call timeout unless [`RegistryClient::with_timeout`] says otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            inner: ServiceRegistryClient::new(channel),
            timeout: Self::DEFAULT_TIMEOUT,
            bearer: None,
        }
    }

    /// The same client with another per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The generated client, for anything this SDK does not wrap.
    pub fn raw(&self) -> ServiceRegistryClient<Channel> {
        self.inner.clone()
    }

    fn request<T>(&self, message: T, token: Option<&str>) -> Request<T> {
        let mut request = self.bare(message);
        request.set_timeout(self.timeout);
        if let Some(token) = token.filter(|t| !t.is_empty())
            && let Ok(value) = token.parse()
        {
            request.metadata_mut().insert("x-registration-token", value);
        }
        request
    }

    /// A request carrying the bearer token, if any.
    fn bare<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        request
    }

    /// Runs one call with the client-side timeout (the server also gets it
    /// as `grpc-timeout`).
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(ClientError::Timeout(self.timeout)),
        }
    }

    /// Registers an agent (or, with `agent_id` + `registration_token` set,
    /// registers it again under that id). Set `request.health_check` (see
    /// [`health_check`]) to have the registry probe the agent.
    ///
    /// # Errors
    /// The registry's status (e.g. `INVALID_ARGUMENT` naming the field).
    pub async fn register(&self, request: pb::RegisterRequest) -> Result<pb::RegisterResponse> {
        let token = request.registration_token.clone();
        let request = self.request(request, Some(&token));
        self.call(self.inner.clone().register(request)).await
    }

    /// Renews an agent's liveness, optionally reporting telemetry.
    ///
    /// # Errors
    /// `NOT_FOUND` when the registry does not know the agent (register again).
    pub async fn heartbeat(
        &self,
        agent_id: &str,
        token: &str,
        telemetry: Option<pb::AgentTelemetry>,
    ) -> Result<pb::HeartbeatResponse> {
        let message = pb::HeartbeatRequest {
            agent_id: agent_id.to_owned(),
            telemetry,
            registration_token: String::new(),
        };
        let request = self.request(message, Some(token));
        self.call(self.inner.clone().heartbeat(request)).await
    }

    /// Removes an agent; `false` when it was not registered.
    ///
    /// # Errors
    /// Token errors, `UNAVAILABLE`.
    pub async fn deregister(&self, agent_id: &str, token: &str) -> Result<bool> {
        let message = pb::DeregisterRequest {
            agent_id: agent_id.to_owned(),
            registration_token: String::new(),
        };
        let request = self.request(message, Some(token));
        Ok(self
            .call(self.inner.clone().deregister(request))
            .await?
            .success)
    }

    /// One agent.
    ///
    /// # Errors
    /// `NOT_FOUND`, `INVALID_ARGUMENT` for a malformed id.
    pub async fn get_agent(&self, agent_id: &str) -> Result<pb::AgentInfo> {
        let message = pb::GetAgentRequest {
            agent_id: agent_id.to_owned(),
        };
        let response = self
            .call(self.inner.clone().get_agent(self.request(message, None)))
            .await?;
        response.agent.ok_or_else(|| ClientError::Status {
            code: Code::Internal,
            message: "GetAgent answered without an agent".into(),
        })
    }

    /// One page of agents.
    ///
    /// # Errors
    /// The registry's status.
    pub async fn list_agents(
        &self,
        request: pb::ListAgentsRequest,
    ) -> Result<pb::ListAgentsResponse> {
        self.call(self.inner.clone().list_agents(self.request(request, None)))
            .await
    }

    /// Every agent matching `agent_type` (0 = any) and `filters`, walking
    /// the pages (1000 per call).
    ///
    /// # Errors
    /// The registry's status.
    pub async fn list_all(
        &self,
        agent_type: i32,
        filters: HashMap<String, String>,
    ) -> Result<Vec<pb::AgentInfo>> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .list_agents(pb::ListAgentsRequest {
                    agent_type,
                    filters: filters.clone(),
                    page_size: 1000,
                    page_token,
                })
                .await?;
            out.extend(page.agents);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    /// Agents having all requested capabilities, ordered by the strategy.
    ///
    /// # Errors
    /// The registry's status.
    pub async fn discover(&self, request: pb::DiscoverRequest) -> Result<Vec<pb::AgentInfo>> {
        Ok(self
            .call(
                self.inner
                    .clone()
                    .discover_agents(self.request(request, None)),
            )
            .await?
            .agents)
    }

    /// Opens a WatchAgents stream. The timeout applies to opening it only.
    ///
    /// # Errors
    /// The registry's status (`UNAVAILABLE` while its store is unreachable).
    pub async fn watch(
        &self,
        request: pb::WatchAgentsRequest,
    ) -> Result<Streaming<pb::AgentChangeEvent>> {
        let request = self.bare(request);
        self.call(self.inner.clone().watch_agents(request)).await
    }

    /// Sends a notification to an agent.
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown agent, `INVALID_ARGUMENT`.
    pub async fn notify(
        &self,
        agent_id: &str,
        notification_type: &str,
        message: &str,
        metadata: HashMap<String, String>,
    ) -> Result<pb::NotifyAgentResponse> {
        let request = pb::NotifyAgentRequest {
            agent_id: agent_id.to_owned(),
            notification_type: notification_type.to_owned(),
            message: message.to_owned(),
            metadata,
        };
        self.call(self.inner.clone().notify_agent(self.request(request, None)))
            .await
    }

    /// Opens an agent's notification stream: its backlog after `after`
    /// (everything when `None`), then live notifications.
    ///
    /// # Errors
    /// `NOT_FOUND`, token errors, `INVALID_ARGUMENT` for an unknown `after`.
    pub async fn subscribe(
        &self,
        agent_id: &str,
        token: &str,
        after: Option<&str>,
    ) -> Result<Streaming<pb::AgentNotification>> {
        let message = pb::SubscribeNotificationsRequest {
            agent_id: agent_id.to_owned(),
            registration_token: String::new(),
            after_notification_id: after.unwrap_or_default().to_owned(),
        };
        let mut request = self.request(message, Some(token));
        // A stream lives as long as the agent: no deadline on it.
        request.metadata_mut().remove("grpc-timeout");
        self.call(self.inner.clone().subscribe_notifications(request))
            .await
    }
}

#[cfg(test)]
mod tests;
