//! Writers waiting for this replica's view to apply their revision
//! (read-your-writes). Each waiter is woken once, when the revision it
//! waits for is applied, rather than at every change: with N writes in
//! flight, a change wakes the writers it settles, not all N.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use tokio::sync::oneshot;

use crate::{domain::Revision, sync::lock};

#[derive(Debug, Default)]
pub(super) struct Waiters {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    applied: Revision,
    waiting: BTreeMap<Revision, Vec<oneshot::Sender<()>>>,
}

impl Waiters {
    /// Everything up to `revision` is applied: wakes whoever waits for it.
    pub(super) fn applied(&self, revision: Revision) {
        let ready = {
            let mut state = lock(&self.state);
            state.applied = revision;
            let later = state.waiting.split_off(&revision.saturating_add(1));
            std::mem::replace(&mut state.waiting, later)
        };
        for sender in ready.into_values().flatten() {
            // A waiter that gave up dropped its receiver: nothing to tell.
            let _ = sender.send(());
        }
    }

    /// Waits (at most `timeout`) until `revision` is applied; whether it was.
    pub(super) async fn wait(&self, revision: Revision, timeout: Duration) -> bool {
        let receiver = {
            let mut state = lock(&self.state);
            if state.applied >= revision {
                return true;
            }
            let (sender, receiver) = oneshot::channel();
            state.waiting.entry(revision).or_default().push(sender);
            receiver
        };
        matches!(tokio::time::timeout(timeout, receiver).await, Ok(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_when_its_revision_is_applied_and_not_before() {
        let waiters = std::sync::Arc::new(Waiters::default());
        waiters.applied(10);
        assert!(waiters.wait(10, Duration::ZERO).await);
        let w = waiters.clone();
        let later = tokio::spawn(async move { w.wait(12, Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        waiters.applied(11);
        assert!(!later.is_finished());
        waiters.applied(12);
        assert!(later.await.expect("joined"));
        assert!(!waiters.wait(13, Duration::from_millis(10)).await);
        assert!(lock(&waiters.state).waiting.contains_key(&13));
        waiters.applied(13);
        assert!(lock(&waiters.state).waiting.is_empty());
    }
}
