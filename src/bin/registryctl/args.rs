//! The command line: clap's types for the global options and each
//! subcommand, and the parsers of their values.

use std::{path::PathBuf, time::Duration};

use agent_registry::pb;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where the registry is when neither `--endpoint` nor `REGISTRY_ENDPOINT`
/// says otherwise.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";

/// Command-line client of the agent registry.
#[derive(Debug, Parser)]
#[command(name = "registryctl", version)]
pub(crate) struct Cli {
    /// The registry's gRPC endpoint (`http://host:port`; `host:port` means
    /// plain HTTP/2).
    #[arg(
        long,
        global = true,
        env = "REGISTRY_ENDPOINT",
        default_value = DEFAULT_ENDPOINT,
        value_name = "URL"
    )]
    pub(crate) endpoint: String,

    /// Seconds each call may take (streams: opening them).
    #[arg(
        long,
        global = true,
        default_value = "5",
        value_parser = parse_timeout,
        value_name = "SECONDS"
    )]
    pub(crate) timeout: Duration,

    /// PEM CA bundle the registry's certificate must chain to (TLS; a
    /// `host:port` endpoint then means `https://`).
    #[arg(long, global = true, env = "REGISTRY_TLS_CA", value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,

    /// PEM client certificate, for a registry that asks for one (mTLS).
    #[arg(
        long,
        global = true,
        env = "REGISTRY_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub(crate) tls_cert: Option<PathBuf>,

    /// PEM key of --tls-cert.
    #[arg(
        long,
        global = true,
        env = "REGISTRY_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub(crate) tls_key: Option<PathBuf>,

    /// Name the registry's certificate must carry, when not the endpoint's
    /// host.
    #[arg(
        long,
        global = true,
        env = "REGISTRY_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub(crate) tls_server_name: Option<String>,

    /// A JWT-SVID sent as `authorization: Bearer` (secret: never printed).
    #[arg(
        long,
        global = true,
        env = "REGISTRY_BEARER_TOKEN",
        hide_env_values = true,
        value_name = "JWT"
    )]
    pub(crate) bearer_token: Option<String>,

    /// Output format: `table` for people, `json` for scripts (one object
    /// per line).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub(crate) output: Format,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands, one per registry operation.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
pub(crate) enum TypeArg {
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
pub(crate) fn type_filter(value: Option<TypeArg>) -> i32 {
    value.map_or(pb::AgentType::Unspecified as i32, |t| {
        pb::AgentType::from(t) as i32
    })
}

/// Discovery order, as given on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum StrategyArg {
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
pub(crate) enum Format {
    /// Aligned columns with a header row, for people.
    Table,
    /// One JSON object per line, for scripts.
    Json,
}

/// `register` options.
#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    /// Agent type.
    #[arg(long = "type", value_enum, default_value_t = TypeArg::Worker)]
    pub(crate) agent_type: TypeArg,
    /// A capability (repeat for several; at least one).
    #[arg(short = 'c', long = "capability", required = true, value_name = "CAP")]
    pub(crate) capabilities: Vec<String>,
    /// Metadata entry (repeatable).
    #[arg(short = 'm', long = "metadata", value_parser = parse_key_value, value_name = "KEY=VALUE")]
    pub(crate) metadata: Vec<(String, String)>,
    /// Namespace (server default: "default").
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    /// Cluster (server default: "local").
    #[arg(long)]
    pub(crate) cluster: Option<String>,
    /// The agent's version (server default: "1.0.0").
    #[arg(long)]
    pub(crate) version: Option<String>,
    /// The `host:port` the agent serves on.
    #[arg(long = "agent-endpoint", value_name = "HOST:PORT")]
    pub(crate) agent_endpoint: Option<String>,
    /// Heartbeat timeout wanted, in seconds (the server clamps it; 0 or
    /// absent: the server's default).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) ttl: Option<u32>,
    /// Register again under this id (with --token when it is still
    /// registered).
    #[arg(long, value_name = "ID")]
    pub(crate) agent_id: Option<String>,
    #[command(flatten)]
    pub(crate) token: TokenArg,
    /// Keep the agent alive with heartbeats until Ctrl-C or SIGTERM, print
    /// its state changes, then deregister it.
    #[arg(long)]
    pub(crate) keep_alive: bool,
    #[command(flatten)]
    pub(crate) check: CheckArgs,
}

