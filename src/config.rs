//! Command-line flags and environment variables (BEHAVIOUR.md §1).
//!
//! [`Config`] is what clap parses; [`Config::settings`] checks what clap alone
//! cannot (cross-field rules) and yields the typed [`Settings`] the server runs
//! with. Depends on: nothing but clap.

use std::{fmt, net::IpAddr, time::Duration};

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
    /// gRPC port (0 = pick a free port and log it).
    #[arg(long, env = "SERVICE_REGISTRY_PORT", default_value_t = 50051)]
    pub port: u16,
    /// HTTP port for /metrics, /healthz and /readyz (0 = pick a free port).
    #[arg(long, env = "METRICS_PORT", default_value_t = 9090)]
    pub metrics_port: u16,
    /// Backing store: memory, redis, or auto (redis when a Redis URL is set).
    #[arg(long, env = "REGISTRY_STORE", value_enum, default_value_t = StoreChoice::Auto)]
    pub store: StoreChoice,
    /// redis:// or rediss:// URL, with password and database if needed.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Namespace of every Redis key and channel.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "registry")]
    pub redis_prefix: String,
    /// Seconds: TTL of an agent that asks for none.
    #[arg(long, env = "HEARTBEAT_TIMEOUT", default_value_t = 60)]
    pub heartbeat_timeout: u32,
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
    /// (legacy clients); a wrong token is still refused.
    #[arg(
        long,
        env = "REQUIRE_REGISTRATION_TOKEN",
        default_value_t = true,
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub require_token: bool,
    /// Log format: text or json. The level comes from RUST_LOG (default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
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

/// The store the server actually runs with, after `auto` is resolved.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// The embedded in-memory store.
    Memory,
    /// A Redis server at `url`, every key under `prefix`.
    Redis {
        /// Connection URL; may carry a password, so never logged as is.
        url: String,
        /// Key and channel namespace.
        prefix: String,
    },
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

/// Validated settings the server is built from.
#[derive(Clone)]
pub struct Settings {
    /// gRPC listen address.
    pub grpc_addr: std::net::SocketAddr,
    /// HTTP (metrics/probes) listen address.
    pub metrics_addr: std::net::SocketAddr,
    /// Store to use.
    pub store: StoreSettings,
    /// Liveness timing.
    pub ttl: TtlPolicy,
    /// Whether Heartbeat/Deregister/Subscribe must carry the token.
    pub require_token: bool,
    /// Log output format.
    pub log_format: LogFormat,
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
    fn new(setting: &'static str, reason: impl Into<String>) -> Self {
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
        if self.heartbeat_timeout == 0 {
            return Err(ConfigError::new(
                "--heartbeat-timeout (HEARTBEAT_TIMEOUT)",
                "must be at least 1",
            ));
        }
        let redis_url = self.redis_url.as_deref().filter(|u| !u.is_empty());
        let store = match (self.store, redis_url) {
            (StoreChoice::Memory, _) | (StoreChoice::Auto, None) => StoreSettings::Memory,
            (StoreChoice::Redis | StoreChoice::Auto, Some(url)) => {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(ConfigError::new(
                        "--redis-url (REDIS_URL)",
                        "must start with redis:// or rediss://",
                    ));
                }
                if self.redis_prefix.is_empty() || self.redis_prefix.contains(['{', '}']) {
                    return Err(ConfigError::new(
                        "--redis-prefix (REDIS_KEY_PREFIX)",
                        "must be non-empty and contain no braces",
                    ));
                }
                StoreSettings::Redis {
                    url: url.to_owned(),
                    prefix: self.redis_prefix.clone(),
                }
            }
            (StoreChoice::Redis, None) => {
                return Err(ConfigError::new(
                    "--store (REGISTRY_STORE)",
                    "redis needs --redis-url (REDIS_URL)",
                ));
            }
        };
        Ok(Settings {
            grpc_addr: (self.host, self.port).into(),
            metrics_addr: (self.host, self.metrics_port).into(),
            store,
            ttl: TtlPolicy {
                default_ttl: self.heartbeat_timeout,
                min_ttl: self.min_ttl,
                max_ttl: self.max_ttl,
                removal_grace: Duration::from_secs(u64::from(self.removal_grace)),
            },
            require_token: self.require_token,
            log_format: self.log_format,
        })
    }
}

/// Redacts the password of a Redis URL (`redis://user:secret@host` →
/// `redis://user:***@host`) so the effective configuration can be logged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Redis { url, prefix } => {
                write!(f, "redis(url={}, prefix={prefix})", redact_url(url))
            }
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("grpc_addr", &self.grpc_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("store", &self.store)
            .field("ttl", &self.ttl)
            .field("require_token", &self.require_token)
            .field("log_format", &self.log_format)
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
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("agent-registry").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_behaviour_table() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.port, 50051);
        assert_eq!(c.metrics_port, 9090);
        assert_eq!(c.heartbeat_timeout, 60);
        assert_eq!((c.min_ttl, c.max_ttl, c.removal_grace), (1, 3600, 60));
        assert!(c.require_token);
        assert_eq!(c.redis_prefix, "registry");
    }

    #[test]
    fn booleans_take_a_value() {
        assert!(!parse(&["--require-token", "false"]).unwrap().require_token);
        assert!(parse(&["--require-token", "true"]).unwrap().require_token);
        assert!(parse(&["--require-token", "maybe"]).is_err());
    }

    #[test]
    fn bad_numbers_are_usage_errors_naming_the_flag() {
        let err = parse(&["--port", "http"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().lines().next().unwrap().contains("--port"));
    }

    #[test]
    fn min_above_max_is_refused() {
        let err = parse(&["--min-ttl", "10", "--max-ttl", "5"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert!(err.to_string().starts_with("--min-ttl"));
    }

    #[test]
    fn redis_store_needs_a_url() {
        let err = parse(&["--store", "redis"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert!(err.to_string().starts_with("--store"));
    }

    #[test]
    fn auto_picks_redis_only_with_a_url() {
        let memory = parse(&[]).unwrap().settings().unwrap();
        assert_eq!(memory.store, StoreSettings::Memory);
        let redis = parse(&["--redis-url", "redis://127.0.0.1:6379"])
            .unwrap()
            .settings()
            .unwrap();
        assert!(matches!(redis.store, StoreSettings::Redis { .. }));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://user:hunter2@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
    }
}
