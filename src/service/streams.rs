//! The two server streams. Watch: snapshot and SYNCED, or the replay of a
//! resume, then live events and bookmarks; ends with ABORTED when it fell
//! behind or the feed was lost, OUT_OF_RANGE when a replay outran the
//! history, UNAVAILABLE on shutdown. Notifications: backlog then live, deduplicated by id; ends with
//! NOT_FOUND when the agent is removed. Dropping a stream (client cancel)
//! drops its guard, which unregisters it at once.

use std::sync::Arc;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::{ResponseStream, status};
use crate::{
    api::{Progress, Subscribed, Watching},
    convert,
    domain::clock::Clock,
    hub::Watch,
    mailbox::Subscription,
    outbox::StreamEnd,
    pb::{self, agent_change_event::EventType},
    store::Store,
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

/// The WatchAgents stream: the snapshot and SYNCED (when asked for), or
/// the replay of the history (when resuming), then live changes, with a
/// BOOKMARK every interval when progress was asked for.
pub fn watch<S: Store>(
    watching: Watching<S>,
    with_snapshot: bool,
    clock: Arc<dyn Clock>,
    context: StreamContext,
) -> ResponseStream<pb::AgentChangeEvent> {
    Box::pin(async_stream::stream! {
        let Watching { watch, replay, skip_through, progress } = watching;
        let Watch { snapshot, revision, mut events, guard } = watch;
        let _guard = guard;
        if with_snapshot {
            let now = clock.now();
            for agent in &snapshot {
                yield Ok(convert::snapshot_event(agent, now));
            }
            yield Ok(convert::marker_event(EventType::Synced, revision, now));
        }
        drop(snapshot);
        let mut last = revision;
        if let Some(mut replay) = replay {
            loop {
                let next = tokio::select! {
                    biased;
                    _ = context.shutdown.cancelled() => Err(status::shutting_down()),
                    next = replay.next() => next.map_err(Status::from),
                };
                match next {
                    Ok(Some(change)) => {
                        last = change.revision;
                        yield Ok(pb::AgentChangeEvent::from(&change));
                    }
                    Ok(None) => break,
                    Err(status) => {
                        yield Err(status);
                        return;
                    }
                }
            }
        }
        let mut bookmarks = progress.as_ref().map(|p| {
            let mut tick = tokio::time::interval_at(Instant::now() + p.interval, p.interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick
        });
        loop {
            let next = tokio::select! {
                biased;
                next = context.next(events.recv()) => Some(next),
                _ = tick(&mut bookmarks) => None,
            };
            match next {
                Some(Ok(change)) if change.revision <= skip_through => {}
                Some(Ok(change)) => {
                    last = change.revision;
                    yield Ok(pb::AgentChangeEvent::from(&change));
                }
                Some(Err(status)) => {
                    yield Err(status);
                    break;
                }
                None => {
                    // Everything up to `applied` is in the queue already:
                    // send it, then say how far the stream got.
                    let applied = progress.as_ref().map_or(0, Progress::applied);
                    while let Some(change) = events.try_recv() {
                        if change.revision > skip_through {
                            last = change.revision;
                            yield Ok(pb::AgentChangeEvent::from(&change));
                        }
                    }
                    let at = applied.max(last).max(skip_through);
                    yield Ok(convert::marker_event(EventType::Bookmark, at, clock.now()));
                }
            }
        }
    })
}

/// The next bookmark tick; never, without bookmarks.
async fn tick(bookmarks: &mut Option<tokio::time::Interval>) {
    match bookmarks {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
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
