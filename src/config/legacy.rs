//! The original Python service's environment (BEHAVIOUR.md §7): a
//! deployment that only swaps the image still finds its Redis, port, TTL and
//! key prefix. Our own settings win when both are set.
//!
//! | original variable | means | ours |
//! |---|---|---|
//! | `GRPC_PORT` | gRPC port | `SERVICE_REGISTRY_PORT` |
//! | `HEARTBEAT_TIMEOUT_SECONDS` | default TTL | `HEARTBEAT_TIMEOUT` |
//! | `ETCD_ENDPOINTS` | the registry's Redis (JSON list or comma list; the first entry) | `REDIS_URL` |
//! | `REDIS_CLUSTER_NODES` | Redis nodes (same formats) | also ours |
//! | `REDIS_PASSWORD` | password of those nodes | also ours |
//! | `ETCD_PREFIX` | key prefix | `REDIS_KEY_PREFIX` |

use std::collections::BTreeMap;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::ConfigError;

/// Every variable of the original service that this registry understands.
pub const VARIABLES: [&str; 6] = [
    "GRPC_PORT",
    "HEARTBEAT_TIMEOUT_SECONDS",
    "ETCD_ENDPOINTS",
    "REDIS_CLUSTER_NODES",
    "REDIS_PASSWORD",
    "ETCD_PREFIX",
];

/// The original's variables that are set (non-empty) in an environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegacyEnv {
    values: BTreeMap<&'static str, String>,
}

/// What start-up logs about the original's environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The original's variables present in the environment.
    pub present: Vec<&'static str>,
    /// Those of them that supplied a setting (ours did not override them).
    pub used: Vec<&'static str>,
    /// Tokens are not required because the environment is the original's
    /// and `REQUIRE_REGISTRATION_TOKEN` was not set.
    pub tokens_relaxed: bool,
}

impl Report {
    /// Notes that `variable` supplied `value` (when it did).
    pub(super) fn used<T>(&mut self, variable: &'static str, value: Option<T>) -> Option<T> {
        if value.is_some() {
            self.used.push(variable);
        }
        value
    }

    /// Says, once at start, which of the original service's variables were
    /// understood, and loudly when tokens are not required because of them.
    pub fn log(&self) {
        if !self.present.is_empty() {
            tracing::warn!(
                variables = ?self.present,
                used = ?self.used,
                "environment of the original Python service understood; the registry's own \
                 variables win where both are set"
            );
        }
        if self.tokens_relaxed {
            tracing::warn!(
                "registration tokens are NOT required: the environment is the original service's \
                 and REQUIRE_REGISTRATION_TOKEN is not set; set REQUIRE_REGISTRATION_TOKEN=true \
                 once every caller sends the token Register returns"
            );
        }
    }
}

/// Username and password for Redis nodes named without a URL that carries
/// them. Secret: never logged.
#[derive(Clone, Default)]
pub struct Credentials {
    /// ACL username, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
}

impl Credentials {
    /// The userinfo part of a URL (`user:pass@`, `:pass@` or nothing),
    /// percent-encoded.
    fn userinfo(&self) -> String {
        let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        match (&self.username, &self.password) {
            (None, None) => String::new(),
            (Some(user), None) => format!("{}@", encode(user)),
            (user, Some(password)) => format!(
                "{}:{}@",
                user.as_deref().map(encode).unwrap_or_default(),
                encode(password)
            ),
        }
    }

    /// `url` with these credentials when it carries none of its own.
    pub fn apply(&self, url: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_owned();
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains('@') {
            return url.to_owned();
        }
        format!("{scheme}://{}{rest}", self.userinfo())
    }

    /// The URL of a node given as `host:port` (or already as a URL).
    pub fn url_for(&self, node: &str) -> String {
        self.node_url(node, false)
    }

    /// The URL of a node given as `host:port` (or already as a URL, which
    /// keeps its scheme): `rediss://` when `tls`.
    pub fn node_url(&self, node: &str, tls: bool) -> String {
        if node.starts_with("redis://") || node.starts_with("rediss://") {
            self.apply(node)
        } else {
            let scheme = if tls { "rediss" } else { "redis" };
            format!("{scheme}://{}{node}", self.userinfo())
        }
    }
}

impl LegacyEnv {
    /// The original's variables of this process's environment.
    pub fn from_process() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The original's variables as `lookup` finds them.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let values = VARIABLES
            .into_iter()
            .filter_map(|name| {
                lookup(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
            .collect();
        Self { values }
    }

    /// Whether any of the original's variables is set.
    pub fn any_present(&self) -> bool {
        !self.values.is_empty()
    }

    /// The names of the variables that are set, in table order.
    pub fn present(&self) -> Vec<&'static str> {
        VARIABLES
            .into_iter()
            .filter(|name| self.values.contains_key(name))
            .collect()
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|v| v.trim())
    }

    /// `GRPC_PORT`.
    ///
    /// # Errors
    /// When it is not a port number.
    pub fn port(&self) -> Result<Option<u16>, ConfigError> {
        self.get("GRPC_PORT")
            .map(|v| {
                v.parse::<u16>().map_err(|_| {
                    ConfigError::new("GRPC_PORT", format!("{v:?} is not a port number"))
                })
            })
            .transpose()
    }

