//! The connection layer (BEHAVIOUR.md §8): gives the store a primary to talk
//! to and a feed to subscribe to, whether the primary is named by a URL,
//! found through Redis Sentinel, or is the primary of the registry's slot in
//! a Redis Cluster. The rest of the store does not know which.
//!
//! - **URL**: a `deadpool-redis` pool of multiplexed connections to it; the
//!   feed is a pub/sub connection to it.
//! - **Sentinel**: redis-rs' `SentinelClient` asks any reachable Sentinel
//!   for the primary and verifies its role; a `deadpool-redis` pool to that
//!   primary serves every call until the primary must be resolved again:
//!   when a connection to it fails or is refused, when it answers
//!   `READONLY`/`LOADING`/`MASTERDOWN`, or when a Sentinel announces
//!   `+switch-master` (the last two also end the feed's connection, which
//!   resolves afresh at each reconnection). Connections that fail are never
//!   put back. (`deadpool-redis`' own Sentinel pool resolves the primary for
//!   every new connection, one at a time, under redis-rs' default 500 ms
//!   reply bound: a burst of calls at start-up outwaited the pool, and WAIT
//!   cannot block for 1 s under it.)
//! - **Cluster**: redis-rs' cluster client, which follows `MOVED`/`ASK` and
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

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use deadpool_redis::Runtime;
use redis::{
    ToRedisArgs, Value,
    aio::{ConnectionLike, PubSubSink, PubSubStream},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};
use tokio::sync::{Mutex, OnceCell, mpsc, watch};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{POOL_SIZE, POOL_WAIT};
use crate::domain::{Error, Result};

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a `WAIT` may block, in ms (BEHAVIOUR.md §8: at most 1 s).
const WAIT_MS: u64 = 1000;
/// Push messages a cluster feed connection buffers; beyond it the feed
/// counts as lost (consumers resync) rather than dropping a message.
const FEED_BUFFER: usize = 16 * 1024;
/// Longest wait between attempts to hear a Sentinel's announcements.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

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

/// One Lua script in the two forms the topologies need: publishing with
/// `PUBLISH`, or with `SPUBLISH` on a cluster.
#[derive(Debug)]
pub struct Lua {
    plain: Body,
    sharded: Body,
}

#[derive(Debug)]
struct Body {
    code: String,
    hash: String,
}

impl Body {
    fn new(code: String) -> Self {
        let hash = redis::Script::new(&code).get_hash().to_owned();
        Self { code, hash }
    }
}

impl Lua {
    /// The script `source`, whose publishing calls use the Lua variable
    /// `PUBLISH`: defined here as the command of each form.
    pub fn new(source: &str) -> Self {
        let with = |command: &str| Body::new(format!("local PUBLISH = '{command}'\n{source}"));
        Self {
            plain: with("PUBLISH"),
            sharded: with("SPUBLISH"),
        }
    }

    /// Starts a call; add keys and arguments, then run it through the
    /// topology.
    pub fn prepare_invoke(&self) -> Call<'_> {
        Call {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One invocation of a [`Lua`] script: its keys and arguments.
pub struct Call<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Arguments may carry token hashes: counts only.
        f.debug_struct("Call")
            .field("keys", &self.keys.len())
            .field("args", &self.args.len())
            .finish()
    }
}

impl Call<'_> {
    /// Adds `KEYS[i]`.
    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    /// Adds `ARGV[i]`.
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    fn command(&self, name: &str, sharded: bool, code: bool) -> redis::Cmd {
        let body = if sharded {
            &self.lua.sharded
        } else {
            &self.lua.plain
        };
        let mut cmd = redis::cmd(name);
        if code {
            cmd.arg(body.code.as_str());
        } else {
            cmd.arg(body.hash.as_str());
        }
        cmd.arg(self.keys.len()).arg(&self.keys).arg(&self.args);
        cmd
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
        /// For snapshots' own connections.
        client: Box<redis::Client>,
        /// For every other call.
        pool: deadpool_redis::Pool,
    },
    /// A Sentinel-resolved primary.
    Sentinel {
        /// The pool to the primary last resolved, with its generation;
        /// `None` until resolved, and again once it must be resolved anew.
        current: std::sync::RwLock<Option<(u64, deadpool_redis::Pool)>>,
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

fn config_error(what: &str, e: impl fmt::Display) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "connection pool",
        format!("{what}: {e}"),
    ))
}

