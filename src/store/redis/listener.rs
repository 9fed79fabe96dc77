//! The replica's only pub/sub connection. It subscribes to the changes
//! channel (and to the mailbox channel of each agent with a live subscriber
//! here), decodes what arrives onto the in-process feed, and reconnects
//! with backoff when the connection drops or stops answering pings. Every
//! reconnection is announced with [`FeedMessage::Reset`], so the feed pump
//! resynchronises instead of missing what was published meanwhile.
//!
//! The connection comes from the [`Topology`]: on the primary by URL or
//! Sentinel (re-resolved at every reconnection, and dropped when a switch is
//! announced), or sharded pub/sub on the slot's primary of a cluster.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{
    codec,
    keys::Keys,
    topology::{FeedConnection, FeedSink, Topology},
};
use crate::{
    backoff::Backoff,
    domain::{AgentId, Error, Result},
    store::FeedMessage,
    sync,
};

/// How long connecting or (un)subscribing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often an idle connection is pinged, to notice a dead peer.
const PING_EVERY: Duration = Duration::from_millis(500);
/// First and longest wait between reconnection attempts.
const RETRY_BASE: Duration = Duration::from_millis(50);
const RETRY_CAP: Duration = Duration::from_millis(500);
/// Mailbox channels waiting to be unsubscribed; beyond it they stay
/// subscribed until the next reconnection (harmless).
const RELEASE_QUEUE: usize = 1024;

/// The pub/sub side of the Redis store.
#[derive(Debug)]
pub struct Listener {
    /// Where the feed's connection comes from.
    topology: Arc<Topology>,
    keys: Keys,
    /// The in-process feed every consumer of this replica subscribes to.
    feed: broadcast::Sender<FeedMessage>,
    /// Subscribed to the changes channel and answering pings.
    connected: AtomicBool,
    /// The last attempt to connect failed, or the connection was lost and
    /// not yet made again: Redis is known to be unreachable (not merely
    /// still connecting).
    failed: AtomicBool,
    /// The live connection's command half and its mailbox subscriptions.
    /// An async lock: (un)subscribing awaits Redis while holding it, which
    /// keeps subscribe/unsubscribe of one channel in order.
    sink: tokio::sync::Mutex<SinkState>,
    /// Live subscribers per agent on this replica. Std lock, never held
    /// across an await.
    interests: Mutex<HashMap<AgentId, usize>>,
    /// Agents whose last subscriber left, for the listener to unsubscribe.
    release: mpsc::Sender<AgentId>,
    release_rx: Mutex<Option<mpsc::Receiver<AgentId>>>,
    /// The store's highest seen revision, raised by every change received.
    highest: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct SinkState {
    sink: Option<FeedSink>,
    subscribed: HashSet<AgentId>,
}

/// Keeps an agent's mailbox channel subscribed while alive.
#[derive(Debug)]
pub struct MailboxInterest {
    listener: Arc<Listener>,
    agent_id: AgentId,
}

impl Drop for MailboxInterest {
    fn drop(&mut self) {
        let mut interests = self.listener.lock_interests();
        let last = match interests.get_mut(&self.agent_id) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            _ => {
                interests.remove(&self.agent_id);
                true
            }
        };
        drop(interests);
        if last {
            // A full queue only leaves the channel subscribed for longer.
            let _ = self.listener.release.try_send(self.agent_id);
        }
    }
}

impl Listener {
    /// A listener on `topology`; nothing connects until [`Listener::run`].
    pub fn new(
        topology: Arc<Topology>,
        keys: Keys,
        feed: broadcast::Sender<FeedMessage>,
        highest: Arc<AtomicU64>,
    ) -> Arc<Self> {
        let (release, release_rx) = mpsc::channel(RELEASE_QUEUE);
        Arc::new(Self {
            topology,
            keys,
            feed,
            connected: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            sink: tokio::sync::Mutex::new(SinkState::default()),
            interests: Mutex::new(HashMap::new()),
            release,
            release_rx: Mutex::new(Some(release_rx)),
            highest,
        })
    }

    fn lock_interests(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, usize>> {
        sync::lock(&self.interests)
    }

    /// Whether the changes channel is subscribed right now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Whether the last connection attempt failed or the connection was
    /// lost since (false at start, before the first attempt ends).
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Routes `agent_id`'s notifications to this replica's feed while the
    /// returned interest lives.
    ///
    /// # Errors
    /// `Unavailable` when the connection is down or does not answer.
    pub async fn watch_mailbox(self: &Arc<Self>, agent_id: AgentId) -> Result<MailboxInterest> {
        *self.lock_interests().entry(agent_id).or_insert(0) += 1;
        let interest = MailboxInterest {
            listener: self.clone(),
            agent_id,
        };
        let subscribe = async {
            let mut state = self.sink.lock().await;
            if state.subscribed.contains(&agent_id) {
                return Ok(());
            }
            let mut sink = state
                .sink
                .clone()
                .ok_or_else(|| Error::unavailable("pub/sub connection down"))?;
            sink.subscribe(self.keys.mailbox_channel(agent_id))
                .await
                .map_err(|e| Error::Unavailable {
                    source: Box::new(e),
                })?;
            state.subscribed.insert(agent_id);
            Ok(())
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, subscribe).await {
            Ok(Ok(())) => Ok(interest),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::unavailable("subscribing timed out")),
        }
    }

