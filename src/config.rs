//! Command-line flags and environment variables (BEHAVIOUR.md §1, §7, §8).
//!
//! [`Config`] is what clap parses; [`Config::settings`] checks what clap alone
//! cannot (cross-field rules), understands the original Python service's
//! environment ([`legacy`]) and yields the typed [`Settings`] the server runs
//! with. Depends on: nothing but clap.

pub mod legacy;
mod redis;
mod security;

pub use self::{
    redis::{RedisTopology, StoreSettings, redact_url},
    security::{HANDSHAKE_TIMEOUT, Limits, SecurityFiles, SecuritySettings, TlsFiles},
};

use std::{fmt, net::IpAddr, path::PathBuf, time::Duration};

use clap::{ArgAction, Parser, ValueEnum, builder::BoolishValueParser};

/// Every setting of the server: a flag, and an environment variable of the
/// name fixed by BEHAVIOUR.md §1 (the flag wins).
#[derive(Parser, Clone)]
#[command(
    name = "agent-registry",
    version,
    about = "Agent registry gRPC server",
    args_override_self = true
)]
pub struct Config {
    /// gRPC bind address.
    #[arg(long, env = "SERVICE_REGISTRY_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// gRPC port (0 = pick a free port and log it) [default: 50051, or the
    /// original's GRPC_PORT].
    #[arg(long, env = "SERVICE_REGISTRY_PORT")]
    pub port: Option<u16>,
    /// HTTP port for /metrics, /healthz and /readyz (0 = pick a free port).
    #[arg(long, env = "METRICS_PORT", default_value_t = 9090)]
    pub metrics_port: u16,
    /// HTTP/JSON API and web console port (0 = pick a free port and log it;
    /// `none` = off).
    #[arg(long, env = "HTTP_PORT", default_value = "8080", value_parser = parse_http_port)]
    pub http_port: HttpPort,
    /// Backing store: memory, redis, or auto (redis when a Redis URL is set).
    #[arg(long, env = "REGISTRY_STORE", value_enum, default_value_t = StoreChoice::Auto)]
    pub store: StoreChoice,
    /// redis:// or rediss:// URL, with password and database if needed
    /// [default: the first of the original's ETCD_ENDPOINTS].
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster, `host:port,host:port` or a JSON list.
    /// Nodes that are not a Redis Cluster are used as one plain Redis at the
    /// first address.
    #[arg(long, env = "REDIS_CLUSTER_NODES")]
    pub redis_cluster_nodes: Option<String>,
    /// Redis Sentinels, `host:port,host:port`: the registry asks them for
    /// the primary.
    #[arg(long, env = "REDIS_SENTINELS")]
    pub redis_sentinels: Option<String>,
    /// The name under which the Sentinels monitor the primary.
    #[arg(long, env = "REDIS_SENTINEL_MASTER", default_value = "mymaster")]
    pub redis_sentinel_master: String,
    /// Password of the Sentinels themselves (secret: never logged).
    #[arg(long, env = "REDIS_SENTINEL_PASSWORD", hide_env_values = true)]
    pub redis_sentinel_password: Option<String>,
    /// Username for Redis nodes named without a URL that carries one.
    #[arg(long, env = "REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// Password for Redis nodes named without a URL that carries one
    /// (secret: never logged).
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// TLS to the Sentinels and cluster nodes named as host:port (a
    /// rediss:// URL already means TLS).
    #[arg(
        long,
        env = "REDIS_TLS",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new(),
        default_value = "false"
    )]
    pub redis_tls: bool,
    /// A write is acknowledged only once this many replicas hold it (Redis
    /// WAIT, at most 1 s; fewer: UNAVAILABLE, outcome unknown).
    #[arg(long, env = "REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,
    /// Namespace of every Redis key and channel [default: registry, or the
    /// original's ETCD_PREFIX].
    #[arg(long, env = "REDIS_KEY_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Seconds: TTL of an agent that asks for none [default: 60, or the
    /// original's HEARTBEAT_TIMEOUT_SECONDS].
    #[arg(long, env = "HEARTBEAT_TIMEOUT")]
    pub heartbeat_timeout: Option<u32>,
    /// Seconds: lower bound a requested ttl_seconds is clamped to.
    #[arg(long, env = "MIN_TTL", default_value_t = 1)]
    pub min_ttl: u32,
    /// Seconds: upper bound a requested ttl_seconds is clamped to.
    #[arg(long, env = "MAX_TTL", default_value_t = 3600)]
    pub max_ttl: u32,
    /// Seconds an overdue agent stays listed as UNHEALTHY before removal.
    #[arg(long, env = "REMOVAL_GRACE", default_value_t = 60)]
    pub removal_grace: u32,
    /// When false, calls that omit the registration token are accepted
    /// (legacy clients); a wrong token is still refused [default: true; false
    /// when the environment is the original service's].
    #[arg(
        long,
        env = "REQUIRE_REGISTRATION_TOKEN",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub require_token: Option<bool>,
    /// Changes the change history keeps for watch resume (keep-alives are
    /// not changes; 0 = no history, watches cannot resume).
    #[arg(long, env = "WATCH_HISTORY", default_value_t = 100_000)]
    pub watch_history: usize,
    /// Seconds between BOOKMARK events on watches that ask for progress.
    #[arg(long, env = "BOOKMARK_INTERVAL", default_value_t = 10)]
    pub bookmark_interval: u32,
    /// Most active health check probes in flight at once on this replica.
    #[arg(long, env = "HEALTH_CHECK_CONCURRENCY", default_value_t = 256)]
    pub health_check_concurrency: usize,
    /// CIDRs active health checks never probe (comma-separated; empty =
    /// none): cloud metadata and link-local by default.
    #[arg(
        long,
        env = "HEALTH_CHECK_DENY",
        default_value = "169.254.0.0/16,fe80::/10"
    )]
    pub health_check_deny: String,
    /// Log format: text or json. The level comes from RUST_LOG (default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// PEM certificate chain: the gRPC and HTTP ports serve TLS only (with
    /// --tls-key).
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: clients must present a certificate that chains to it
    /// (mTLS); their identity is its URI SAN, else its subject CN.
    #[arg(long, env = "TLS_CLIENT_CA_FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// JWKS (a SPIFFE JWT bundle) whose keys sign JWT-SVIDs sent as
    /// `authorization: Bearer <jwt>`.
    #[arg(long, env = "SPIFFE_JWT_BUNDLE_FILE")]
    pub jwt_bundle: Option<PathBuf>,
    /// Audience a JWT-SVID must carry.
    #[arg(long, env = "SPIFFE_JWT_AUDIENCE", default_value = "agent-registry")]
    pub jwt_audience: String,
    /// YAML (or JSON) policy of who may call what; unset = everyone may call
    /// everything.
    #[arg(long, env = "AUTHZ_POLICY_FILE")]
    pub authz_policy: Option<PathBuf>,
    /// Bytes: larger requests are RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 1_048_576)]
    pub max_message_bytes: usize,
    /// Open WatchAgents + SubscribeNotifications streams per replica.
    #[arg(long, env = "MAX_STREAMS", default_value_t = 10_000)]
    pub max_streams: usize,
    /// Seconds a client connection lives before it is closed gracefully
    /// (GOAWAY), so clients rebalance over replicas (0 = off).
    #[arg(long, env = "MAX_CONNECTION_AGE", default_value_t = 0)]
    pub max_connection_age: u64,
    /// Calls per second per identity (per peer address when anonymous),
    /// bursts of 2 s (0 = off).
    #[arg(long, env = "RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,
    /// Open client connections per replica; beyond, new ones are closed.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// HTTP/2 streams per connection.
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,
    /// Bytes: a ListAgents or DiscoverAgents answer larger than this is
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_RESPONSE_BYTES", default_value_t = 67_108_864)]
    pub max_response_bytes: usize,
    /// Registered agents; a Register that would create one more is
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_AGENTS", default_value_t = 1_000_000)]
    pub max_agents: usize,
}