fn connection_config(response: Duration) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response))
}

fn direct(url: &str, response: Duration) -> std::result::Result<Mode, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let pool = pool_for(url, response)?;
    Ok(Mode::Direct {
        client: Box::new(client),
        pool,
    })
}

fn pool_for(
    target: impl redis::IntoConnectionInfo,
    response: Duration,
) -> std::result::Result<deadpool_redis::Pool, redis::RedisError> {
    let manager = deadpool_redis::Manager::new_with_config(target, connection_config(response))?;
    deadpool_redis::Pool::builder(manager)
        .max_size(POOL_SIZE)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| config_error("pool", e))
}

fn sentinel_client(
    s: &SentinelEndpoints,
) -> std::result::Result<SentinelClient, redis::RedisError> {
    SentinelClient::build(
        s.sentinels.clone(),
        s.master.clone(),
        Some(node_info(s)),
        SentinelServerType::Master,
    )
}

fn node_info(s: &SentinelEndpoints) -> SentinelNodeConnectionInfo {
    let mut redis_info = redis::RedisConnectionInfo::default();
    if let Some(username) = &s.username {
        redis_info = redis_info.set_username(username);
    }
    if let Some(password) = &s.password {
        redis_info = redis_info.set_password(password);
    }
    let mut info = SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info);
    if s.tls {
        info = info.set_tls_mode(redis::TlsMode::Secure);
    }
    info
}

fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Unavailable {
        source: source.into(),
    }
}

/// Whether an error means the connection talks to something that is not
/// (or no longer) the primary.
fn not_primary(error: &redis::RedisError) -> bool {
    matches!(error.code(), Some("READONLY" | "LOADING" | "MASTERDOWN"))
}

/// Whether a connection that gave this error must not be used again.
fn broken(error: &redis::RedisError) -> bool {
    not_primary(error)
        || error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
}

