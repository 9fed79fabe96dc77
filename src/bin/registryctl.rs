//! `registryctl`: the command-line client of the agent registry, in the
//! spirit of `etcdctl` and `consul`.
//!
//! ```text
//! registryctl register -c python -c gpu --ttl 30          # prints the id and token
//! registryctl register -c python --keep-alive             # heartbeats until Ctrl-C, then deregisters
//! registryctl list -o json                                # one JSON object per agent per line
//! registryctl discover -c gpu --strategy round-robin --max 3
//! registryctl watch --snapshot                            # streams changes until Ctrl-C
//! registryctl notify <agent-id> --message "drain" --type CONTROL
//! registryctl subscribe <agent-id> --token <token>        # the agent's notifications
//! registryctl health                                      # exit 0 only when SERVING
//! ```
//!
//! Global options, accepted anywhere: `--endpoint` (env `REGISTRY_ENDPOINT`,
//! default `http://127.0.0.1:50051`), `--timeout` seconds per call (default
//! 5) and `-o/--output table|json`. (The agent's own address, on `register`,
//! is `--agent-endpoint`.)
//! Tokens come from `--token` or the environment variable `REGISTRY_TOKEN`
//! (a token may start with `-`: `--token -Bx...` takes it as the value).
//!
//! Output: `table` is for people (a header row and aligned columns, times
//! relative to now); `json` is for scripts (one JSON object per line: one
//! per agent for lists, one per event or notification for streams; proto
//! field names, enums by name).
//!
//! Exit status: 0 on success; 1 when the registry refused a call (the
//! message `error: <CODE>: <message>` goes to stderr), when a stream ended
//! with an error, or when `health` is not SERVING; 2 for a usage error.
//!
//! Built on the SDK in `agent_registry::client`: [`RegistryClient`] for the
//! calls and [`AgentSession`] for `register --keep-alive`.

// The command-line client is the one place of the project whose job is to
// print: its output (stdout) and its errors (stderr) are its interface. The
// library and server never print (they log through `tracing`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{
    collections::HashMap,
    io::{self, Write},
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use agent_registry::{
    client::{AgentSession, ClientError, RegistryClient, SessionState},
    pb::{self, agent_change_event::EventType},
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Where the registry is when neither `--endpoint` nor `REGISTRY_ENDPOINT`
/// says otherwise.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// Command-line client of the agent registry.
#[derive(Debug, Parser)]
#[command(name = "registryctl", version)]
struct Cli {
    /// The registry's gRPC endpoint (`http://host:port`; `host:port` means
    /// plain HTTP/2).
    #[arg(
        long,
        global = true,
        env = "REGISTRY_ENDPOINT",
        default_value = DEFAULT_ENDPOINT,
        value_name = "URL"
    )]
    endpoint: String,

    /// Seconds each call may take (streams: opening them).
    #[arg(
        long,
        global = true,
        default_value = "5",
        value_parser = parse_timeout,
        value_name = "SECONDS"
    )]
    timeout: Duration,

    /// Output format: `table` for people, `json` for scripts (one object
    /// per line).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,

    #[command(subcommand)]
    command: Command,
}

/// The subcommands, one per registry operation.
#[derive(Debug, Subcommand)]
enum Command {
    /// Register an agent (or re-register one with --agent-id and --token).
    Register(RegisterArgs),
    /// Send one heartbeat for an agent, optionally with telemetry.
    Heartbeat(HeartbeatArgs),
    /// Remove an agent.
    Deregister(DeregisterArgs),
    /// Show one agent.
    Get(GetArgs),
    /// List agents (every page unless --page-size is given).
    List(ListArgs),
    /// Find agents having all the given capabilities.
    Discover(DiscoverArgs),
    /// Stream changes of the agents until Ctrl-C or the stream ends.
    Watch(WatchArgs),
    /// Send a notification to an agent.
    Notify(NotifyArgs),
    /// Stream an agent's notifications (backlog, then live) until Ctrl-C.
    Subscribe(SubscribeArgs),
    /// gRPC health check; exit status 0 only when SERVING.
    Health(HealthArgs),
}

/// Agent type, as given on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum TypeArg {
    /// `WORKER`
    Worker,
    /// `SCOUT`
    Scout,
    /// `GUARD`
    Guard,
    /// `ANALYST`
    Analyst,
}

