//! A bounded, single-consumer queue that remembers why it ended: the pipe
//! between the feed (which must never block) and one watch or notification
//! stream. When the consumer falls behind, the producer ends the stream
//! (it is never silently skipped) and the consumer learns why.

use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

use crate::domain::AgentId;

/// Why a stream's queue ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The consumer read too slowly and the queue filled up.
    Lagged,
    /// The registry lost its event feed and rebuilt its state.
    FeedReset,
    /// The agent the stream is about was removed.
    AgentRemoved(AgentId),
    /// The producer went away (the registry is stopping).
    Closed,
}

/// The producer half. Never blocks.
#[derive(Debug)]
pub struct Outbox<T> {
    tx: mpsc::Sender<T>,
    /// First reason recorded wins; read by the [`Inbox`] once drained.
    end: Arc<OnceLock<StreamEnd>>,
}

/// The consumer half.
#[derive(Debug)]
pub struct Inbox<T> {
    rx: mpsc::Receiver<T>,
    end: Arc<OnceLock<StreamEnd>>,
}

/// The consumer is gone or was ended: drop the [`Outbox`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Gone;

/// A queue of `capacity` items.
pub fn channel<T>(capacity: usize) -> (Outbox<T>, Inbox<T>) {
    let (tx, rx) = mpsc::channel(capacity);
    let end = Arc::new(OnceLock::new());
    (
        Outbox {
            tx,
            end: end.clone(),
        },
        Inbox { rx, end },
    )
}

impl<T> Outbox<T> {
    /// Queues `item`. A full queue ends the stream as [`StreamEnd::Lagged`].
    ///
    /// # Errors
    /// [`Gone`] when the stream ended: the caller drops this outbox.
    pub fn offer(&self, item: T) -> Result<(), Gone> {
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(StreamEnd::Lagged);
                Err(Gone)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Gone),
        }
    }

    /// Records why the stream ends; it ends once this outbox is dropped and
    /// the consumer drained what was queued before.
    pub fn close(&self, reason: StreamEnd) {
        // The first reason wins; a later one is irrelevant.
        let _ = self.end.set(reason);
    }
}

impl<T> Inbox<T> {
    /// The next item if one is queued right now.
    pub fn try_recv(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// The next item, or why the stream ended.
    ///
    /// # Errors
    /// The [`StreamEnd`] once every queued item was taken and the producer
    /// dropped its [`Outbox`].
    pub async fn recv(&mut self) -> Result<T, StreamEnd> {
        match self.rx.recv().await {
            Some(item) => Ok(item),
            None => Err(self.end.get().copied().unwrap_or(StreamEnd::Closed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_ends_the_stream_after_what_was_queued() {
        let (out, mut inbox) = channel(2);
        assert!(out.offer(1).is_ok());
        assert!(out.offer(2).is_ok());
        assert_eq!(out.offer(3), Err(Gone));
        drop(out);
        assert_eq!(inbox.recv().await, Ok(1));
        assert_eq!(inbox.recv().await, Ok(2));
        assert_eq!(inbox.recv().await, Err(StreamEnd::Lagged));
    }

    #[tokio::test]
    async fn first_reason_wins() {
        let (out, mut inbox) = channel::<u8>(1);
        out.close(StreamEnd::AgentRemoved(AgentId::from_bytes([0; 16])));
        out.close(StreamEnd::Lagged);
        drop(out);
        assert_eq!(
            inbox.recv().await,
            Err(StreamEnd::AgentRemoved(AgentId::from_bytes([0; 16])))
        );
    }

    #[tokio::test]
    async fn offers_to_a_dropped_consumer_report_gone() {
        let (out, inbox) = channel(1);
        drop(inbox);
        assert_eq!(out.offer(1), Err(Gone));
    }
}
