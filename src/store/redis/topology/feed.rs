//! The feed's connection: the subscriber the listener reads changes from
//! (sharded pub/sub on a cluster).

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::{
    Value,
    aio::{PubSubSink, PubSubStream},
    cluster_async::ClusterConnection,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;

use super::{CONNECT_TIMEOUT, FEED_BUFFER, Mode, Topology, cluster::builder};
use crate::{domain::Result, store::redis::classify, sync};

impl Topology {
    /// Opens the feed's connection: a subscriber on the primary (on the
    /// slot's primary, sharded, on a cluster).
    ///
    /// # Errors
    /// `Unavailable` when it cannot be reached.
    pub async fn feed(&self, response_timeout: Duration) -> Result<FeedConnection> {
        let switches = self.switches.subscribe();
        let (sink, stream) = match self.mode().await? {
            Mode::Direct { primary } => {
                let (sink, stream) = pubsub(&primary.client).await?;
                primary.reconnect().await;
                (FeedSink::Plain(sink), FeedStream::Plain(stream))
            }
            Mode::Sentinel { current, .. } => {
                let client = self.sentinel_primary().await?;
                let (sink, stream) = pubsub(&client).await?;
                let known = sync::read(current).clone();
                if let Some((_, primary)) = known {
                    primary.reconnect().await;
                }
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
                let client = builder(nodes)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(response_timeout)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(sender)
                    .build()
                    .map_err(classify)?;
                let conn = client.get_async_connection().await.map_err(classify)?;
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
}

async fn pubsub(client: &redis::Client) -> Result<(PubSubSink, PubSubStream)> {
    let pubsub = client.get_async_pubsub().await.map_err(classify)?;
    Ok(pubsub.split())
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
