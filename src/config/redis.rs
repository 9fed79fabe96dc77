//! Where the Redis store is (BEHAVIOUR.md §8), and how it is logged.

use std::fmt;

use super::{Config, ConfigError, legacy};

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

impl Config {
    /// How Redis is found: exactly one of `--redis-url`, `--redis-sentinels`
    /// and `--redis-cluster-nodes`, else the first of the original's
    /// `ETCD_ENDPOINTS`; credentials fill in what a URL does not carry.
    pub(super) fn redis_topology(
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