impl From<TypeArg> for pb::AgentType {
    fn from(value: TypeArg) -> Self {
        match value {
            TypeArg::Worker => Self::Worker,
            TypeArg::Scout => Self::Scout,
            TypeArg::Guard => Self::Guard,
            TypeArg::Analyst => Self::Analyst,
        }
    }
}

/// The wire value of an optional type filter (0 = any).
fn type_filter(value: Option<TypeArg>) -> i32 {
    value.map_or(pb::AgentType::Unspecified as i32, |t| {
        pb::AgentType::from(t) as i32
    })
}

/// Discovery order, as given on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum StrategyArg {
    /// Best score first.
    Ranked,
    /// Each identical query starts one agent later.
    RoundRobin,
    /// Uniformly shuffled.
    Random,
}

impl From<StrategyArg> for pb::DiscoveryStrategy {
    fn from(value: StrategyArg) -> Self {
        match value {
            StrategyArg::Ranked => Self::Ranked,
            StrategyArg::RoundRobin => Self::RoundRobin,
            StrategyArg::Random => Self::Random,
        }
    }
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Aligned columns with a header row, for people.
    Table,
    /// One JSON object per line, for scripts.
    Json,
}

/// `register` options.
#[derive(Debug, Args)]
struct RegisterArgs {
    /// Agent type.
    #[arg(long = "type", value_enum, default_value_t = TypeArg::Worker)]
    agent_type: TypeArg,
    /// A capability (repeat for several; at least one).
    #[arg(short = 'c', long = "capability", required = true, value_name = "CAP")]
    capabilities: Vec<String>,
    /// Metadata entry (repeatable).
    #[arg(short = 'm', long = "metadata", value_parser = parse_key_value, value_name = "KEY=VALUE")]
    metadata: Vec<(String, String)>,
    /// Namespace (server default: "default").
    #[arg(long)]
    namespace: Option<String>,
    /// Cluster (server default: "local").
    #[arg(long)]
    cluster: Option<String>,
    /// The agent's version (server default: "1.0.0").
    #[arg(long)]
    version: Option<String>,
    /// The `host:port` the agent serves on.
    #[arg(long = "agent-endpoint", value_name = "HOST:PORT")]
    agent_endpoint: Option<String>,
    /// Heartbeat timeout wanted, in seconds (the server clamps it; 0 or
    /// absent: the server's default).
    #[arg(long, value_name = "SECONDS")]
    ttl: Option<u32>,
    /// Register again under this id (with --token when it is still
    /// registered).
    #[arg(long, value_name = "ID")]
    agent_id: Option<String>,
    /// The agent's registration token (used with --agent-id only).
    #[arg(
        long,
        env = "REGISTRY_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: Option<String>,
    /// Keep the agent alive with heartbeats until Ctrl-C or SIGTERM, print
    /// its state changes, then deregister it.
    #[arg(long)]
    keep_alive: bool,
}

/// `heartbeat` options.
#[derive(Debug, Args)]
struct HeartbeatArgs {
    /// The agent's id.
    agent_id: String,
    /// The agent's registration token.
    #[arg(
        long,
        env = "REGISTRY_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: Option<String>,
    /// Telemetry: success rate, 0.0 to 1.0.
    #[arg(long, value_name = "RATE")]
    success_rate: Option<f64>,
    /// Telemetry: total executions.
    #[arg(long, value_name = "N")]
    total: Option<i64>,
    /// Telemetry: failed executions.
    #[arg(long, value_name = "N")]
    failed: Option<i64>,
    /// Telemetry: average execution time in milliseconds.
    #[arg(long, value_name = "MS")]
    avg_ms: Option<i64>,
}

/// `deregister` options.
#[derive(Debug, Args)]
struct DeregisterArgs {
    /// The agent's id.
    agent_id: String,
    /// The agent's registration token.
    #[arg(
        long,
        env = "REGISTRY_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: Option<String>,
}

/// `get` options.
#[derive(Debug, Args)]
struct GetArgs {
    /// The agent's id.
    agent_id: String,
}

/// `list` options.
#[derive(Debug, Args)]
struct ListArgs {
    /// Only agents of this type.
    #[arg(long = "type", value_enum)]
    agent_type: Option<TypeArg>,
    /// Filter (namespace, cluster, version, status; any other key matches
    /// metadata). Repeatable.
    #[arg(long = "filter", value_parser = parse_key_value, value_name = "KEY=VALUE")]
    filters: Vec<(String, String)>,
    /// Fetch one page of this many agents; the token of the next page goes
    /// to stderr.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    page_size: Option<i32>,
    /// The page to fetch (from a previous --page-size listing).
    #[arg(
        long,
        value_name = "TOKEN",
        requires = "page_size",
        allow_hyphen_values = true
    )]
    page_token: Option<String>,
}