/// Which store backs the registry.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreChoice {
    /// Redis when a Redis URL is configured, else memory.
    Auto,
    /// Everything in this process; lost when it exits.
    Memory,
    /// Shared Redis: several replicas behave as one registry.
    Redis,
}

/// How log lines are written.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Timing rules of agent liveness, in the units the domain uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    /// TTL (seconds) granted to an agent that asks for none.
    pub default_ttl: u32,
    /// Lower clamp of a requested TTL (seconds).
    pub min_ttl: u32,
    /// Upper clamp of a requested TTL (seconds).
    pub max_ttl: u32,
    /// How long an overdue agent stays listed before it is removed.
    pub removal_grace: Duration,
}

/// Whether and where the HTTP/JSON API listens (`--http-port`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HttpPort {
    /// `none`: no HTTP API.
    Off,
    /// This port (0 = a free one).
    Port(u16),
}

/// `none`, or a port number.
fn parse_http_port(s: &str) -> Result<HttpPort, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(HttpPort::Off);
    }
    s.parse()
        .map(HttpPort::Port)
        .map_err(|_| format!("{s:?} is neither a port (0..=65535) nor `none`"))
}

/// Validated settings the server is built from.
#[derive(Clone)]
pub struct Settings {
    /// gRPC listen address.
    pub grpc_addr: std::net::SocketAddr,
    /// HTTP (metrics/probes) listen address.
    pub metrics_addr: std::net::SocketAddr,
    /// HTTP/JSON API and console listen address (`None` = off).
    pub http_addr: Option<std::net::SocketAddr>,
    /// Store to use.
    pub store: StoreSettings,
    /// Liveness timing.
    pub ttl: TtlPolicy,
    /// Whether Heartbeat/Deregister/Subscribe must carry the token.
    pub require_token: bool,
    /// Log output format.
    pub log_format: LogFormat,
    /// Changes the change history keeps.
    pub watch_history: usize,
    /// How often watches that ask for progress get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// What start-up must say about the original service's environment.
    pub legacy: legacy::Report,
    /// Identity, TLS, policy and limits (BEHAVIOUR.md §9).
    pub security: SecuritySettings,
    /// Most concurrent active health check probes per replica.
    pub health_check_concurrency: usize,
    /// Address ranges active health checks never probe.
    pub health_check_deny: Vec<ipnet::IpNet>,
}