/// An active health check the registry runs against the agent
/// (`register --check ...`); unset values take the server's defaults.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Ask the registry to probe the agent: grpc, http or tcp.
    #[arg(long = "check", value_enum, value_name = "KIND")]
    pub(crate) check_kind: Option<CheckKindArg>,
    /// `host:port` probed (default: --agent-endpoint).
    #[arg(
        long = "check-target",
        value_name = "HOST:PORT",
        requires = "check_kind"
    )]
    pub(crate) check_target: Option<String>,
    /// HTTP path (default /health) or gRPC service name (default "").
    #[arg(long = "check-path", value_name = "PATH", requires = "check_kind")]
    pub(crate) check_path: Option<String>,
    /// Seconds between probes (default 10).
    #[arg(
        long = "check-interval",
        value_name = "SECONDS",
        requires = "check_kind"
    )]
    pub(crate) check_interval: Option<u32>,
    /// Seconds a probe may take (default min(2, interval)).
    #[arg(
        long = "check-timeout",
        value_name = "SECONDS",
        requires = "check_kind"
    )]
    pub(crate) check_timeout: Option<u32>,
    /// Consecutive failures before UNHEALTHY (default 3).
    #[arg(long = "check-failures", value_name = "N", requires = "check_kind")]
    pub(crate) check_failures: Option<u32>,
    /// Consecutive passes before healthy again (default 2).
    #[arg(long = "check-successes", value_name = "N", requires = "check_kind")]
    pub(crate) check_successes: Option<u32>,
    /// Seconds of continuous failure before the agent is removed (default:
    /// never).
    #[arg(
        long = "check-deregister-after",
        value_name = "SECONDS",
        requires = "check_kind"
    )]
    pub(crate) check_deregister_after: Option<u32>,
}

/// Kind of active health check, as given on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum CheckKindArg {
    /// grpc.health.v1.Health/Check: SERVING passes.
    Grpc,
    /// HTTP GET: any 2xx passes.
    Http,
    /// A TCP connection succeeds.
    Tcp,
}

impl CheckArgs {
    /// The requested check, if any.
    pub(crate) fn to_wire(&self) -> Option<pb::HealthCheck> {
        let kind = match self.check_kind? {
            CheckKindArg::Grpc => pb::health_check::Kind::Grpc,
            CheckKindArg::Http => pb::health_check::Kind::Http,
            CheckKindArg::Tcp => pb::health_check::Kind::Tcp,
        };
        let int = |v: Option<u32>| v.map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX));
        Some(pb::HealthCheck {
            kind: kind as i32,
            target: self.check_target.clone().unwrap_or_default(),
            path: self.check_path.clone().unwrap_or_default(),
            interval_seconds: int(self.check_interval),
            timeout_seconds: int(self.check_timeout),
            failures_before_unhealthy: int(self.check_failures),
            successes_before_healthy: int(self.check_successes),
            deregister_after_seconds: int(self.check_deregister_after),
        })
    }
}

/// The agent's registration token: `--token`, or `REGISTRY_TOKEN` (a token
/// may start with `-`).
#[derive(Debug, Args)]
pub(crate) struct TokenArg {
    /// The agent's registration token.
    #[arg(
        long = "token",
        env = "REGISTRY_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub(crate) value: Option<String>,
}

/// `heartbeat` options.
#[derive(Debug, Args)]
pub(crate) struct HeartbeatArgs {
    /// The agent's id.
    pub(crate) agent_id: String,
    #[command(flatten)]
    pub(crate) token: TokenArg,
    /// Telemetry: success rate, 0.0 to 1.0.
    #[arg(long, value_name = "RATE")]
    pub(crate) success_rate: Option<f64>,
    /// Telemetry: total executions.
    #[arg(long, value_name = "N")]
    pub(crate) total: Option<i64>,
    /// Telemetry: failed executions.
    #[arg(long, value_name = "N")]
    pub(crate) failed: Option<i64>,
    /// Telemetry: average execution time in milliseconds.
    #[arg(long, value_name = "MS")]
    pub(crate) avg_ms: Option<i64>,
}