/// A pool that had no connection to give within the pool wait is busy
/// ([`super::PoolBusy`]); any other pool failure means Redis is unreachable.
fn pool_error(error: deadpool_redis::PoolError) -> Error {
    match error {
        deadpool_redis::PoolError::Timeout(deadpool_redis::TimeoutType::Wait) => {
            Error::unavailable(super::PoolBusy)
        }
        other => unavailable(other.to_string()),
    }
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
                Some(Mutex::new(sentinel_client(s)?)),
            ),
            Endpoints::Cluster(nodes) => {
                // Parse now, so a bad address is a start-up error.
                cluster_builder(nodes).build()?;
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
                let probe = tokio::time::timeout(CONNECT_TIMEOUT * 3, probe_cluster(nodes))
                    .await
                    .map_err(|_| unavailable("no seed node answered in time"))??;
                match probe {
                    false => {
                        tracing::info!(
                            "the Redis nodes are not a cluster: using the first as one plain Redis"
                        );
                        let first = nodes.first().ok_or_else(|| unavailable("no seed node"))?;
                        direct(first, response_timeout).map_err(super::classify)
                    }
                    true => {
                        let client = cluster_builder(nodes)
                            .connection_timeout(CONNECT_TIMEOUT)
                            .response_timeout(response_timeout)
                            .build()
                            .map_err(super::classify)?;
                        let commands = tokio::time::timeout(
                            CONNECT_TIMEOUT * 3,
                            client.get_async_connection(),
                        )
                        .await
                        .map_err(|_| unavailable("cluster did not answer in time"))?
                        .map_err(super::classify)?;
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
            Mode::Direct { pool, .. } => {
                let mut conn = pool.get().await.map_err(pool_error)?;
                let result = run_on(&mut *conn, call, false, wait).await;
                if let Err(error) = &result
                    && broken(error)
                {
                    // Never back into the pool.
                    drop(deadpool_redis::Connection::take(conn));
                }
                result.map_err(super::classify)
            }
            Mode::Sentinel { .. } => {
                let (generation, pool) = self.sentinel_pool().await?;
                let mut conn = match pool.get().await {
                    Ok(conn) => conn,
                    Err(error) => {
                        // No new connection to the primary we knew: it
                        // may be gone, ask the Sentinels (merely waiting
                        // for a busy pool says nothing about the primary).
                        if !matches!(
                            error,
                            deadpool_redis::PoolError::Timeout(deadpool_redis::TimeoutType::Wait)
                        ) {
                            self.forget(generation);
                        }
                        return Err(pool_error(error));
                    }
                };
                let result = run_on(&mut *conn, call, false, wait).await;
                if let Err(error) = &result {
                    if not_primary(error) {
                        tracing::warn!(error = %error, "Redis answered as a replica: resolving the primary again");
                        self.switched();
                    } else if error.is_connection_refusal() || error.is_connection_dropped() {
                        self.forget(generation);
                    }
                    if broken(error) {
                        drop(deadpool_redis::Connection::take(conn));
                    }
                }
                result.map_err(super::classify)
            }
            Mode::Cluster { commands, .. } => {
                let mut conn = commands.clone();
                run_on(&mut conn, call, true, wait)
                    .await
                    .map_err(super::classify)
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
            Mode::Direct { client, .. } => (**client).clone(),
            Mode::Sentinel { .. } => self.sentinel_primary().await?,
            Mode::Cluster { nodes, .. } => {
                let client = cluster_builder(nodes)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(response_timeout)
                    .build()
                    .map_err(super::classify)?;
                let mut conn = client
                    .get_async_connection()
                    .await
                    .map_err(super::classify)?;
                return run_on(&mut conn, call, true, None)
                    .await
                    .map_err(super::classify);
            }
        };
        let mut conn = primary
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(super::classify)?;
        run_on(&mut conn, call, false, None)
            .await
            .map_err(super::classify)
    }

    async fn sentinel_primary(&self) -> Result<redis::Client> {
        let sentinel = self
            .sentinel
            .as_ref()
            .ok_or_else(|| unavailable("not a Sentinel topology"))?;
        sentinel
            .lock()
            .await
            .async_get_client()
            .await
            .map_err(super::classify)
    }

    /// The pool to the primary the Sentinels name (and whose role the
    /// crate verified), resolving it first when none is current. One
    /// resolution serves every connection until [`Topology::forget`].
    async fn sentinel_pool(&self) -> Result<(u64, deadpool_redis::Pool)> {
        let Some(Mode::Sentinel {
            current,
            generation,
        }) = self.mode.get()
        else {
            return Err(unavailable("not a Sentinel topology"));
        };
        let known = || current.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(known) = known() {
            return Ok(known);
        }
        let sentinel = self
            .sentinel
            .as_ref()
            .ok_or_else(|| unavailable("not a Sentinel topology"))?;
        // One resolution at a time: the others wait for its result.
        let mut sentinel = sentinel.lock().await;
        if let Some(known) = known() {
            return Ok(known);
        }
        let client = tokio::time::timeout(CONNECT_TIMEOUT, sentinel.async_get_client())
            .await
            .map_err(|_| unavailable("no Sentinel named a primary in time"))?
            .map_err(super::classify)?;
        let pool = pool_for(client.get_connection_info().clone(), self.response_timeout)
            .map_err(super::classify)?;
        let resolved = (generation.fetch_add(1, Ordering::AcqRel) + 1, pool);
        *current.write().unwrap_or_else(|p| p.into_inner()) = Some(resolved.clone());
        tracing::info!(
            primary = %client.get_connection_info().addr(),
            "primary resolved through Sentinel"
        );
        Ok(resolved)
    }

    /// The pool of resolution `generation` may point at a primary that is
    /// gone: the next call resolves again (a later resolution is kept).
    fn forget(&self, generation: u64) {
        if let Some(Mode::Sentinel { current, .. }) = self.mode.get() {
            let mut current = current.write().unwrap_or_else(|p| p.into_inner());
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                *current = None;
            }
        }
    }

    /// Every connection must find the primary again.
    fn switched(&self) {
        if let Some(Mode::Sentinel { current, .. }) = self.mode.get() {
            *current.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
        self.switches.send_modify(|n| *n += 1);
    }

    /// Opens the feed's connection: a subscriber on the primary (on the
    /// slot's primary, sharded, on a cluster).
    ///
    /// # Errors
    /// `Unavailable` when it cannot be reached.
    pub async fn feed(&self, response_timeout: Duration) -> Result<FeedConnection> {
        let switches = self.switches.subscribe();
        let (sink, stream) = match self.mode().await? {
            Mode::Direct { client, .. } => {
                let (sink, stream) = pubsub(client).await?;
                (FeedSink::Plain(sink), FeedStream::Plain(stream))
            }
            Mode::Sentinel { .. } => {
                let client = self.sentinel_primary().await?;
                let (sink, stream) = pubsub(&client).await?;
                (FeedSink::Plain(sink), FeedStream::Plain(stream))
            }
            Mode::Cluster { nodes, .. } => {
                let (tx, rx) = mpsc::channel(FEED_BUFFER);
                let overflowed = Arc::new(AtomicBool::new(false));
                let flag = overflowed.clone();
                let sender = move |info: redis::PushInfo| {
                    let sent = tx.try_send(info);
                    if sent.is_err() {
                        flag.store(true, Ordering::Release);
                    }
                    sent
                };
                let client = cluster_builder(nodes)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(response_timeout)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(sender)
                    .build()
                    .map_err(super::classify)?;
                let conn = client
                    .get_async_connection()
                    .await
                    .map_err(super::classify)?;
                (
                    FeedSink::Cluster(conn),
                    FeedStream::Cluster { rx, overflowed },
                )
            }
        };
        Ok(FeedConnection {
            sink,
            stream,
            switches,
        })
    }

    /// Runs until `shutdown`: on a Sentinel topology, listens to the
    /// Sentinels' `+switch-master` announcements and makes every connection
    /// find the new primary at once. Nothing to do on the others.
    pub async fn run_announcements(self: Arc<Self>, shutdown: CancellationToken) {
        let Endpoints::Sentinel(s) = &self.endpoints else {
            return;
        };
        let mut backoff = Duration::from_millis(50);
        while !shutdown.is_cancelled() {
            match self.announcements().await {
                Ok(mut stream) => {
                    backoff = Duration::from_millis(50);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            message = stream.next() => {
                                let Some(message) = message else { break };
                                let payload: String = message.get_payload().unwrap_or_default();
                                if payload.split(' ').next() == Some(s.master.as_str()) {
                                    tracing::warn!(master = %s.master, "Sentinel announced a new primary");
                                    self.switched();
                                }
                            }
                        }
                    }
                    tracing::debug!("lost the Sentinel announcements; reconnecting");
                }
                Err(error) => {
                    tracing::debug!(error = %crate::domain::error_chain(&error), "no Sentinel to listen to; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn announcements(&self) -> Result<PubSubStream> {
        let sentinel = self
            .sentinel
            .as_ref()
            .ok_or_else(|| unavailable("not a Sentinel topology"))?;
        let connect = async {
            // The lock only for choosing the Sentinel: resolutions of the
            // primary must not wait for this subscription.
            let client = {
                let mut sentinel = sentinel.lock().await;
                sentinel.async_get_sentinel_client().await?
            };
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 3, connect).await {
            Ok(result) => result.map_err(super::classify),
            Err(_) => Err(unavailable("Sentinel did not answer in time")),
        }
    }
}

fn cluster_builder(nodes: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.to_vec())
}

/// Whether the first seed that answers says it is a cluster node.
async fn probe_cluster(nodes: &[String]) -> Result<bool> {
    let mut last = unavailable("no seed node");
    for node in nodes {
        let attempt = async {
            let client = redis::Client::open(node.as_str())?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&connection_config(CONNECT_TIMEOUT))
                .await?;
            redis::cmd("INFO")
                .arg("cluster")
                .query_async::<String>(&mut conn)
                .await
        };
        match attempt.await {
            Ok(info) => return Ok(info.contains("cluster_enabled:1")),
            Err(error) => last = super::classify(error),
        }
    }
    Err(last)
}

async fn pubsub(client: &redis::Client) -> Result<(PubSubSink, PubSubStream)> {
    let pubsub = client.get_async_pubsub().await.map_err(super::classify)?;
    Ok(pubsub.split())
}

/// `EVALSHA` (then `EVAL` if the server does not know the script: after a
/// restart, a failover or `SCRIPT FLUSH`), followed in the same pipeline by
/// `WAIT` when replicas must acknowledge.
async fn run_on<C: ConnectionLike + Send>(
    conn: &mut C,
    call: &Call<'_>,
    sharded: bool,
    wait: Option<u32>,
) -> std::result::Result<Value, redis::RedisError> {
    match attempt(conn, call.command("EVALSHA", sharded, false), wait).await {
        Err(error) if error.code() == Some("NOSCRIPT") => {
            attempt(conn, call.command("EVAL", sharded, true), wait).await
        }
        other => other,
    }
}

async fn attempt<C: ConnectionLike + Send>(
    conn: &mut C,
    cmd: redis::Cmd,
    wait: Option<u32>,
) -> std::result::Result<Value, redis::RedisError> {
    let Some(replicas) = wait else {
        return cmd.query_async(conn).await;
    };
    let mut pipe = redis::pipe();
    pipe.add_command(cmd).cmd("WAIT").arg(replicas).arg(WAIT_MS);
    let (reply, acked): (Value, i64) = pipe.query_async(conn).await?;
    if acked < i64::from(replicas) {
        // Retryable (TRYAGAIN: `Unavailable`), and no sign of a broken
        // connection.
        return Err(redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain),
            "too few replicas acknowledged the write; its outcome is unknown",
            format!("{acked} of {replicas}"),
        )));
    }
    Ok(reply)
}