/// `discover` options.
#[derive(Debug, Args)]
struct DiscoverArgs {
    /// A required capability (repeat for several; agents need all).
    #[arg(short = 'c', long = "capability", required = true, value_name = "CAP")]
    capabilities: Vec<String>,
    /// Filter (namespace, cluster, version, status; any other key matches
    /// metadata). Repeatable.
    #[arg(long = "filter", value_parser = parse_key_value, value_name = "KEY=VALUE")]
    filters: Vec<(String, String)>,
    /// At most this many agents (server default: 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    max: Option<i32>,
    /// Order of the results.
    #[arg(long, value_enum, default_value_t = StrategyArg::Ranked)]
    strategy: StrategyArg,
    /// Only agents of this type.
    #[arg(long = "type", value_enum)]
    agent_type: Option<TypeArg>,
}

/// `watch` options.
#[derive(Debug, Args)]
struct WatchArgs {
    /// Only agents of this type.
    #[arg(long = "type", value_enum)]
    agent_type: Option<TypeArg>,
    /// Only agents having this capability (repeatable: all of them).
    #[arg(short = 'c', long = "capability", value_name = "CAP")]
    capabilities: Vec<String>,
    /// Only agents of this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// First every matching agent (SNAPSHOT), then SYNCED, then changes.
    #[arg(long)]
    snapshot: bool,
}

/// `notify` options.
#[derive(Debug, Args)]
struct NotifyArgs {
    /// The agent's id.
    agent_id: String,
    /// The notification's text.
    #[arg(long, allow_hyphen_values = true)]
    message: String,
    /// The notification's type (server default: INFO).
    #[arg(long = "type", value_name = "TYPE")]
    notification_type: Option<String>,
    /// Metadata entry (repeatable).
    #[arg(short = 'm', long = "metadata", value_parser = parse_key_value, value_name = "KEY=VALUE")]
    metadata: Vec<(String, String)>,
}

/// `subscribe` options.
#[derive(Debug, Args)]
struct SubscribeArgs {
    /// The agent's id.
    agent_id: String,
    /// The agent's registration token.
    #[arg(
        long,
        env = "REGISTRY_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: Option<String>,
    /// Only notifications after this id (resume).
    #[arg(long, value_name = "ID")]
    after: Option<String>,
}

/// `health` options.
#[derive(Debug, Args)]
struct HealthArgs {
    /// The service to check ("" = the whole server).
    #[arg(long, default_value = "")]
    service: String,
}

/// Parses `KEY=VALUE` (the value may contain `=`; the key may not be empty).
fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        Some(_) => Err(format!("empty key in {text:?}: expected KEY=VALUE")),
        None => Err(format!("no '=' in {text:?}: expected KEY=VALUE")),
    }
}

/// Parses a positive number of seconds (fractions allowed).
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err("the timeout must be positive".into());
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

// ---------------------------------------------------------------------------
// Outcome of a command
// ---------------------------------------------------------------------------