/// A setting that clap parsed but that does not make sense with the others.
/// Its message starts with the name of the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct ConfigError {
    /// The flag and environment variable at fault.
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub(super) fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }
}

// === impl Config ===

impl Config {
    /// Checks the rules that span several settings and resolves `auto`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first setting at fault.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        self.settings_with(&legacy::LegacyEnv::from_process())
    }

    /// [`Config::settings`] with the original service's variables taken
    /// from `env` rather than from the process environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first setting at fault.
    pub fn settings_with(&self, env: &legacy::LegacyEnv) -> Result<Settings, ConfigError> {
        let mut report = legacy::Report::default();
        let port = match self.port {
            Some(port) => port,
            None => report
                .used("GRPC_PORT", env.port()?)
                .unwrap_or(DEFAULT_PORT),
        };
        let heartbeat_timeout = match self.heartbeat_timeout {
            Some(secs) => secs,
            None => report
                .used("HEARTBEAT_TIMEOUT_SECONDS", env.heartbeat_timeout()?)
                .unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT),
        };
        let redis_prefix = match &self.redis_prefix {
            Some(prefix) => prefix.clone(),
            None => report
                .used("ETCD_PREFIX", env.prefix())
                .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_owned()),
        };
        let credentials = legacy::Credentials {
            username: self.redis_username.clone().filter(|u| !u.is_empty()),
            password: self.redis_password.clone().filter(|p| !p.is_empty()),
        };
        let topology = self.redis_topology(env, &credentials, &mut report)?;
        if self.min_ttl == 0 {
            return Err(ConfigError::new(
                "--min-ttl (MIN_TTL)",
                "must be at least 1",
            ));
        }
        if self.min_ttl > self.max_ttl {
            return Err(ConfigError::new(
                "--min-ttl (MIN_TTL)",
                format!(
                    "{} is greater than --max-ttl {}",
                    self.min_ttl, self.max_ttl
                ),
            ));
        }
        if heartbeat_timeout == 0 {
            return Err(ConfigError::new(
                "--heartbeat-timeout (HEARTBEAT_TIMEOUT)",
                "must be at least 1",
            ));
        }
        let store = match (self.store, topology) {
            (StoreChoice::Memory, _) | (StoreChoice::Auto, None) => StoreSettings::Memory,
            (StoreChoice::Redis | StoreChoice::Auto, Some(topology)) => {
                if let RedisTopology::Url(url) = &topology
                    && !(url.starts_with("redis://") || url.starts_with("rediss://"))
                {
                    return Err(ConfigError::new(
                        "--redis-url (REDIS_URL)",
                        "must start with redis:// or rediss://",
                    ));
                }
                if redis_prefix.is_empty() || redis_prefix.contains(['{', '}']) {
                    return Err(ConfigError::new(
                        "--redis-prefix (REDIS_KEY_PREFIX)",
                        "must be non-empty and contain no braces",
                    ));
                }
                StoreSettings::Redis {
                    topology,
                    prefix: redis_prefix,
                    wait_replicas: self.redis_wait_replicas,
                }
            }
            (StoreChoice::Redis, None) => {
                return Err(ConfigError::new(
                    "--store (REGISTRY_STORE)",
                    "redis needs --redis-url (REDIS_URL), --redis-sentinels (REDIS_SENTINELS) \
                     or --redis-cluster-nodes (REDIS_CLUSTER_NODES)",
                ));
            }
        };
        // The original's callers never send a token: with its environment
        // and no explicit choice, tokens are not required (BEHAVIOUR.md §7).
        let require_token = match self.require_token {
            Some(required) => required,
            None if env.any_present() => {
                report.tokens_relaxed = true;
                false
            }
            None => true,
        };
        report.present = env.present();
        if self.bookmark_interval == 0 {
            return Err(ConfigError::new(
                "--bookmark-interval (BOOKMARK_INTERVAL)",
                "must be at least 1",
            ));
        }
        let security = self.security()?;
        if self.health_check_concurrency == 0 {
            return Err(ConfigError::new(
                "--health-check-concurrency (HEALTH_CHECK_CONCURRENCY)",
                "must be at least 1",
            ));
        }
        let health_check_deny = parse_cidrs(&self.health_check_deny)?;
        Ok(Settings {
            grpc_addr: (self.host, port).into(),
            metrics_addr: (self.host, self.metrics_port).into(),
            http_addr: match self.http_port {
                HttpPort::Off => None,
                HttpPort::Port(port) => Some((self.host, port).into()),
            },
            store,
            ttl: TtlPolicy {
                default_ttl: heartbeat_timeout,
                min_ttl: self.min_ttl,
                max_ttl: self.max_ttl,
                removal_grace: Duration::from_secs(u64::from(self.removal_grace)),
            },
            require_token,
            log_format: self.log_format,
            watch_history: self.watch_history,
            bookmark_interval: Duration::from_secs(u64::from(self.bookmark_interval)),
            legacy: report,
            security,
            health_check_concurrency: self.health_check_concurrency,
            health_check_deny,
        })
    }
}

/// The gRPC port when nothing names one.
pub const DEFAULT_PORT: u16 = 50051;
/// The TTL of an agent that asks for none, when nothing names one.
pub const DEFAULT_HEARTBEAT_TIMEOUT: u32 = 60;
/// The Redis key prefix when nothing names one.
pub const DEFAULT_REDIS_PREFIX: &str = "registry";

/// `--health-check-deny`: comma-separated CIDRs (a bare address is a /32 or
/// /128); empty denies nothing.
fn parse_cidrs(list: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        "--health-check-deny (HEALTH_CHECK_DENY)",
                        format!("{s:?} is not a CIDR such as 169.254.0.0/16"),
                    )
                })
        })
        .collect()
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("grpc_addr", &self.grpc_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("http_addr", &self.http_addr)
            .field("store", &self.store)
            .field("ttl", &self.ttl)
            .field("require_token", &self.require_token)
            .field("log_format", &self.log_format)
            .field("watch_history", &self.watch_history)
            .field("bookmark_interval", &self.bookmark_interval)
            .field("legacy_env", &self.legacy.present)
            .field("security", &self.security)
            .field("health_check_concurrency", &self.health_check_concurrency)
            .field("health_check_deny", &self.health_check_deny)
            .finish()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("store", &self.store)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
