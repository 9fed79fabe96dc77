//! The two server streams. Watch: snapshot, SYNCED, then live events; ends
//! with ABORTED when it fell behind or the feed was lost, UNAVAILABLE on
//! shutdown. Notifications: backlog then live, deduplicated by id; ends with
//! NOT_FOUND when the agent is removed. Dropping a stream (client cancel)
//! drops its guard, which unregisters it at once.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::{ResponseStream, status};
use crate::{
    api::Subscribed, convert, domain::clock::Clock, hub::Watch, mailbox::Subscription,
    outbox::StreamEnd, pb,
};

/// What every stream needs besides its data.
#[derive(Clone)]
pub struct StreamContext {
    /// Cancelled when the server stops: the stream ends with UNAVAILABLE.
    pub shutdown: CancellationToken,
    /// Counts streams ended with ABORTED.
    pub aborted: prometheus::IntCounter,
}

impl StreamContext {
    /// The context of streams that end on `shutdown` and count their
    /// aborts in `metrics`.
    pub fn new(shutdown: &CancellationToken, metrics: &crate::metrics::Metrics) -> Self {
        Self {
            shutdown: shutdown.clone(),
            aborted: metrics.streams_aborted.clone(),
        }
    }

    /// The next item of `source`, or the status the stream ends with.
    async fn next<T>(
        &self,
        source: impl Future<Output = Result<T, StreamEnd>>,
    ) -> Result<T, Status> {
        let next = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Err(status::shutting_down()),
            item = source => item.map_err(status::stream_end),
        };
        if let Err(status) = &next
            && status.code() == Code::Aborted
        {
            self.aborted.inc();
        }
        next
    }
}

/// The WatchAgents stream of `watch`.
pub fn watch(
    watch: Watch,
    with_snapshot: bool,
    clock: Arc<dyn Clock>,
    context: StreamContext,
) -> ResponseStream<pb::AgentChangeEvent> {
    Box::pin(async_stream::stream! {
        let Watch { snapshot, revision, mut events, guard } = watch;
        let _guard = guard;
        if with_snapshot {
            let now = clock.now();
            for agent in &snapshot {
                yield Ok(convert::snapshot_event(agent, now));
            }
            yield Ok(convert::synced_event(revision, now));
        }
        drop(snapshot);
        loop {
            match context.next(events.recv()).await {
                Ok(change) => yield Ok(pb::AgentChangeEvent::from(&change)),
                Err(status) => {
                    yield Err(status);
                    break;
                }
            }
        }
    })
}

/// The SubscribeNotifications stream: the backlog, then live notifications
/// newer than anything already sent. The subscription's interest keeps the
/// store routing the agent's notifications to this replica while the stream
/// lives.
pub fn notifications<I: Send + 'static>(
    subscribed: Subscribed<I>,
    context: StreamContext,
) -> ResponseStream<pb::AgentNotification> {
    Box::pin(async_stream::stream! {
        let Subscribed { after, backlog, live, interest } = subscribed;
        let _interest = interest;
        let Subscription { mut inbox, guard } = live;
        let _guard = guard;
        let mut last = after;
        for n in backlog {
            last = n.id;
            yield Ok(pb::AgentNotification::from(&*n));
        }
        loop {
            match context.next(inbox.recv()).await {
                Ok(n) if n.id <= last => continue,
                Ok(n) => {
                    last = n.id;
                    yield Ok(pb::AgentNotification::from(&*n));
                }
                Err(status) => {
                    yield Err(status);
                    break;
                }
            }
        }
    })
}
