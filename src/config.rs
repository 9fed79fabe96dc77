//! Command-line flags and environment variables (BEHAVIOUR.md §1, §7, §8).
//!
//! [`Config`] is what clap parses; [`Config::settings`] checks what clap alone
//! cannot (cross-field rules), understands the original Python service's
//! environment ([`legacy`]) and yields the typed [`Settings`] the server runs
//! with. Depends on: nothing but clap.

pub mod legacy;

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
    /// gRPC port (0 = pick a free port and log it) [default: 50051, or the
    /// original's GRPC_PORT].
    #[arg(long, env = "SERVICE_REGISTRY_PORT")]
    pub port: Option<u16>,
    /// HTTP port for /metrics, /healthz and /readyz (0 = pick a free port).
    #[arg(long, env = "METRICS_PORT", default_value_t = 9090)]
    pub metrics_port: u16,
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
    /// Redis, found as `topology` says, every key under `prefix`.
    Redis {
        /// How the primary is found.
        topology: RedisTopology,
        /// Key and channel namespace.
        prefix: String,
        /// Replicas that must hold an acknowledged write (Redis `WAIT`).
        wait_replicas: u32,
    },
}

/// How the registry finds its Redis primary (BEHAVIOUR.md §8). Every URL
/// may carry a password, so none is ever logged as is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One Redis at this URL.
    Url(String),
    /// The primary the Sentinels monitor.
    Sentinel {
        /// The Sentinels as URLs (their own password included).
        sentinels: Vec<String>,
        /// The monitored primary's name.
        master: String,
        /// Username of the data nodes.
        username: Option<String>,
        /// Password of the data nodes.
        password: Option<String>,
        /// TLS to the data nodes.
        tls: bool,
    },
    /// Seed nodes of a Redis Cluster as URLs (credentials included); when
    /// they are not a cluster, the first is one plain Redis.
    Cluster(Vec<String>),
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
    /// What start-up must say about the original service's environment.
    pub legacy: legacy::Report,
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
        Ok(Settings {
            grpc_addr: (self.host, port).into(),
            metrics_addr: (self.host, self.metrics_port).into(),
            store,
            ttl: TtlPolicy {
                default_ttl: heartbeat_timeout,
                min_ttl: self.min_ttl,
                max_ttl: self.max_ttl,
                removal_grace: Duration::from_secs(u64::from(self.removal_grace)),
            },
            require_token,
            log_format: self.log_format,
            legacy: report,
        })
    }

    /// How Redis is found: exactly one of `--redis-url`, `--redis-sentinels`
    /// and `--redis-cluster-nodes`, else the first of the original's
    /// `ETCD_ENDPOINTS`; credentials fill in what a URL does not carry.
    fn redis_topology(
        &self,
        env: &legacy::LegacyEnv,
        credentials: &legacy::Credentials,
        report: &mut legacy::Report,
    ) -> Result<Option<RedisTopology>, ConfigError> {
        const URL: &str = "--redis-url (REDIS_URL)";
        const SENTINELS: &str = "--redis-sentinels (REDIS_SENTINELS)";
        const NODES: &str = "--redis-cluster-nodes (REDIS_CLUSTER_NODES)";
        let set = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        let given = [
            (URL, set(&self.redis_url)),
            (SENTINELS, set(&self.redis_sentinels)),
            (NODES, set(&self.redis_cluster_nodes)),
        ];
        let mut named = given.iter().filter(|(_, v)| v.is_some()).map(|(n, _)| *n);
        if let (Some(first), Some(second)) = (named.next(), named.next()) {
            return Err(ConfigError::new(
                first,
                format!("give one Redis topology: {first} or {second}, not both"),
            ));
        }
        let [(_, url), (_, sentinels), (_, nodes)] = given;
        if let Some(url) = url {
            return Ok(Some(RedisTopology::Url(credentials.apply(&url))));
        }
        if let Some(sentinels) = sentinels {
            let master = self.redis_sentinel_master.trim();
            if master.is_empty() {
                return Err(ConfigError::new(
                    "--redis-sentinel-master (REDIS_SENTINEL_MASTER)",
                    "must not be empty",
                ));
            }
            let sentinel_credentials = legacy::Credentials {
                username: None,
                password: set(&self.redis_sentinel_password),
            };
            let sentinels = legacy::nodes(SENTINELS, &sentinels)?
                .iter()
                .map(|node| sentinel_credentials.node_url(node, self.redis_tls))
                .collect();
            return Ok(Some(RedisTopology::Sentinel {
                sentinels,
                master: master.to_owned(),
                username: credentials.username.clone(),
                password: credentials.password.clone(),
                tls: self.redis_tls,
            }));
        }
        if let Some(nodes) = nodes {
            let nodes = legacy::nodes(NODES, &nodes)?
                .iter()
                .map(|node| credentials.node_url(node, self.redis_tls))
                .collect();
            return Ok(Some(RedisTopology::Cluster(nodes)));
        }
        match env.redis_endpoint()? {
            Some(first) => {
                report.used.push("ETCD_ENDPOINTS");
                Ok(Some(RedisTopology::Url(credentials.url_for(&first))))
            }
            None => Ok(None),
        }
    }
}