/// The feed's connection: subscribe and unsubscribe through the sink, read
/// messages from the stream.
pub struct FeedConnection {
    /// Subscribing half.
    pub sink: FeedSink,
    /// Receiving half.
    pub stream: FeedStream,
    /// Ends the stream when every connection must find the primary again.
    switches: watch::Receiver<u64>,
}

impl FeedConnection {
    /// The next message; `None` when the connection is lost (or the
    /// primary changed): every consumer must resynchronise.
    pub async fn next(&mut self) -> Option<redis::Msg> {
        loop {
            tokio::select! {
                // A switch (or the topology gone): find the primary again.
                _ = self.switches.changed() => return None,
                message = self.stream.next() => match message {
                    Next::Message(message) => return Some(message),
                    Next::Lost => return None,
                    Next::Other => {}
                },
            }
        }
    }
}

/// The subscribing half of a feed connection.
#[derive(Clone)]
pub enum FeedSink {
    /// A pub/sub connection (URL, Sentinel).
    Plain(PubSubSink),
    /// The cluster connection: sharded channels.
    Cluster(ClusterConnection),
}

impl fmt::Debug for FeedSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "FeedSink::Plain",
            Self::Cluster(_) => "FeedSink::Cluster",
        })
    }
}

impl FeedSink {
    /// Subscribes to `channel` (sharded on a cluster).
    ///
    /// # Errors
    /// When the server does not confirm.
    pub async fn subscribe(&mut self, channel: String) -> redis::RedisResult<()> {
        match self {
            Self::Plain(sink) => sink.subscribe(channel).await,
            Self::Cluster(conn) => conn.ssubscribe(channel).await,
        }
    }

