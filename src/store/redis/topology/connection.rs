//! The connections to one Redis primary (by URL, or the one the Sentinels
//! name) and how a script invocation runs on them.
//!
//! Every call that does not wait for replicas is pipelined on a few
//! multiplexed connections shared by every caller: one round trip per call,
//! and concurrent calls share writes and reads of the socket. (A pooled
//! connection per call cost a checkout — `UNWATCH` + `PING` — before every
//! script: three round trips for one keep-alive.) A write that must be
//! acknowledged by replicas takes a pooled connection of its own, because
//! `WAIT` blocks the connection it is sent on.

use std::{
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use deadpool_redis::Runtime;
use redis::{
    AsyncConnectionConfig, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};
use tokio::sync::Mutex;

use super::{CONNECT_TIMEOUT, WAIT_MS, unavailable};
use crate::{
    domain::Error,
    store::redis::{POOL_SIZE, POOL_WAIT, PoolBusy, scripts::Call},
};

/// Multiplexed connections shared by the calls that need no connection of
/// their own. Redis runs one command at a time, so a few suffice: more
/// only spread the replies' decoding over the runtime's threads.
const SHARED_CONNECTIONS: usize = 4;

/// Why a call on a [`Primary`] failed.
pub(super) enum Failure {
    /// No pooled connection (busy, or none could be opened).
    Pool(deadpool_redis::PoolError),
    /// The connection or the command failed.
    Command(redis::RedisError),
}

impl Failure {
    /// As a store error.
    pub(super) fn into_error(self) -> Error {
        match self {
            Self::Pool(error) => pool_error(error),
            Self::Command(error) => crate::store::redis::classify(error),
        }
    }
}

/// The connections to one primary.
pub(super) struct Primary {
    /// For connections of their own (snapshots, the feed).
    pub(super) client: redis::Client,
    /// Exclusive connections, for writes followed by `WAIT`.
    pool: deadpool_redis::Pool,
    shared: Shared,
}

impl Primary {
    /// Connections to `client`'s server; none is opened yet.
    pub(super) fn new(
        client: redis::Client,
        response: Duration,
    ) -> std::result::Result<Self, redis::RedisError> {
        let config = connection_config(response);
        let manager = deadpool_redis::Manager::new_with_config(
            client.get_connection_info().clone(),
            config.clone(),
        )?;
        let pool = deadpool_redis::Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "connection pool",
                    e.to_string(),
                ))
            })?;
        Ok(Self {
            shared: Shared::new(client.clone(), config),
            client,
            pool,
        })
    }

    /// Runs `call`, followed by `WAIT replicas` on the same (exclusive)
    /// connection when `wait` asks for it.
    pub(super) async fn run(&self, call: &Call<'_>, wait: Option<u32>) -> Result<Value, Failure> {
        if wait.is_none() {
            return self.shared.run(call).await.map_err(Failure::Command);
        }
        let mut conn = self.pool.get().await.map_err(Failure::Pool)?;
        let result = run_on(&mut *conn, call, false, wait).await;
        if let Err(error) = &result
            && broken(error)
        {
            // Never back into the pool.
            drop(deadpool_redis::Connection::take(conn));
        }
        result.map_err(Failure::Command)
    }

    /// Drops the shared connections: the next calls open new ones. Called
    /// when the feed connects again after a loss: whatever broke it (a
    /// restart, a failover) broke these too, and a multiplexed connection
    /// only finds out by failing a call.
    pub(super) async fn reconnect(&self) {
        for slot in &self.shared.slots {
            *slot.lock().await = None;
        }
    }
}

/// One shared connection, numbered so that a failure only replaces the
/// connection it happened on.
#[derive(Clone)]
struct Numbered {
    number: u64,
    conn: MultiplexedConnection,
}

struct Shared {
    client: redis::Client,
    config: AsyncConnectionConfig,
    slots: Vec<Mutex<Option<Numbered>>>,
    next: AtomicUsize,
    opened: AtomicU64,
}

impl Shared {
    fn new(client: redis::Client, config: AsyncConnectionConfig) -> Self {
        Self {
            client,
            config,
            slots: (0..SHARED_CONNECTIONS).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
        }
    }

    async fn run(&self, call: &Call<'_>) -> redis::RedisResult<Value> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut numbered = {
            // Held while connecting: the slot's other callers wait for this
            // connection rather than open their own.
            let mut current = slot.lock().await;
            match &*current {
                Some(numbered) => numbered.clone(),
                None => {
                    let conn = self
                        .client
                        .get_multiplexed_async_connection_with_config(&self.config)
                        .await?;
                    let numbered = Numbered {
                        number: self.opened.fetch_add(1, Ordering::Relaxed),
                        conn,
                    };
                    *current = Some(numbered.clone());
                    numbered
                }
            }
        };
        let result = run_on(&mut numbered.conn, call, false, None).await;
        // A late reply (a timeout) leaves a multiplexed connection usable;
        // a lost one or a demoted primary does not.
        if let Err(error) = &result
            && broken(error)
            && !error.is_timeout()
        {
            let mut current = slot.lock().await;
            if current
                .as_ref()
                .is_some_and(|c| c.number == numbered.number)
            {
                *current = None;
            }
        }
        result
    }
}

/// The settings of every command connection.
pub(super) fn connection_config(response: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response))
}

/// Whether an error means the connection talks to something that is not
/// (or no longer) the primary.
pub(super) fn not_primary(error: &redis::RedisError) -> bool {
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
/// ([`PoolBusy`]); any other pool failure means Redis is unreachable.
fn pool_error(error: deadpool_redis::PoolError) -> Error {
    match error {
        deadpool_redis::PoolError::Timeout(deadpool_redis::TimeoutType::Wait) => {
            Error::unavailable(PoolBusy)
        }
        other => unavailable(other.to_string()),
    }
}

/// `EVALSHA` (then `EVAL` if the server does not know the script: after a
/// restart, a failover or `SCRIPT FLUSH`), followed in the same pipeline by
/// `WAIT` when replicas must acknowledge.
pub(super) async fn run_on<C: ConnectionLike + Send>(
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
