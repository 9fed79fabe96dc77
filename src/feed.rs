//! The feed pump: the one task per replica that reads the store's change
//! stream, in revision order, into the [`View`] (and so to watchers) and the
//! [`Mailboxes`]. A revision gap, a lagging receiver or a store reset makes
//! it reload the view from the store and end every open stream, so no
//! stream ever silently misses an event.
//!
//! Depends on: store, view, mailbox.

use std::{sync::Arc, time::Duration};

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::{
    backoff::Backoff,
    mailbox::Mailboxes,
    metrics::Metrics,
    outbox::StreamEnd,
    store::{FeedMessage, Store},
    view::View,
};

/// First and longest wait between attempts to (re)connect to the store's
/// feed.
const RETRY_BASE: Duration = Duration::from_millis(50);
const RETRY_CAP: Duration = Duration::from_millis(250);

/// Runs until `shutdown`: subscribe, load, apply, and start over on any gap.
pub async fn run<S: Store>(
    store: Arc<S>,
    view: Arc<View>,
    mailboxes: Arc<Mailboxes>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(RETRY_BASE, RETRY_CAP);
    while !shutdown.is_cancelled() {
        let synced = tokio::select! {
            _ = shutdown.cancelled() => return,
            synced = sync_once(&*store, &view, &mailboxes, &metrics, &shutdown) => synced,
        };
        if shutdown.is_cancelled() {
            return;
        }
        // Whatever happened, open streams may have missed something: end
        // them now (clients watch again / resume by id), not at the resync.
        view.desync();
        mailboxes.close_all(StreamEnd::FeedReset);
        if synced {
            backoff.reset();
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.wait()) => {}
        }
    }
}

/// One subscription's life. Returns `false` when it could not even start
/// (the caller backs off), `true` when it ran and then lost continuity (or
/// the server is stopping).
async fn sync_once<S: Store>(
    store: &S,
    view: &View,
    mailboxes: &Mailboxes,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> bool {
    let mut feed = match store.subscribe().await {
        Ok(feed) => feed,
        Err(error) => {
            tracing::debug!(%error, "cannot subscribe to the store's feed yet");
            return false;
        }
    };
    let snapshot = match store.load().await {
        Ok(snapshot) => snapshot,
        Err(error) => {
            tracing::warn!(%error, "cannot load the registry from the store");
            return false;
        }
    };
    tracing::info!(
        revision = snapshot.revision,
        agents = snapshot.agents.len(),
        "view loaded from the store"
    );
    view.reset(snapshot);
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return true,
            message = feed.recv() => message,
        };
        match message {
            Ok(FeedMessage::Change(change)) => {
                let applied = view.revision();
                if change.revision <= applied {
                    continue;
                }
                if change.revision != applied + 1 {
                    tracing::warn!(
                        expected = applied + 1,
                        got = change.revision,
                        "revision gap on the feed"
                    );
                    return true;
                }
                view.apply(&change);
                metrics.count_event(change.kind);
                if change.kind.is_removal() {
                    mailboxes.close_agent(change.agent.id);
                }
            }
            Ok(FeedMessage::Notification(notification)) => {
                mailboxes.deliver(&notification);
            }
            Ok(FeedMessage::Reset) => return true,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "feed receiver lagged");
                return true;
            }
            Err(RecvError::Closed) => return true,
        }
    }
}
