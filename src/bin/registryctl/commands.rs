//! One async function per subcommand, the connection to the registry, the
//! kept-alive session of `register --keep-alive`, and what a command
//! returns ([`Outcome`]).

use std::{collections::HashMap, io, process::ExitCode, time::Duration};

use agent_registry::{
    client::{AgentSession, ClientError, ClientSecurity, RegistryClient},
    domain::error_chain,
    pb,
    signal::ShutdownSignal,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    args::{
        Command, DeregisterArgs, DiscoverArgs, GetArgs, HealthArgs, HeartbeatArgs, ListArgs,
        NotifyArgs, RegisterArgs, SubscribeArgs, WatchArgs, type_filter,
    },
    output::{Printer, Registration},
};

/// Why a command stopped early.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The registry refused a call or could not be reached: exit status 1.
    Call(ClientError),
    /// Writing the output failed. A closed pipe (`registryctl watch | head`)
    /// ends the command quietly with status 0; anything else is status 1.
    Output(io::Error),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Self::Call(error)
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self::Call(status.into())
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Self::Output(error)
    }
}

/// What every command returns: its exit status, or why it failed.
pub(crate) type Outcome = Result<ExitCode, Failure>;

/// The global options every command uses.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The registry's endpoint, with a scheme.
    pub(crate) endpoint: String,
    /// Per-call timeout.
    pub(crate) timeout: Duration,
    /// TLS and identity options.
    pub(crate) security: ClientSecurity,
}

/// `host:port` → `http://host:port` (`https://` with TLS); anything with a
/// scheme is kept.
pub(crate) fn normalize_endpoint(endpoint: &str, tls: bool) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

/// Runs one subcommand (all but `health` through the registry client).
pub(crate) async fn run(command: Command, settings: &Settings, out: &Printer) -> Outcome {
    match command {
        Command::Register(args) => register(args, &connect(settings).await?, out).await,
        Command::Heartbeat(args) => heartbeat(args, &connect(settings).await?, out).await,
        Command::Deregister(args) => deregister(args, &connect(settings).await?, out).await,
        Command::Get(args) => get(args, &connect(settings).await?, out).await,
        Command::List(args) => list(args, &connect(settings).await?, out).await,
        Command::Discover(args) => discover(args, &connect(settings).await?, out).await,
        Command::Watch(args) => watch(args, &connect(settings).await?, out).await,
        Command::Notify(args) => notify(args, &connect(settings).await?, out).await,
        Command::Subscribe(args) => subscribe(args, &connect(settings).await?, out).await,
        Command::Health(args) => health(&args, settings, out).await,
    }
}

/// Connects to the registry within the timeout.
pub(crate) async fn connect(settings: &Settings) -> Result<RegistryClient, ClientError> {
    let connecting = RegistryClient::connect_with(settings.endpoint.clone(), &settings.security);
    match tokio::time::timeout(settings.timeout, connecting).await {
        Ok(client) => Ok(client?.with_timeout(settings.timeout)),
        Err(_) => Err(ClientError::Timeout(settings.timeout)),
    }
}