/// `deregister` options.
#[derive(Debug, Args)]
pub(crate) struct DeregisterArgs {
    /// The agent's id.
    pub(crate) agent_id: String,
    #[command(flatten)]
    pub(crate) token: TokenArg,
}

/// `get` options.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The agent's id.
    pub(crate) agent_id: String,
}

/// `list` options.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only agents of this type.
    #[arg(long = "type", value_enum)]
    pub(crate) agent_type: Option<TypeArg>,
    /// Filter (namespace, cluster, version, status; any other key matches
    /// metadata). Repeatable.
    #[arg(long = "filter", value_parser = parse_key_value, value_name = "KEY=VALUE")]
    pub(crate) filters: Vec<(String, String)>,
    /// Fetch one page of this many agents; the token of the next page goes
    /// to stderr.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub(crate) page_size: Option<i32>,
    /// The page to fetch (from a previous --page-size listing).
    #[arg(
        long,
        value_name = "TOKEN",
        requires = "page_size",
        allow_hyphen_values = true
    )]
    pub(crate) page_token: Option<String>,
}

/// `discover` options.
#[derive(Debug, Args)]
pub(crate) struct DiscoverArgs {
    /// A required capability (repeat for several; agents need all).
    #[arg(short = 'c', long = "capability", required = true, value_name = "CAP")]
    pub(crate) capabilities: Vec<String>,
    /// Filter (namespace, cluster, version, status; any other key matches
    /// metadata). Repeatable.
    #[arg(long = "filter", value_parser = parse_key_value, value_name = "KEY=VALUE")]
    pub(crate) filters: Vec<(String, String)>,
    /// At most this many agents (server default: 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub(crate) max: Option<i32>,
    /// Order of the results.
    #[arg(long, value_enum, default_value_t = StrategyArg::Ranked)]
    pub(crate) strategy: StrategyArg,
    /// Only agents of this type.
    #[arg(long = "type", value_enum)]
    pub(crate) agent_type: Option<TypeArg>,
}

/// `watch` options.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Only agents of this type.
    #[arg(long = "type", value_enum)]
    pub(crate) agent_type: Option<TypeArg>,
    /// Only agents having this capability (repeatable: all of them).
    #[arg(short = 'c', long = "capability", value_name = "CAP")]
    pub(crate) capabilities: Vec<String>,
    /// Only agents of this namespace.
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    /// First every matching agent (SNAPSHOT), then SYNCED, then changes.
    #[arg(long, conflicts_with = "since")]
    pub(crate) snapshot: bool,
    /// Resume: first every matching change after this revision (from the
    /// registry's change history), then live changes.
    #[arg(long, value_name = "REV")]
    pub(crate) since: Option<u64>,
    /// Print a BOOKMARK (the revision the stream has caught up to) every
    /// bookmark interval, also while nothing changes.
    #[arg(long)]
    pub(crate) bookmarks: bool,
}

/// `notify` options.
#[derive(Debug, Args)]
pub(crate) struct NotifyArgs {
    /// The agent's id.
    pub(crate) agent_id: String,
    /// The notification's text.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) message: String,
    /// The notification's type (server default: INFO).
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) notification_type: Option<String>,
    /// Metadata entry (repeatable).
    #[arg(short = 'm', long = "metadata", value_parser = parse_key_value, value_name = "KEY=VALUE")]
    pub(crate) metadata: Vec<(String, String)>,
}

/// `subscribe` options.
#[derive(Debug, Args)]
pub(crate) struct SubscribeArgs {
    /// The agent's id.
    pub(crate) agent_id: String,
    #[command(flatten)]
    pub(crate) token: TokenArg,
    /// Only notifications after this id (resume).
    #[arg(long, value_name = "ID")]
    pub(crate) after: Option<String>,
}

/// `health` options.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// The service to check ("" = the whole server).
    #[arg(long, default_value = "")]
    pub(crate) service: String,
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

#[cfg(test)]
mod tests;
