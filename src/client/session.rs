//! An agent's session: registration, background heartbeats, recovery from
//! registry restarts and outages, notifications, and deregistration.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::mpsc, sync::watch, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::{ClientError, RegistryClient, Result};
use crate::backoff::{backoff, jittered};
use crate::pb;
use crate::sync;

/// First wait after a failed heartbeat; doubles up to the heartbeat interval.
const RETRY_BASE: Duration = Duration::from_millis(100);
/// Notifications buffered for the application.
const NOTIFICATION_BUFFER: usize = 256;

/// What the session knows about its agent's standing.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionState {
    /// The status the registry reported at the last heartbeat.
    pub status: pb::AgentStatus,
    /// Whether the last heartbeat (or registration) reached the registry.
    pub connected: bool,
    /// How many times the agent was registered (1 + re-registrations after
    /// the registry lost it).
    pub registrations: u64,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// Lets the application update the telemetry the next heartbeats report.
#[derive(Clone, Debug, Default)]
pub struct TelemetryHandle(Arc<Mutex<Option<pb::AgentTelemetry>>>);

impl TelemetryHandle {
    /// Reports `telemetry` from the next heartbeat on.
    pub fn set(&self, telemetry: pb::AgentTelemetry) {
        *sync::lock(&self.0) = Some(telemetry);
    }

    fn current(&self) -> Option<pb::AgentTelemetry> {
        *sync::lock(&self.0)
    }
}

/// What the background tasks share.
struct Shared {
    client: RegistryClient,
    agent_id: String,
    token: String,
    /// The registration to repeat (with `agent_id` and token) after the
    /// registry lost the agent.
    registration: pb::RegisterRequest,
    interval: Mutex<Duration>,
    /// The TTL last granted.
    ttl: Mutex<i32>,
    telemetry: TelemetryHandle,
    state: watch::Sender<SessionState>,
    attempts: AtomicU64,
}

impl Shared {
    fn interval(&self) -> Duration {
        *sync::lock(&self.interval)
    }

    /// Applies `change`; watchers are woken only when the state changed.
    fn update(&self, change: impl FnOnce(&mut SessionState)) {
        self.state.send_if_modified(|state| {
            let before = state.clone();
            change(state);
            *state != before
        });
    }

    async fn reregister(&self) -> Result<()> {
        let mut registration = self.registration.clone();
        registration.telemetry = self.telemetry.current().or(registration.telemetry);
        let response = self.client.register(registration).await?;
        *sync::lock(&self.interval) = Duration::from_secs(
            u64::try_from(response.heartbeat_interval_seconds.max(1)).unwrap_or(1),
        );
        *sync::lock(&self.ttl) = response.ttl_seconds;
        self.update(|s| {
            s.registrations += 1;
            s.connected = true;
            s.last_error = None;
        });
        tracing::info!(agent_id = %self.agent_id, "registered again under the same id");
        Ok(())
    }
}

/// A registered agent kept alive in the background.
///
/// Call [`AgentSession::shutdown`] to deregister. Dropping the session only
/// stops its background work: the registry then marks the agent UNHEALTHY
/// after its TTL and removes it after the removal grace.
pub struct AgentSession {
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    notifications: Option<mpsc::Receiver<pb::AgentNotification>>,
}

impl std::fmt::Debug for AgentSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSession")
            .field("agent_id", &self.shared.agent_id)
            .finish_non_exhaustive()
    }
}