/// Why a command stopped early.
#[derive(Debug)]
enum Failure {
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
type Outcome = Result<ExitCode, Failure>;

// ---------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors exit with status 2 here (clap), `--help` with 0.
    let cli = Cli::parse();
    let out = Printer::new(cli.output);
    let settings = Settings {
        endpoint: normalize_endpoint(&cli.endpoint),
        timeout: cli.timeout,
    };
    match run(cli.command, &settings, &out).await {
        Ok(code) => code,
        Err(Failure::Call(error)) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
        Err(Failure::Output(error)) if error.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(Failure::Output(error)) => {
            eprintln!("error: cannot write the output: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The global options every command uses.
#[derive(Debug)]
struct Settings {
    /// The registry's endpoint, with a scheme.
    endpoint: String,
    /// Per-call timeout.
    timeout: Duration,
}

/// `host:port` → `http://host:port`; anything with a scheme is kept.
fn normalize_endpoint(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

/// Runs one subcommand (all but `health` through the registry client).
async fn run(command: Command, settings: &Settings, out: &Printer) -> Outcome {
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
async fn connect(settings: &Settings) -> Result<RegistryClient, ClientError> {
    let connecting = RegistryClient::connect(settings.endpoint.clone());
    match tokio::time::timeout(settings.timeout, connecting).await {
        Ok(client) => Ok(client?.with_timeout(settings.timeout)),
        Err(_) => Err(ClientError::Timeout(settings.timeout)),
    }
}

// ---------------------------------------------------------------------------
// Subcommands
// ---------------------------------------------------------------------------

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
        health_check: None,
        endpoint: args.agent_endpoint.unwrap_or_default(),
        ttl_seconds: args
            .ttl
            .map_or(0, |ttl| i32::try_from(ttl).unwrap_or(i32::MAX)),
        // The token only means something together with the id (it may come
        // from REGISTRY_TOKEN, which must not disturb a fresh registration).
        registration_token: if args.agent_id.is_some() {
            args.token.unwrap_or_default()
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
    let mut signals = Signals::new()?;
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
            () = signals.wait() => break,
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
    let token = args.token.unwrap_or_default();
    let response = client.heartbeat(&args.agent_id, &token, telemetry).await?;
    out.heartbeat(&args.agent_id, &response)?;
    Ok(ExitCode::SUCCESS)
}

/// `deregister`: removes the agent (status 0 also when it was not
/// registered: deregistering is idempotent).
async fn deregister(args: DeregisterArgs, client: &RegistryClient, out: &Printer) -> Outcome {
    let token = args.token.unwrap_or_default();
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
    let mut signals = Signals::new()?;
    let mut stream = client
        .watch(pb::WatchAgentsRequest {
            agent_type: type_filter(args.agent_type),
            capabilities: args.capabilities,
            namespace: args.namespace.unwrap_or_default(),
            send_initial_snapshot: args.snapshot,
            ..pb::WatchAgentsRequest::default()
        })
        .await?;
    out.event_header()?;
    loop {
        let next = tokio::select! {
            () = signals.wait() => return Ok(ExitCode::SUCCESS),
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
    let mut signals = Signals::new()?;
    let token = args.token.unwrap_or_default();
    let mut stream = client
        .subscribe(&args.agent_id, &token, args.after.as_deref())
        .await?;
    out.notification_header()?;
    loop {
        let next = tokio::select! {
            () = signals.wait() => return Ok(ExitCode::SUCCESS),
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
            message: format!("cannot connect: {}", with_causes(&e)),
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

/// An error and its causes: `transport error: tcp connect error: Connection
/// refused (os error 111)`.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.ends_with(&more) {
            text = format!("{text}: {more}");
        }
        cause = e.source();
    }
    text
}

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

/// SIGINT (Ctrl-C) and SIGTERM, listened to from creation on.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening (the default action, ending the process, no longer
    /// applies).
    fn new() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next SIGINT or SIGTERM.
    async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            // Without Ctrl-C support there is nothing to wait for.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// What `register` prints.
struct Registration<'a> {
    agent_id: &'a str,
    token: &'a str,
    ttl_seconds: Option<i64>,
    heartbeat_interval_seconds: Option<i64>,
}

/// Writes every result in the chosen [`Format`]. Each write goes out at
/// once (stdout is line-buffered), so streams can be followed live.
struct Printer {
    format: Format,
}

/// Minimum column widths of the event rows of `watch` (streamed, so not
/// aligned on the longest value): EVENT, ID, TYPE, STATUS, NAMESPACE,
/// REVISION, CAPABILITIES.
const EVENT_WIDTHS: [usize; 7] = [14, 36, 7, 9, 10, 8, 0];
/// Header of the `watch` table.
const EVENT_HEADER: [&str; 7] = [
    "EVENT",
    "ID",
    "TYPE",
    "STATUS",
    "NAMESPACE",
    "REVISION",
    "CAPABILITIES",
];
/// Minimum column widths of `subscribe` rows: ID, TYPE, AGE, MESSAGE,
/// METADATA.
const NOTIFICATION_WIDTHS: [usize; 5] = [4, 10, 7, 24, 0];
/// Header of the `subscribe` table.
const NOTIFICATION_HEADER: [&str; 5] = ["ID", "TYPE", "AGE", "MESSAGE", "METADATA"];
/// Header of agent tables.
const AGENT_HEADER: [&str; 8] = [
    "ID",
    "TYPE",
    "STATUS",
    "CAPABILITIES",
    "NAMESPACE",
    "ENDPOINT",
    "LAST SEEN",
    "EXPIRES",
];

impl Printer {
    fn new(format: Format) -> Self {
        Self { format }
    }

    /// Writes `text` and a newline to stdout.
    fn line(&self, text: &str) -> io::Result<()> {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{text}")?;
        stdout.flush()
    }

    /// Writes one compact JSON object on its own line.
    fn json(&self, value: &Value) -> io::Result<()> {
        self.line(&value.to_string())
    }

    /// The id and token of a registration.
    fn registration(&self, r: &Registration<'_>) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&json!({
                "agent_id": r.agent_id,
                "registration_token": r.token,
                "ttl_seconds": r.ttl_seconds,
                "heartbeat_interval_seconds": r.heartbeat_interval_seconds,
            })),
            Format::Table => {
                let seconds =
                    |s: Option<i64>| s.map_or_else(|| "-".to_owned(), |s| format!("{s}s"));
                self.line(&table(
                    &[],
                    &[
                        vec!["AGENT ID".into(), r.agent_id.into()],
                        vec!["TOKEN".into(), r.token.into()],
                        vec!["TTL".into(), seconds(r.ttl_seconds)],
                        vec![
                            "HEARTBEAT EVERY".into(),
                            seconds(r.heartbeat_interval_seconds),
                        ],
                    ],
                ))
            }
        }
    }

    /// A change of a kept-alive session's state.
    fn session_state(&self, agent_id: &str, state: &SessionState) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&json!({
                "agent_id": agent_id,
                "status": state.status.as_str_name(),
                "connected": state.connected,
                "registrations": state.registrations,
                "last_error": state.last_error,
            })),
            Format::Table => {
                let connection = match &state.last_error {
                    _ if state.connected => "connected".to_owned(),
                    Some(error) => format!("disconnected ({error})"),
                    None => "disconnected".to_owned(),
                };
                self.line(&format!(
                    "{} status {}, {connection}, registrations {}",
                    clock(unix_now()),
                    state.status.as_str_name(),
                    state.registrations
                ))
            }
        }
    }