    /// `HEARTBEAT_TIMEOUT_SECONDS`.
    ///
    /// # Errors
    /// When it is not a whole number of seconds.
    pub fn heartbeat_timeout(&self) -> Result<Option<u32>, ConfigError> {
        self.get("HEARTBEAT_TIMEOUT_SECONDS")
            .map(|v| {
                v.parse::<u32>().map_err(|_| {
                    ConfigError::new(
                        "HEARTBEAT_TIMEOUT_SECONDS",
                        format!("{v:?} is not a whole number of seconds"),
                    )
                })
            })
            .transpose()
    }

    /// `ETCD_PREFIX`.
    pub fn prefix(&self) -> Option<String> {
        self.get("ETCD_PREFIX").map(str::to_owned)
    }

    /// The first node of `ETCD_ENDPOINTS`: the original's own Redis.
    ///
    /// # Errors
    /// When the list is malformed or empty.
    pub fn redis_endpoint(&self) -> Result<Option<String>, ConfigError> {
        self.get("ETCD_ENDPOINTS")
            .map(|v| first_node("ETCD_ENDPOINTS", v))
            .transpose()
    }
}

/// The first entry of a node list: a JSON list (`["redis:6379"]`) or a comma
/// list (`redis-0:6379,redis-1:6379`). Each entry is `host:port` or a
/// `redis://`/`rediss://` URL.
///
/// # Errors
/// A [`ConfigError`] naming `setting` when the list is malformed or empty,
/// or its first entry is not `host:port`.
pub fn first_node(setting: &'static str, list: &str) -> Result<String, ConfigError> {
    let mut nodes = nodes(setting, list)?;
    Ok(nodes.swap_remove(0))
}

/// Every entry of a node list (formats as [`first_node`]); at least one.
///
/// # Errors
/// A [`ConfigError`] naming `setting` when the list is malformed or empty,
/// or an entry is neither `host:port` nor a Redis URL.
pub fn nodes(setting: &'static str, list: &str) -> Result<Vec<String>, ConfigError> {
    let list = list.trim();
    let entries: Vec<String> = if list.starts_with('[') {
        serde_json::from_str::<Vec<String>>(list).map_err(|e| {
            ConfigError::new(
                setting,
                format!("not a JSON list of host:port strings: {e}"),
            )
        })?
    } else {
        list.split(',').map(str::to_owned).collect()
    };
    let nodes: Vec<String> = entries
        .into_iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    if nodes.is_empty() {
        return Err(ConfigError::new(setting, "names no node"));
    }
    for node in &nodes {
        if node.starts_with("redis://") || node.starts_with("rediss://") {
            continue;
        }
        let port_ok = node.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok || node.contains(['/', '@', ' ']) {
            return Err(ConfigError::new(
                setting,
                format!("{node:?} is not host:port"),
            ));
        }
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> LegacyEnv {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LegacyEnv::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn node_lists_take_json_or_commas_and_the_first_entry() {
        assert_eq!(
            first_node("X", r#"["redis-a:6379", "redis-b:6379"]"#).unwrap(),
            "redis-a:6379"
        );
        assert_eq!(
            first_node("X", " redis-a:6379 , redis-b:6380").unwrap(),
            "redis-a:6379"
        );
        assert_eq!(first_node("X", "redis://h:1/2").unwrap(), "redis://h:1/2");
        for bad in ["[", "[]", ",", "redis", "redis:0", "a/b:1", r#"[1]"#] {
            let err = first_node("ETCD_ENDPOINTS", bad).unwrap_err();
            assert!(
                err.to_string().starts_with("ETCD_ENDPOINTS"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn only_set_variables_are_present() {
        let e = env(&[("GRPC_PORT", "50052"), ("ETCD_PREFIX", " "), ("OTHER", "1")]);
        assert_eq!(e.present(), vec!["GRPC_PORT"]);
        assert!(e.any_present());
        assert!(!env(&[]).any_present());
    }

    #[test]
    fn numbers_name_their_variable_when_bad() {
        let err = env(&[("GRPC_PORT", "http")]).port().unwrap_err();
        assert!(err.to_string().starts_with("GRPC_PORT"));
        let err = env(&[("HEARTBEAT_TIMEOUT_SECONDS", "-3")])
            .heartbeat_timeout()
            .unwrap_err();
        assert!(err.to_string().starts_with("HEARTBEAT_TIMEOUT_SECONDS"));
    }

    #[test]
    fn credentials_fill_in_what_a_url_lacks_percent_encoded() {
        let c = Credentials {
            username: None,
            password: Some("p@ss:w/rd".into()),
        };
        assert_eq!(c.url_for("h:6379"), "redis://:p%40ss%3Aw%2Frd@h:6379");
        assert_eq!(c.apply("redis://u:own@h:1"), "redis://u:own@h:1");
        assert_eq!(c.apply("rediss://h:1/0"), "rediss://:p%40ss%3Aw%2Frd@h:1/0");
        let user = Credentials {
            username: Some("app".into()),
            password: Some("s".into()),
        };
        assert_eq!(user.url_for("h:1"), "redis://app:s@h:1");
        assert_eq!(Credentials::default().url_for("h:1"), "redis://h:1");
    }
}