/// `register`: one registration, or a kept-alive session with
/// `--keep-alive`.
async fn register(args: RegisterArgs, client: &RegistryClient, out: &Printer) -> Outcome {
    let keep_alive = args.keep_alive;
    let request = pb::RegisterRequest {
        agent_type: pb::AgentType::from(args.agent_type) as i32,
        capabilities: args.capabilities,
        metadata: args.metadata.into_iter().collect(),
        namespace: args.namespace.unwrap_or_default(),
        cluster: args.cluster.unwrap_or_default(),
        version: args.version.unwrap_or_default(),
        telemetry: None,
        health_check: args.check.to_wire(),
        endpoint: args.agent_endpoint.unwrap_or_default(),
        ttl_seconds: args
            .ttl
            .map_or(0, |ttl| i32::try_from(ttl).unwrap_or(i32::MAX)),
        // The token only means something together with the id (it may come
        // from REGISTRY_TOKEN, which must not disturb a fresh registration).
        registration_token: if args.agent_id.is_some() {
            args.token.value.unwrap_or_default()
        } else {
            String::new()
        },
        agent_id: args.agent_id.unwrap_or_default(),
    };
    if keep_alive {
        return keep_alive_session(request, client, out).await;
    }
    let response = client.register(request).await?;
    out.registration(&Registration {
        agent_id: &response.agent_id,
        token: &response.registration_token,
        ttl_seconds: Some(i64::from(response.ttl_seconds)),
        heartbeat_interval_seconds: Some(i64::from(response.heartbeat_interval_seconds)),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `register --keep-alive`: an [`AgentSession`] heartbeating until SIGINT or
/// SIGTERM, printing each state change, then deregistering.
async fn keep_alive_session(
    request: pb::RegisterRequest,
    client: &RegistryClient,
    out: &Printer,
) -> Outcome {
    // Listen before registering: a signal from now on ends the session
    // cleanly instead of killing the process with the agent left behind.
    let mut signals = ShutdownSignal::listen();
    let mut session = AgentSession::start(client.clone(), request).await?;
    out.registration(&Registration {
        agent_id: session.agent_id(),
        token: session.token(),
        ttl_seconds: Some(i64::from(session.ttl_seconds())),
        heartbeat_interval_seconds: i64::try_from(session.heartbeat_interval().as_secs()).ok(),
    })?;
    let mut notifications = session.notifications();
    let mut states = session.state();
    let mut last = states.borrow_and_update().clone();
    out.session_state(session.agent_id(), &last)?;
    loop {
        tokio::select! {
            () = signals.requested() => break,
            Some(n) = next_notification(&mut notifications) => out.notification(&n)?,
            changed = states.changed() => {
                if changed.is_err() {
                    break; // the session is gone (cannot happen while we hold it)
                }
                let now = states.borrow_and_update().clone();
                if now != last {
                    out.session_state(session.agent_id(), &now)?;
                    last = now;
                }
            }
        }
    }
    let agent_id = session.agent_id().to_owned();
    session.shutdown().await?;
    out.deregistered(&agent_id, true)?;
    Ok(ExitCode::SUCCESS)
}

/// The session's next notification; pending forever once there are none.
async fn next_notification(
    stream: &mut Option<tokio_stream::wrappers::ReceiverStream<pb::AgentNotification>>,
) -> Option<pb::AgentNotification> {
    use tokio_stream::StreamExt;
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// `heartbeat`: one heartbeat, with telemetry when any telemetry flag is
/// given.
async fn heartbeat(args: HeartbeatArgs, client: &RegistryClient, out: &Printer) -> Outcome {
    let given = args.success_rate.is_some()
        || args.total.is_some()
        || args.failed.is_some()
        || args.avg_ms.is_some();
    let telemetry = given.then(|| pb::AgentTelemetry {
        success_rate: args.success_rate.unwrap_or(0.0),
        avg_duration_ms: args.avg_ms.unwrap_or(0),
        total_executions: args.total.unwrap_or(0),
        failed_executions: args.failed.unwrap_or(0),
        last_execution_at: 0,
    });
    let token = args.token.value.unwrap_or_default();
    let response = client.heartbeat(&args.agent_id, &token, telemetry).await?;
    out.heartbeat(&args.agent_id, &response)?;
    Ok(ExitCode::SUCCESS)
}

/// `deregister`: removes the agent (status 0 also when it was not
/// registered: deregistering is idempotent).
async fn deregister(args: DeregisterArgs, client: &RegistryClient, out: &Printer) -> Outcome {
    let token = args.token.value.unwrap_or_default();
    let success = client.deregister(&args.agent_id, &token).await?;
    out.deregistered(&args.agent_id, success)?;
    Ok(ExitCode::SUCCESS)
}

/// `get`: one agent.
async fn get(args: GetArgs, client: &RegistryClient, out: &Printer) -> Outcome {
    let agent = client.get_agent(&args.agent_id).await?;
    out.agent_detail(&agent)?;
    Ok(ExitCode::SUCCESS)
}

/// `list`: every agent (all pages), or one page with `--page-size`.
async fn list(args: ListArgs, client: &RegistryClient, out: &Printer) -> Outcome {
    let agent_type = type_filter(args.agent_type);
    let filters: HashMap<String, String> = args.filters.into_iter().collect();
    let Some(page_size) = args.page_size else {
        let agents = client.list_all(agent_type, filters).await?;
        out.agents(&agents)?;
        return Ok(ExitCode::SUCCESS);
    };
    let page = client
        .list_agents(pb::ListAgentsRequest {
            agent_type,
            filters,
            page_size,
            page_token: args.page_token.unwrap_or_default(),
        })
        .await?;
    out.agents(&page.agents)?;
    if !page.next_page_token.is_empty() {
        // On stderr, so stdout stays one agent per line (or one table).
        eprintln!("next page: --page-token {}", page.next_page_token);
    }
    Ok(ExitCode::SUCCESS)
}

/// `discover`: agents having all the capabilities, in the strategy's order.
async fn discover(args: DiscoverArgs, client: &RegistryClient, out: &Printer) -> Outcome {
    let agents = client
        .discover(pb::DiscoverRequest {
            capabilities: args.capabilities,
            filters: args.filters.into_iter().collect(),
            max_results: args.max.unwrap_or(0),
            agent_type: type_filter(args.agent_type),
            strategy: pb::DiscoveryStrategy::from(args.strategy) as i32,
        })
        .await?;
    out.agents(&agents)?;
    Ok(ExitCode::SUCCESS)
}

/// `watch`: streams change events until a signal (status 0), the end of the
/// stream (0) or a stream error (1).
async fn watch(args: WatchArgs, client: &RegistryClient, out: &Printer) -> Outcome {
    let mut signals = ShutdownSignal::listen();
    let mut stream = client
        .watch(pb::WatchAgentsRequest {
            agent_type: type_filter(args.agent_type),
            capabilities: args.capabilities,
            namespace: args.namespace.unwrap_or_default(),
            send_initial_snapshot: args.snapshot,
            start_revision: args.since.unwrap_or(0),
            progress_notify: args.bookmarks,
        })
        .await?;
    out.event_header()?;
    loop {
        let next = tokio::select! {
            () = signals.requested() => return Ok(ExitCode::SUCCESS),
            next = stream.message() => next?,
        };
        match next {
            Some(event) => out.event(&event)?,
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// `notify`: sends one notification.
async fn notify(args: NotifyArgs, client: &RegistryClient, out: &Printer) -> Outcome {
    let response = client
        .notify(
            &args.agent_id,
            args.notification_type.as_deref().unwrap_or_default(),
            &args.message,
            args.metadata.into_iter().collect(),
        )
        .await?;
    if !response.success {
        return Err(ClientError::Status {
            code: Code::Unknown,
            message: response.error,
        }
        .into());
    }
    out.notified(&args.agent_id, &response)?;
    Ok(ExitCode::SUCCESS)
}

/// `subscribe`: streams the agent's notifications until a signal (status
/// 0), the end of the stream (0) or a stream error (1, e.g. `NOT_FOUND`
/// when the agent is removed).
async fn subscribe(args: SubscribeArgs, client: &RegistryClient, out: &Printer) -> Outcome {
    let mut signals = ShutdownSignal::listen();
    let token = args.token.value.unwrap_or_default();
    let mut stream = client
        .subscribe(&args.agent_id, &token, args.after.as_deref())
        .await?;
    out.notification_header()?;
    loop {
        let next = tokio::select! {
            () = signals.requested() => return Ok(ExitCode::SUCCESS),
            next = stream.message() => next?,
        };
        match next {
            Some(notification) => out.notification(&notification)?,
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// `health`: the standard gRPC health check; status 0 only when SERVING.
async fn health(args: &HealthArgs, settings: &Settings, out: &Printer) -> Outcome {
    let endpoint = tonic::transport::Endpoint::from_shared(settings.endpoint.clone())
        .map_err(|e| ClientError::Endpoint {
            endpoint: settings.endpoint.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(settings.timeout)
        .timeout(settings.timeout);
    let check = async {
        let channel = endpoint.connect().await.map_err(|e| ClientError::Status {
            code: Code::Unavailable,
            message: format!("cannot connect: {}", error_chain(&e)),
        })?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await?;
        Ok::<_, Failure>(response.into_inner().status())
    };
    let status = tokio::time::timeout(settings.timeout, check)
        .await
        .map_err(|_| ClientError::Timeout(settings.timeout))??;
    out.health(&args.service, status)?;
    Ok(if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(normalize_endpoint("h:1", false), "http://h:1");
        assert_eq!(normalize_endpoint("h:1", true), "https://h:1");
        assert_eq!(normalize_endpoint("https://h:1", false), "https://h:1");
    }
}