    /// The answer to a heartbeat.
    fn heartbeat(&self, agent_id: &str, response: &pb::HeartbeatResponse) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&json!({
                "agent_id": agent_id,
                "status": response.status().as_str_name(),
                "last_seen": response.last_seen,
                "expires_at": response.expires_at,
            })),
            Format::Table => {
                let now = unix_now();
                self.line(&table(
                    &["ID", "STATUS", "LAST SEEN", "EXPIRES"],
                    &[vec![
                        agent_id.to_owned(),
                        response.status().as_str_name().to_owned(),
                        relative(response.last_seen, now),
                        relative(response.expires_at, now),
                    ]],
                ))
            }
        }
    }

    /// The outcome of a deregistration.
    fn deregistered(&self, agent_id: &str, success: bool) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&json!({ "agent_id": agent_id, "success": success })),
            Format::Table if success => self.line(&format!("deregistered {agent_id}")),
            Format::Table => self.line(&format!("{agent_id} was not registered")),
        }
    }

    /// One agent, with its metadata and telemetry.
    fn agent_detail(&self, agent: &pb::AgentInfo) -> io::Result<()> {
        if self.format == Format::Json {
            return self.json(&agent_json(agent));
        }
        self.agents(std::slice::from_ref(agent))?;
        let mut extra = Vec::new();
        if !agent.metadata.is_empty() {
            extra.push(vec!["METADATA".to_owned(), pairs(&agent.metadata)]);
        }
        if let Some(t) = &agent.telemetry {
            extra.push(vec![
                "TELEMETRY".to_owned(),
                format!(
                    "success rate {:.2}, {} executions, {} failed, avg {} ms",
                    t.success_rate, t.total_executions, t.failed_executions, t.avg_duration_ms
                ),
            ]);
        }
        extra.push(vec![
            "CLUSTER".to_owned(),
            format!("{} (version {})", agent.cluster, agent.version),
        ]);
        extra.push(vec![
            "REGISTERED".to_owned(),
            relative(agent.registered_at, unix_now()),
        ]);
        extra.push(vec!["REVISION".to_owned(), agent.revision.to_string()]);
        self.line("")?;
        self.line(&table(&[], &extra))
    }

    /// Agents: a table, or one JSON object per agent per line.
    fn agents(&self, agents: &[pb::AgentInfo]) -> io::Result<()> {
        match self.format {
            Format::Json => agents.iter().try_for_each(|a| self.json(&agent_json(a))),
            Format::Table => {
                let now = unix_now();
                let rows: Vec<Vec<String>> = agents.iter().map(|a| agent_row(a, now)).collect();
                self.line(&table(&AGENT_HEADER, &rows))
            }
        }
    }

    /// The header of a `watch` table (nothing in JSON).
    fn event_header(&self) -> io::Result<()> {
        match self.format {
            Format::Json => Ok(()),
            Format::Table => self.line(&fixed_row(&EVENT_HEADER, &EVENT_WIDTHS)),
        }
    }

    /// One change event.
    fn event(&self, event: &pb::AgentChangeEvent) -> io::Result<()> {
        if self.format == Format::Json {
            return self.json(&event_json(event));
        }
        let kind = event.event_type().as_str_name();
        let revision = event.revision.to_string();
        let cells: Vec<String> = match &event.agent {
            Some(a) => {
                let mut status = a.status().as_str_name().to_owned();
                if event.event_type() == EventType::StatusChanged {
                    status = format!("{status} (was {})", event.previous_status().as_str_name());
                }
                vec![
                    kind.to_owned(),
                    a.agent_id.clone(),
                    a.agent_type().as_str_name().to_owned(),
                    status,
                    a.namespace.clone(),
                    revision,
                    a.capabilities.join(","),
                ]
            }
            None => {
                let mut cells = vec!["-".to_owned(); EVENT_WIDTHS.len()];
                cells[0] = kind.to_owned();
                cells[5] = revision;
                cells
            }
        };
        self.line(&fixed_row(&cells, &EVENT_WIDTHS))
    }

    /// The header of a `subscribe` table (nothing in JSON).
    fn notification_header(&self) -> io::Result<()> {
        match self.format {
            Format::Json => Ok(()),
            Format::Table => self.line(&fixed_row(&NOTIFICATION_HEADER, &NOTIFICATION_WIDTHS)),
        }
    }

    /// One notification.
    fn notification(&self, n: &pb::AgentNotification) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&notification_json(n)),
            Format::Table => self.line(&fixed_row(
                &[
                    n.notification_id.clone(),
                    n.notification_type.clone(),
                    relative(n.timestamp, unix_now()),
                    n.message.clone(),
                    pairs(&n.metadata),
                ],
                &NOTIFICATION_WIDTHS,
            )),
        }
    }

    /// The answer to a notification.
    fn notified(&self, agent_id: &str, response: &pb::NotifyAgentResponse) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&json!({
                "agent_id": agent_id,
                "success": response.success,
                "error": response.error,
                "notification_id": response.notification_id,
                "delivered": response.delivered,
            })),
            Format::Table => self.line(&table(
                &["AGENT", "NOTIFICATION ID", "DELIVERED"],
                &[vec![
                    agent_id.to_owned(),
                    response.notification_id.clone(),
                    if response.delivered {
                        "yes".to_owned()
                    } else {
                        "no (queued)".to_owned()
                    },
                ]],
            )),
        }
    }

    /// The health status.
    fn health(&self, service: &str, status: ServingStatus) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&json!({
                "service": service,
                "status": status.as_str_name(),
            })),
            Format::Table => self.line(status.as_str_name()),
        }
    }
}