/// The gRPC port when nothing names one.
pub const DEFAULT_PORT: u16 = 50051;
/// The TTL of an agent that asks for none, when nothing names one.
pub const DEFAULT_HEARTBEAT_TIMEOUT: u32 = 60;
/// The Redis key prefix when nothing names one.
pub const DEFAULT_REDIS_PREFIX: &str = "registry";

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
            Self::Redis {
                topology,
                prefix,
                wait_replicas,
            } => write!(
                f,
                "redis({topology:?}, prefix={prefix}, wait_replicas={wait_replicas})"
            ),
        }
    }
}

impl fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |urls: &[String]| {
            urls.iter()
                .map(|u| redact_url(u))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Self::Url(url) => write!(f, "url={}", redact_url(url)),
            Self::Sentinel {
                sentinels,
                master,
                username,
                password,
                tls,
            } => write!(
                f,
                "sentinels={}, master={master}, username={}, password={}, tls={tls}",
                list(sentinels),
                username.as_deref().unwrap_or(""),
                if password.is_some() { "***" } else { "" },
            ),
            Self::Cluster(nodes) => write!(f, "cluster_nodes={}", list(nodes)),
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
            .field("legacy_env", &self.legacy.present)
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
    use std::collections::HashMap;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("agent-registry").chain(args.iter().copied()))
    }

    use legacy::LegacyEnv;

    fn settings(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(args)
            .unwrap()
            .settings_with(&LegacyEnv::from_lookup(|name| env.get(name).cloned()))
    }

    fn redis_url(s: &Settings) -> &str {
        match &s.store {
            StoreSettings::Redis {
                topology: RedisTopology::Url(url),
                ..
            } => url,
            other => panic!("not one Redis by URL: {other:?}"),
        }
    }

    fn topology(s: &Settings) -> &RedisTopology {
        match &s.store {
            StoreSettings::Redis { topology, .. } => topology,
            StoreSettings::Memory => panic!("memory store"),
        }
    }

    #[test]
    fn defaults_match_the_behaviour_table() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.metrics_port, 9090);
        assert_eq!((c.min_ttl, c.max_ttl, c.removal_grace), (1, 3600, 60));
        let s = settings(&[], &[]).unwrap();
        assert_eq!(s.grpc_addr.port(), 50051);
        assert_eq!(s.ttl.default_ttl, 60);
        assert!(s.require_token);
        assert_eq!(s.store, StoreSettings::Memory);
        assert!(!s.legacy.tokens_relaxed && s.legacy.present.is_empty());
    }

    #[test]
    fn booleans_take_a_value() {
        let s = |v: &str| parse(&["--require-token", v]).unwrap().require_token;
        assert_eq!(s("false"), Some(false));
        assert_eq!(s("true"), Some(true));
        assert!(parse(&["--require-token", "maybe"]).is_err());
    }

    #[test]
    fn the_originals_environment_is_understood() {
        let s = settings(
            &[],
            &[
                ("GRPC_PORT", "50070"),
                ("HEARTBEAT_TIMEOUT_SECONDS", "45"),
                ("ETCD_ENDPOINTS", r#"["redis-master:6379","redis-b:6379"]"#),
                ("ETCD_PREFIX", "neural-hive"),
            ],
        )
        .unwrap();
        assert_eq!(s.grpc_addr.port(), 50070);
        assert_eq!(s.ttl.default_ttl, 45);
        assert_eq!(
            s.store,
            StoreSettings::Redis {
                topology: RedisTopology::Url("redis://redis-master:6379".into()),
                prefix: "neural-hive".into(),
                wait_replicas: 0,
            }
        );
        assert!(!s.require_token, "the original's callers send no token");
        assert!(s.legacy.tokens_relaxed);
        assert_eq!(
            s.legacy.used,
            vec![
                "GRPC_PORT",
                "HEARTBEAT_TIMEOUT_SECONDS",
                "ETCD_PREFIX",
                "ETCD_ENDPOINTS"
            ]
        );
    }

    #[test]
    fn ours_win_over_the_originals() {
        let env = [
            ("GRPC_PORT", "50070"),
            ("HEARTBEAT_TIMEOUT_SECONDS", "45"),
            ("ETCD_ENDPOINTS", "old:6379"),
            ("ETCD_PREFIX", "old"),
        ];
        let s = settings(
            &[
                "--port",
                "50080",
                "--heartbeat-timeout",
                "30",
                "--redis-url",
                "redis://new:6379",
                "--redis-prefix",
                "new",
                "--require-token",
                "true",
            ],
            &env,
        )
        .unwrap();
        assert_eq!(s.grpc_addr.port(), 50080);
        assert_eq!(s.ttl.default_ttl, 30);
        assert_eq!(redis_url(&s), "redis://new:6379");
        assert!(
            s.require_token,
            "an explicit REQUIRE_REGISTRATION_TOKEN wins"
        );
        assert!(s.legacy.used.is_empty());
        assert!(!s.legacy.tokens_relaxed);
    }

    #[test]
    fn cluster_nodes_and_password_make_cluster_seed_urls() {
        let s = settings(
            &[],
            &[
                ("REDIS_CLUSTER_NODES", "redis-0:6379,redis-1:6379"),
                ("REDIS_PASSWORD", "s3cr@t"),
            ],
        );
        // REDIS_CLUSTER_NODES and REDIS_PASSWORD are read by clap as ours;
        // here only the legacy lookup sees them, so parse them as flags.
        assert!(s.unwrap().legacy.tokens_relaxed);
        let s = settings(
            &[
                "--redis-cluster-nodes",
                r#"["redis-0:6379"]"#,
                "--redis-password",
                "s3cr@t",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            topology(&s),
            &RedisTopology::Cluster(vec!["redis://:s3cr%40t@redis-0:6379".into()])
        );
        assert!(format!("{s:?}").contains("***"), "{s:?}");
        assert!(!format!("{s:?}").contains("s3cr"), "{s:?}");
    }

    #[test]
    fn one_redis_topology_at_a_time() {
        let err = settings(
            &["--redis-url", "redis://a:1", "--redis-cluster-nodes", "b:1"],
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("--redis-url"));
    }

    #[test]
    fn every_pair_of_topologies_is_refused_naming_the_first() {
        for (args, first) in [
            (
                &["--redis-url", "redis://a:1", "--redis-sentinels", "b:1"][..],
                "--redis-url",
            ),
            (
                &["--redis-sentinels", "b:1", "--redis-cluster-nodes", "c:1"][..],
                "--redis-sentinels",
            ),
            (
                &[
                    "--redis-url",
                    "redis://a:1",
                    "--redis-sentinels",
                    "b:1",
                    "--redis-cluster-nodes",
                    "c:1",
                ][..],
                "--redis-url",
            ),
        ] {
            let err = settings(args, &[]).unwrap_err();
            assert!(err.to_string().starts_with(first), "{args:?}: {err}");
        }
    }

    #[test]
    fn sentinels_resolve_the_named_master_with_their_own_password() {
        let s = settings(
            &[
                "--redis-sentinels",
                "s-0:26379, s-1:26379",
                "--redis-sentinel-master",
                "registry-primary",
                "--redis-sentinel-password",
                "sent:pw",
                "--redis-username",
                "app",
                "--redis-password",
                "data-pw",
                "--redis-tls",
                "true",
                "--redis-wait-replicas",
                "1",
            ],
            &[],
        )
        .unwrap();
        let StoreSettings::Redis { wait_replicas, .. } = &s.store else {
            panic!("memory store");
        };
        assert_eq!(*wait_replicas, 1);
        assert_eq!(
            topology(&s),
            &RedisTopology::Sentinel {
                sentinels: vec![
                    "rediss://:sent%3Apw@s-0:26379".into(),
                    "rediss://:sent%3Apw@s-1:26379".into(),
                ],
                master: "registry-primary".into(),
                username: Some("app".into()),
                password: Some("data-pw".into()),
                tls: true,
            }
        );
        let logged = format!("{s:?}");
        assert!(
            !logged.contains("sent%3Apw") && !logged.contains("data-pw"),
            "{logged}"
        );
        assert!(logged.contains("registry-primary"), "{logged}");
    }

    #[test]
    fn sentinel_defaults_and_auto() {
        let s = settings(&["--redis-sentinels", "127.0.0.1:26379"], &[]).unwrap();
        assert_eq!(
            topology(&s),
            &RedisTopology::Sentinel {
                sentinels: vec!["redis://127.0.0.1:26379".into()],
                master: "mymaster".into(),
                username: None,
                password: None,
                tls: false,
            },
            "auto picks redis; the master is mymaster; no TLS"
        );
        let StoreSettings::Redis { wait_replicas, .. } = &s.store else {
            panic!("memory store");
        };
        assert_eq!(*wait_replicas, 0);
    }

    #[test]
    fn cluster_nodes_take_tls_and_keep_every_seed() {
        let s = settings(
            &[
                "--redis-cluster-nodes",
                "a:7000,b:7001,rediss://c:7002",
                "--redis-tls",
                "true",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            topology(&s),
            &RedisTopology::Cluster(vec![
                "rediss://a:7000".into(),
                "rediss://b:7001".into(),
                "rediss://c:7002".into(),
            ])
        );
    }

    #[test]
    fn bad_topology_values_name_their_setting() {
        let err = settings(&["--redis-sentinels", "s-0"], &[]).unwrap_err();
        assert!(err.to_string().starts_with("--redis-sentinels"), "{err}");
        let err = settings(&["--redis-cluster-nodes", "a:1,nope"], &[]).unwrap_err();
        assert!(
            err.to_string().starts_with("--redis-cluster-nodes"),
            "{err}"
        );
        let err = settings(
            &["--redis-sentinels", "s:1", "--redis-sentinel-master", " "],
            &[],
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("--redis-sentinel-master"),
            "{err}"
        );
        assert!(parse(&["--redis-wait-replicas", "-1"]).is_err());
        assert!(parse(&["--redis-tls", "maybe"]).is_err());
    }

    #[test]
    fn bad_legacy_values_name_the_variable() {
        let err = settings(&[], &[("GRPC_PORT", "x")]).unwrap_err();
        assert!(err.to_string().starts_with("GRPC_PORT"));
        let err = settings(&[], &[("ETCD_ENDPOINTS", "[oops")]).unwrap_err();
        assert!(err.to_string().starts_with("ETCD_ENDPOINTS"));
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