    /// Unsubscribes from `channel`.
    ///
    /// # Errors
    /// When the server does not confirm.
    pub async fn unsubscribe(&mut self, channel: String) -> redis::RedisResult<()> {
        match self {
            Self::Plain(sink) => sink.unsubscribe(channel).await,
            Self::Cluster(conn) => conn.sunsubscribe(channel).await,
        }
    }

    /// Checks that the connection still answers; `channel` names the node
    /// to ask on a cluster (the one holding the channel's slot).
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Plain(sink) => sink.ping::<Value>().await.map(|_| ()),
            // A keyed read routes to the slot's primary (PING would go to
            // every primary); the channel's name is never a key.
            Self::Cluster(conn) => redis::cmd("EXISTS")
                .arg(channel)
                .query_async::<Value>(conn)
                .await
                .map(|_| ()),
        }
    }
}

/// The receiving half of a feed connection.
pub enum FeedStream {
    /// Messages of a pub/sub connection.
    Plain(PubSubStream),
    /// Push messages of a cluster connection.
    Cluster {
        /// Filled by the cluster connection.
        rx: mpsc::Receiver<redis::PushInfo>,
        /// Set when a push message did not fit: the feed lost it.
        overflowed: Arc<AtomicBool>,
    },
}

impl fmt::Debug for FeedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "FeedStream::Plain",
            Self::Cluster { .. } => "FeedStream::Cluster",
        })
    }
}