impl AgentSession {
    /// Registers the agent and starts heartbeating and receiving its
    /// notifications. To resume an identity (after a restart of the agent),
    /// set `agent_id` and `registration_token` in `registration`.
    ///
    /// # Errors
    /// The registration's error; nothing runs then.
    pub async fn start(client: RegistryClient, registration: pb::RegisterRequest) -> Result<Self> {
        let response = client.register(registration.clone()).await?;
        let token = if response.registration_token.is_empty() {
            registration.registration_token.clone()
        } else {
            response.registration_token.clone()
        };
        let telemetry = TelemetryHandle::default();
        if let Some(t) = registration.telemetry {
            telemetry.set(t);
        }
        let (state, _) = watch::channel(SessionState {
            status: pb::AgentStatus::Healthy,
            connected: true,
            registrations: 1,
            last_error: None,
        });
        let shared = Arc::new(Shared {
            registration: pb::RegisterRequest {
                agent_id: response.agent_id.clone(),
                registration_token: token.clone(),
                ..registration
            },
            client,
            agent_id: response.agent_id,
            token,
            interval: Mutex::new(Duration::from_secs(
                u64::try_from(response.heartbeat_interval_seconds.max(1)).unwrap_or(1),
            )),
            ttl: Mutex::new(response.ttl_seconds),
            telemetry,
            state,
            attempts: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::channel(NOTIFICATION_BUFFER);
        let tasks = vec![
            tokio::spawn(heartbeat_loop(shared.clone(), stop.clone())),
            tokio::spawn(notification_loop(shared.clone(), tx, stop.clone())),
        ];
        Ok(Self {
            shared,
            stop,
            tasks,
            notifications: Some(rx),
        })
    }

    /// The agent's id.
    pub fn agent_id(&self) -> &str {
        &self.shared.agent_id
    }

    /// The heartbeat timeout the registry granted, in seconds.
    pub fn ttl_seconds(&self) -> i32 {
        *sync::lock(&self.shared.ttl)
    }

    /// How often the session heartbeats (the registry's suggestion).
    pub fn heartbeat_interval(&self) -> Duration {
        self.shared.interval()
    }

    /// The agent's registration token (keep it to resume this identity).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Follows the session's state (status, connectivity, re-registrations).
    pub fn state(&self) -> watch::Receiver<SessionState> {
        self.shared.state.subscribe()
    }

    /// The handle through which the application reports telemetry.
    pub fn telemetry(&self) -> TelemetryHandle {
        self.shared.telemetry.clone()
    }

    /// Heartbeat attempts so far (successful or not).
    pub fn heartbeat_attempts(&self) -> u64 {
        self.shared.attempts.load(Ordering::Relaxed)
    }

    /// The agent's notifications, in order, without gaps or duplicates
    /// across reconnects (resumed from the last id seen). Can be taken once.
    pub fn notifications(&mut self) -> Option<ReceiverStream<pb::AgentNotification>> {
        self.notifications.take().map(ReceiverStream::new)
    }

    /// Stops heartbeating and deregisters the agent.
    ///
    /// # Errors
    /// The Deregister call's error (the background work stops regardless).
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            // A panicked task has nothing left to clean up.
            let _ = task.await;
        }
        self.shared
            .client
            .deregister(&self.shared.agent_id, &self.shared.token)
            .await
            .map(|_| ())
    }
}

impl Drop for AgentSession {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut failures = 0u32;
    let mut wait = jittered(shared.interval());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        shared.attempts.fetch_add(1, Ordering::Relaxed);
        let result = shared
            .client
            .heartbeat(&shared.agent_id, &shared.token, shared.telemetry.current())
            .await;
        let outcome = match result {
            Ok(response) => {
                shared.update(|s| {
                    s.status = response.status();
                    s.connected = true;
                    s.last_error = None;
                });
                Ok(())
            }
            // The registry lost the agent (restart, data loss): same id and
            // token again.
            Err(e) if e.code() == Code::NotFound => shared.reregister().await,
            Err(e) => Err(e),
        };
        wait = match outcome {
            Ok(()) => {
                failures = 0;
                jittered(shared.interval())
            }
            Err(error) => {
                tracing::debug!(agent_id = %shared.agent_id, %error, "heartbeat failed; retrying");
                shared.update(|s| {
                    s.connected = false;
                    s.last_error = Some(error.to_string());
                });
                failures = failures.saturating_add(1);
                // Never wait longer than one interval: the agent must be
                // back before its TTL runs out.
                backoff(failures - 1, RETRY_BASE, shared.interval())
            }
        };
    }
}

async fn notification_loop(
    shared: Arc<Shared>,
    tx: mpsc::Sender<pb::AgentNotification>,
    stop: CancellationToken,
) {
    let mut last: Option<String> = None;
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            opened = shared.client.subscribe(&shared.agent_id, &shared.token, last.as_deref()) => opened,
        };
        let ended: ClientError = match opened {
            Ok(mut stream) => loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    next = stream.message() => next,
                };
                match next {
                    Ok(Some(notification)) => {
                        failures = 0;
                        last = Some(notification.notification_id.clone());
                        if tx.send(notification).await.is_err() {
                            return; // nobody listens any more
                        }
                    }
                    Ok(None) => {
                        break ClientError::Status {
                            code: Code::Unavailable,
                            message: "stream ended".into(),
                        };
                    }
                    Err(status) => break status.into(),
                }
            },
            Err(error) => error,
        };
        if ended.code() == Code::InvalidArgument {
            // The registry does not know our last id (it lost its data):
            // its backlog is all new.
            last = None;
        }
        tracing::debug!(agent_id = %shared.agent_id, error = %ended, "notification stream interrupted; resuming");
        failures = failures.saturating_add(1);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff(failures - 1, RETRY_BASE, shared.interval().max(Duration::from_secs(1)))) => {}
        }
    }
}
