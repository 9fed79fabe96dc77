//! The connection layer (BEHAVIOUR.md §8): gives the store a primary to talk
//! to and a feed to subscribe to, whether the primary is named by a URL,
//! found through Redis Sentinel, or is the primary of the registry's slot in
//! a Redis Cluster. The rest of the store does not know which.
//!
//! - **URL**: the connections of one [`connection::Primary`] to it (shared
//!   multiplexed connections, and a `deadpool-redis` pool for writes that
//!   wait for replicas); the feed is a pub/sub connection to it.
//! - **Sentinel** (`sentinel.rs`): redis-rs' `SentinelClient` asks any
//!   reachable Sentinel for the primary and verifies its role; the
//!   connections to that primary serve every call until the primary must be
//!   resolved again: when a connection to it fails or is refused, when it
//!   answers `READONLY`/`LOADING`/`MASTERDOWN`, or when a Sentinel announces
//!   `+switch-master` (the last two also end the feed's connection, which
//!   resolves afresh at each reconnection). Connections that fail are never
//!   used again. (`deadpool-redis`' own Sentinel pool resolves the primary
//!   for every new connection, one at a time, under redis-rs' default 500 ms
//!   reply bound: a burst of calls at start-up outwaited the pool, and WAIT
//!   cannot block for 1 s under it.)
//! - **Cluster** (`cluster.rs`): redis-rs' cluster client, which follows `MOVED`/`ASK` and
//!   refreshes its slot map after a failover. Every key shares one hash tag,
//!   so every script runs on the slot's primary; scripts publish with
//!   `SPUBLISH` and the feed subscribes with `SSUBSCRIBE` (sharded pub/sub,
//!   RESP3). Seeds that are not a cluster (`cluster_enabled:0`) are used as
//!   one plain Redis at the first address.
//!
//! With `wait_replicas > 0`, every write is sent in one pipeline with
//! `WAIT n 1000` on the same connection (so WAIT counts that write), and
//! fewer acknowledgements than asked for are an error: the outcome is
//! unknown to the caller.
//!
//! Depends on: redis, deadpool-redis, the store's error classification.

mod cluster;
mod connection;
mod feed;
mod sentinel;

use std::{fmt, sync::Arc, time::Duration};

use redis::{Value, cluster_async::ClusterConnection, sentinel::SentinelClient};
use tokio::sync::{Mutex, OnceCell, watch};

use self::connection::{Failure, Primary, connection_config, not_primary, run_on};
pub use self::feed::{FeedConnection, FeedSink, FeedStream};
use super::{classify, scripts::Call};
use crate::domain::{Error, Result};

/// How long opening a connection may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a `WAIT` may block, in ms (BEHAVIOUR.md §8: at most 1 s).
pub(super) const WAIT_MS: u64 = 1000;
/// Push messages a cluster feed connection buffers; beyond it the feed
/// counts as lost (consumers resync) rather than dropping a message.
pub(super) const FEED_BUFFER: usize = 16 * 1024;
/// Longest wait between attempts to hear a Sentinel's announcements.
pub(super) const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Where the registry's Redis is, as configured.
#[derive(Clone)]
pub enum Endpoints {
    /// One Redis at a `redis://` or `rediss://` URL (credentials included).
    Url(String),
    /// The primary that Sentinels monitor under a name.
    Sentinel(SentinelEndpoints),
    /// Seed nodes of a Redis Cluster, as URLs (credentials included); when
    /// they are not a cluster, the first is used as one plain Redis.
    Cluster(Vec<String>),
}

/// How to reach a Sentinel-monitored primary.
#[derive(Clone)]
pub struct SentinelEndpoints {
    /// Sentinels as URLs (`redis://:password@host:port`, `rediss://` for TLS).
    pub sentinels: Vec<String>,
    /// The monitored primary's name.
    pub master: String,
    /// Username of the data nodes.
    pub username: Option<String>,
    /// Password of the data nodes (secret).
    pub password: Option<String>,
    /// TLS to the data nodes.
    pub tls: bool,
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: URLs may carry passwords.
        match self {
            Self::Url(_) => f.write_str("url"),
            Self::Sentinel(s) => {
                write!(f, "sentinel({}, {} sentinels)", s.master, s.sentinels.len())
            }
            Self::Cluster(nodes) => write!(f, "cluster({} seeds)", nodes.len()),
        }
    }
}