    async fn release(&self, agent_id: AgentId) {
        let mut state = self.sink.lock().await;
        if self.lock_interests().contains_key(&agent_id) || !state.subscribed.contains(&agent_id) {
            return;
        }
        state.subscribed.remove(&agent_id);
        if let Some(mut sink) = state.sink.clone() {
            let channel = self.keys.mailbox_channel(agent_id);
            if tokio::time::timeout(CONNECT_TIMEOUT, sink.unsubscribe(channel))
                .await
                .is_err()
            {
                tracing::debug!(%agent_id, "unsubscribing a mailbox channel timed out");
            }
        }
    }

    /// Runs until `shutdown`: connect, subscribe, forward, reconnect.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let taken = sync::lock(&self.release_rx).take();
        let Some(mut release_rx) = taken else {
            tracing::error!("pub/sub listener started twice");
            return;
        };
        let mut backoff = Backoff::new(RETRY_BASE, RETRY_CAP);
        let mut was_connected = false;
        while !shutdown.is_cancelled() {
            match self.connect().await {
                Ok(connection) => {
                    backoff.reset();
                    if !was_connected {
                        tracing::info!("Redis pub/sub connected");
                    }
                    self.forward(connection, &mut release_rx, &shutdown).await;
                    if !shutdown.is_cancelled() {
                        tracing::warn!("Redis pub/sub connection lost; reconnecting");
                    }
                    was_connected = false;
                    self.failed.store(true, Ordering::Release);
                }
                Err(error) => {
                    self.failed.store(true, Ordering::Release);
                    tracing::debug!(%error, "Redis pub/sub unreachable; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.wait()) => {}
            }
        }
    }

    async fn connect(&self) -> Result<FeedConnection> {
        let connect = async {
            let mut connection = self.topology.feed(CONNECT_TIMEOUT).await?;
            connection
                .sink
                .subscribe(self.keys.changes_channel())
                .await
                .map_err(|e| Error::Unavailable {
                    source: Box::new(e),
                })?;
            Ok(connection)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, connect).await {
            Ok(result) => result,
            Err(_) => Err(Error::unavailable("connecting timed out")),
        }
    }

    /// Forwards messages until the connection fails or `shutdown`.
    async fn forward(
        &self,
        mut connection: FeedConnection,
        release_rx: &mut mpsc::Receiver<AgentId>,
        shutdown: &CancellationToken,
    ) {
        let sink = connection.sink.clone();
        {
            let mut state = self.sink.lock().await;
            state.sink = Some(sink.clone());
            state.subscribed.clear();
        }
        self.connected.store(true, Ordering::Release);
        self.failed.store(false, Ordering::Release);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A message is proof of life: only a connection silent for a whole
        // period is pinged, and messages keep being read while its answer
        // is awaited (under a flood, the answer queues behind every message
        // Redis has yet to send; a ping that stopped the reading would time
        // out and force a needless resync).
        let mut heard = Instant::now();
        let mut pong: Option<Pin<Box<dyn Future<Output = bool> + Send>>> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                message = connection.next() => match message {
                    Some(message) => {
                        heard = Instant::now();
                        if !self.dispatch(&message) {
                            break;
                        }
                    }
                    None => {
                        tracing::debug!("Redis pub/sub connection closed (or the primary changed)");
                        break;
                    }
                },
                Some(agent_id) = release_rx.recv() => self.release(agent_id).await,
                _ = ping.tick(), if pong.is_none() => {
                    if heard.elapsed() >= PING_EVERY {
                        let mut sink = sink.clone();
                        let channel = self.keys.changes_channel();
                        pong = Some(Box::pin(async move {
                            matches!(
                                tokio::time::timeout(CONNECT_TIMEOUT, sink.ping(&channel)).await,
                                Ok(Ok(_))
                            )
                        }));
                    }
                }
                answered = async {
                    match pong.as_mut() {
                        Some(pong) => pong.await,
                        None => std::future::pending().await,
                    }
                } => {
                    pong = None;
                    heard = Instant::now();
                    if !answered {
                        tracing::debug!("Redis pub/sub connection stopped answering");
                        break;
                    }
                }
            }
        }
        self.connected.store(false, Ordering::Release);
        {
            let mut state = self.sink.lock().await;
            state.sink = None;
            state.subscribed.clear();
        }
        // Whatever was published from now on may be missed: resync.
        let _ = self.feed.send(FeedMessage::Reset);
    }

    /// Puts one pub/sub message on the feed. Returns false when it cannot be
    /// decoded: the caller reconnects (and consumers resync) rather than
    /// silently skipping it.
    fn dispatch(&self, message: &redis::Msg) -> bool {
        let channel = message.get_channel_name();
        let payload = message.get_payload_bytes();
        let decoded = if channel == self.keys.changes_channel() {
            codec::decode_change(payload).map(|(change, _)| {
                self.highest.fetch_max(change.revision, Ordering::AcqRel);
                FeedMessage::Change(change)
            })
        } else if channel.starts_with(&self.keys.mailbox_channel_prefix()) {
            codec::decode_notification(payload).map(|n| FeedMessage::Notification(Arc::new(n)))
        } else {
            return true;
        };
        match decoded {
            Ok(message) => {
                // No receiver: the feed pump is between subscriptions.
                let _ = self.feed.send(message);
                true
            }
            Err(error) => {
                tracing::error!(%error, channel, "undecodable pub/sub message");
                false
            }
        }
    }
}