/// An agent as JSON, with the proto field names and enums by name.
fn agent_json(a: &pb::AgentInfo) -> Value {
    json!({
        "agent_id": a.agent_id,
        "agent_type": a.agent_type().as_str_name(),
        "capabilities": a.capabilities,
        "metadata": a.metadata,
        "telemetry": a.telemetry.as_ref().map(|t| json!({
            "success_rate": t.success_rate,
            "avg_duration_ms": t.avg_duration_ms,
            "total_executions": t.total_executions,
            "failed_executions": t.failed_executions,
            "last_execution_at": t.last_execution_at,
        })),
        "status": a.status().as_str_name(),
        "registered_at": a.registered_at,
        "last_seen": a.last_seen,
        "namespace": a.namespace,
        "cluster": a.cluster,
        "version": a.version,
        "schema_version": a.schema_version,
        "endpoint": a.endpoint,
        "expires_at": a.expires_at,
        "revision": a.revision,
    })
}

/// A change event as JSON (`agent` is null for SYNCED).
fn event_json(e: &pb::AgentChangeEvent) -> Value {
    json!({
        "event_type": e.event_type().as_str_name(),
        "agent": e.agent.as_ref().map(agent_json),
        "timestamp": e.timestamp,
        "revision": e.revision,
        "previous_status": e.previous_status().as_str_name(),
    })
}