enum Next {
    Message(redis::Msg),
    Lost,
    Other,
}

impl FeedStream {
    async fn next(&mut self) -> Next {
        match self {
            Self::Plain(stream) => match stream.next().await {
                Some(message) => Next::Message(message),
                None => Next::Lost,
            },
            Self::Cluster { rx, overflowed } => {
                let Some(info) = rx.recv().await else {
                    return Next::Lost;
                };
                if overflowed.load(Ordering::Acquire) {
                    return Next::Lost;
                }
                match info.kind {
                    // Any node's connection dropped: the slot's primary may
                    // have failed; the subscription is made again.
                    redis::PushKind::Disconnection => Next::Lost,
                    redis::PushKind::SMessage | redis::PushKind::Message => {
                        match redis::Msg::from_push_info(info) {
                            Some(message) => Next::Message(message),
                            None => Next::Lost,
                        }
                    }
                    _ => Next::Other,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_script_has_a_plain_and_a_sharded_form() {
        let lua = Lua::new("return redis.call(PUBLISH, KEYS[1], ARGV[1])");
        assert!(lua.plain.code.starts_with("local PUBLISH = 'PUBLISH'\n"));
        assert!(lua.sharded.code.starts_with("local PUBLISH = 'SPUBLISH'\n"));
        assert_ne!(lua.plain.hash, lua.sharded.hash);
        assert_eq!(
            lua.plain.hash,
            redis::Script::new(&lua.plain.code).get_hash()
        );
    }

    #[test]
    fn a_call_sends_its_keys_then_arguments_and_never_debugs_them() {
        let lua = Lua::new("return 1");
        let mut call = lua.prepare_invoke();
        call.key("{r}:a").key("{r}:b").arg("secret-token").arg(7);
        let cmd = call.command("EVALSHA", true, false);
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(args[0], b"EVALSHA");
        assert_eq!(args[1], lua.sharded.hash.as_bytes());
        assert_eq!(
            &args[2..],
            [&b"2"[..], b"{r}:a", b"{r}:b", b"secret-token", b"7"]
        );
        assert!(!format!("{call:?}").contains("secret"));
    }
}