/// Whether a call changes state a client will be told about (and so waits
/// for replicas when asked to).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Durability {
    /// A client-acknowledged write: `WAIT` when configured.
    Acknowledged,
    /// A read, or a write nobody is told about (the reaper's).
    Plain,
}

/// The store's connections, for any topology.
pub struct Topology {
    endpoints: Endpoints,
    /// Resolved once reachable (a cluster's seeds must be asked whether
    /// they are a cluster); known at once for the other topologies.
    mode: OnceCell<Mode>,
    wait_replicas: u32,
    /// How long a command's reply may take on the command connections.
    response_timeout: Duration,
    /// Asks the Sentinels (for the pool, the feed and snapshots) and picks
    /// one to hear announcements from; `None` on other topologies.
    sentinel: Option<Mutex<SentinelClient>>,
    /// Bumped whenever every connection must find the primary again
    /// (Sentinel announced a switch, or a node answered as a replica): the
    /// feed connection ends, so the feed resynchronises.
    switches: watch::Sender<u64>,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("endpoints", &self.endpoints)
            .field("wait_replicas", &self.wait_replicas)
            .finish_non_exhaustive()
    }
}

enum Mode {
    /// One Redis by URL (also a non-cluster's first seed).
    Direct {
        /// Its connections.
        primary: Box<Primary>,
    },
    /// A Sentinel-resolved primary.
    Sentinel {
        /// The connections to the primary last resolved, with its
        /// generation; `None` until resolved, and again once it must be
        /// resolved anew.
        current: std::sync::RwLock<Option<(u64, Arc<Primary>)>>,
        /// Numbers the resolutions.
        generation: std::sync::atomic::AtomicU64,
    },
    /// A Redis Cluster.
    Cluster {
        /// The command connection (multiplexed, shared by every call).
        commands: ClusterConnection,
        /// For the feed's own connections (RESP3, with push messages).
        nodes: Vec<String>,
    },
}

fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Unavailable {
        source: source.into(),
    }
}

fn direct(url: &str, response: Duration) -> std::result::Result<Mode, redis::RedisError> {
    let client = redis::Client::open(url)?;
    Ok(Mode::Direct {
        primary: Box::new(Primary::new(client, response)?),
    })
}

impl Topology {
    /// A topology for `endpoints`. Connects lazily: nothing unreachable now
    /// stops it from working later.
    ///
    /// # Errors
    /// When an address or URL cannot be parsed.
    pub fn new(
        endpoints: Endpoints,
        wait_replicas: u32,
        response_timeout: Duration,
    ) -> std::result::Result<Self, redis::RedisError> {
        let (mode, sentinel) = match &endpoints {
            Endpoints::Url(url) => (Some(direct(url, response_timeout)?), None),
            Endpoints::Sentinel(s) => (
                Some(Mode::Sentinel {
                    current: std::sync::RwLock::new(None),
                    generation: std::sync::atomic::AtomicU64::new(0),
                }),
                Some(Mutex::new(sentinel::client(s)?)),
            ),
            Endpoints::Cluster(nodes) => {
                // Parse now, so a bad address is a start-up error.
                cluster::builder(nodes).build()?;
                (None, None)
            }
        };
        let (switches, _) = watch::channel(0);
        Ok(Self {
            endpoints,
            mode: OnceCell::new_with(mode),
            wait_replicas,
            response_timeout,
            sentinel,
            switches,
        })
    }