/// A notification as JSON.
fn notification_json(n: &pb::AgentNotification) -> Value {
    json!({
        "notification_id": n.notification_id,
        "agent_id": n.agent_id,
        "notification_type": n.notification_type,
        "message": n.message,
        "metadata": n.metadata,
        "timestamp": n.timestamp,
    })
}

/// The cells of an agent's table row.
fn agent_row(a: &pb::AgentInfo, now: i64) -> Vec<String> {
    vec![
        a.agent_id.clone(),
        a.agent_type().as_str_name().to_owned(),
        a.status().as_str_name().to_owned(),
        dash_if_empty(a.capabilities.join(",")),
        dash_if_empty(a.namespace.clone()),
        dash_if_empty(a.endpoint.clone()),
        relative(a.last_seen, now),
        relative(a.expires_at, now),
    ]
}

/// `-` for an empty cell, so columns stay readable.
fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

/// `k=v,k=v`, sorted by key (`-` when empty).
fn pairs(map: &HashMap<String, String>) -> String {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort();
    dash_if_empty(
        entries
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Renders rows (and a header row unless `header` is empty) as columns
/// aligned on their widest cell, two spaces apart, without trailing blanks.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut all: Vec<Vec<&str>> = Vec::with_capacity(rows.len() + 1);
    if !header.is_empty() {
        all.push(header.to_vec());
    }
    all.extend(rows.iter().map(|r| r.iter().map(String::as_str).collect()));
    let columns = all.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            all.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    all.iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().map(|s| (*s).to_owned()).collect();
            fixed_row(&cells, &widths)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One row with each cell padded to at least its column's width (the last
/// cell is not padded), two spaces apart.
fn fixed_row<S: AsRef<str>>(cells: &[S], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let cell = cell.as_ref();
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(cell);
        if i + 1 < cells.len() {
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    line.truncate(line.trim_end().len());
    line
}

/// Now, in unix seconds.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `at` relative to `now`: `3s ago`, `in 40s`, `now`; `-` for 0 (never).
fn relative(at: i64, now: i64) -> String {
    if at == 0 {
        return "-".to_owned();
    }
    let delta = at - now;
    if delta == 0 {
        return "now".to_owned();
    }
    let span = span(delta.unsigned_abs());
    if delta > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A duration in its largest whole unit: `45s`, `2m`, `3h`, `4d`.
fn span(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `HH:MM:SS` (UTC) of a unix time, to stamp streamed lines.
fn clock(unix: i64) -> String {
    let day = unix.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_parse() {
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert_eq!(parse_key_value("a="), Ok(("a".to_owned(), String::new())));
        assert!(parse_key_value("=b").is_err());
        assert!(parse_key_value("ab").is_err());
    }

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(97, 100), "3s ago");
        assert_eq!(relative(140, 100), "in 40s");
        assert_eq!(relative(100, 100), "now");
        assert_eq!(relative(100 - 150, 100), "2m ago");
        assert_eq!(relative(0, 100), "-");
        assert_eq!(span(7200), "2h");
        assert_eq!(span(3 * 86_400), "3d");
    }

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["ID", "NAME"],
            &[
                vec!["1".into(), "a".into()],
                vec!["123".into(), "bb".into()],
            ],
        );
        assert_eq!(text, "ID   NAME\n1    a\n123  bb");
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert_eq!(parse_timeout("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("x").is_err());
    }

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(normalize_endpoint("h:1"), "http://h:1");
        assert_eq!(normalize_endpoint("https://h:1"), "https://h:1");
    }

    #[test]
    fn tokens_may_start_with_a_hyphen() {
        // Tokens are url-safe base64: one in 64 starts with '-'.
        let cli = Cli::try_parse_from(["registryctl", "heartbeat", "id", "--token", "-Bx"])
            .expect("a token starting with '-' is a value");
        let Command::Heartbeat(args) = cli.command else {
            panic!("parsed as heartbeat");
        };
        assert_eq!(args.token.as_deref(), Some("-Bx"));
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