    async fn mode(&self) -> Result<&Mode> {
        let response_timeout = self.response_timeout;
        let Endpoints::Cluster(nodes) = &self.endpoints else {
            return self
                .mode
                .get()
                .ok_or_else(|| unavailable("no connection mode"));
        };
        self.mode
            .get_or_try_init(|| async {
                let probe = tokio::time::timeout(CONNECT_TIMEOUT * 3, cluster::probe(nodes))
                    .await
                    .map_err(|_| unavailable("no seed node answered in time"))??;
                match probe {
                    false => {
                        tracing::info!(
                            "the Redis nodes are not a cluster: using the first as one plain Redis"
                        );
                        let first = nodes.first().ok_or_else(|| unavailable("no seed node"))?;
                        direct(first, response_timeout).map_err(classify)
                    }
                    true => {
                        let client = cluster::builder(nodes)
                            .connection_timeout(CONNECT_TIMEOUT)
                            .response_timeout(response_timeout)
                            .build()
                            .map_err(classify)?;
                        let commands = tokio::time::timeout(
                            CONNECT_TIMEOUT * 3,
                            client.get_async_connection(),
                        )
                        .await
                        .map_err(|_| unavailable("cluster did not answer in time"))?
                        .map_err(classify)?;
                        tracing::info!("connected to a Redis Cluster");
                        Ok(Mode::Cluster {
                            commands,
                            nodes: nodes.clone(),
                        })
                    }
                }
            })
            .await
    }

    /// Runs `call` on the primary; an acknowledged write also waits for
    /// the configured number of replicas.
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached or did not take the write
    /// (or too few replicas acknowledged it); `Internal` for a bug.
    pub async fn run(&self, call: &Call<'_>, durability: Durability) -> Result<Value> {
        let wait = match durability {
            Durability::Acknowledged if self.wait_replicas > 0 => Some(self.wait_replicas),
            _ => None,
        };
        match self.mode().await? {
            Mode::Direct { primary } => primary.run(call, wait).await.map_err(Failure::into_error),
            Mode::Sentinel { .. } => {
                let (generation, primary) = self.sentinel_primary_connections().await?;
                let result = primary.run(call, wait).await;
                match &result {
                    // No new connection to the primary we knew: it may be
                    // gone, ask the Sentinels (merely waiting for a busy
                    // pool says nothing about the primary).
                    Err(Failure::Pool(deadpool_redis::PoolError::Timeout(
                        deadpool_redis::TimeoutType::Wait,
                    ))) => {}
                    Err(Failure::Pool(_)) => self.forget(generation),
                    Err(Failure::Command(error)) if not_primary(error) => {
                        tracing::warn!(error = %error, "Redis answered as a replica: resolving the primary again");
                        self.switched();
                    }
                    Err(Failure::Command(error))
                        if error.is_connection_refusal() || error.is_connection_dropped() =>
                    {
                        self.forget(generation);
                    }
                    _ => {}
                }
                result.map_err(Failure::into_error)
            }
            Mode::Cluster { commands, .. } => {
                let mut conn = commands.clone();
                run_on(&mut conn, call, true, wait).await.map_err(classify)
            }
        }
    }

    /// Runs a read whose reply may be large (a snapshot) on a connection of
    /// its own whose replies may take `response_timeout`.
    ///
    /// # Errors
    /// As [`Topology::run`].
    pub async fn run_long(&self, call: &Call<'_>, response_timeout: Duration) -> Result<Value> {
        let config = connection_config(response_timeout);
        let primary = match self.mode().await? {
            Mode::Direct { primary } => primary.client.clone(),
            Mode::Sentinel { .. } => self.sentinel_primary().await?,
            Mode::Cluster { nodes, .. } => {
                let client = cluster::builder(nodes)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(response_timeout)
                    .build()
                    .map_err(classify)?;
                let mut conn = client.get_async_connection().await.map_err(classify)?;
                return run_on(&mut conn, call, true, None).await.map_err(classify);
            }
        };
        let mut conn = primary
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(classify)?;
        run_on(&mut conn, call, false, None).await.map_err(classify)
    }
}
