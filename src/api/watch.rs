//! WatchAgents: the snapshot or the replay of the history, then live
//! changes, and the BOOKMARKs' source (BEHAVIOUR.md §11).

use std::{sync::Arc, time::Duration};

use super::{Call, Registry};
use crate::{
    domain::{Change, Error, History, Result, Revision, query::WatchSelection},
    hub::Watch,
    store::Store,
    view::View,
};

/// A validated WatchAgents request.
#[derive(Clone, Debug)]
pub struct WatchRequest {
    /// Which agents.
    pub selection: WatchSelection,
    /// First every matching agent (SNAPSHOT), then SYNCED.
    pub snapshot: bool,
    /// Resume: every matching change after this revision first.
    pub start_revision: Option<Revision>,
    /// Periodic BOOKMARKs.
    pub progress: bool,
}

/// An open watch: its snapshot or replay, then live changes.
pub struct Watching<S> {
    /// The snapshot (when asked for) and the live queue.
    pub watch: Watch,
    /// The changes to replay before the live ones (when resuming).
    pub replay: Option<Replay<S>>,
    /// Live changes up to this revision were already covered (by the
    /// snapshot or the replay, or lie before the resume point).
    pub skip_through: Revision,
    /// BOOKMARK interval and where to read progress from, when asked for.
    pub progress: Option<Progress>,
}

/// Where a watch's BOOKMARKs come from.
pub struct Progress {
    /// How often.
    pub interval: Duration,
    view: Arc<View>,
}

impl Progress {
    /// The latest revision this replica applied: every change up to it was
    /// offered to the watch's queue.
    pub fn applied(&self) -> Revision {
        self.view.revision()
    }
}

/// Changes of the store's history replayed to a resuming watch, in pages.
pub struct Replay<S> {
    store: Arc<S>,
    selection: WatchSelection,
    /// The last revision read from the history.
    after: Revision,
    /// The replay ends here (the revision the watch joined the live feed at).
    upto: Revision,
    page: std::collections::VecDeque<Change>,
    done: bool,
}

/// History entries read per store call while replaying.
const REPLAY_PAGE: usize = 1000;

impl<S: Store> Replay<S> {
    /// The next replayed change that the selection selects, `None` once the
    /// replay reached the live feed.
    ///
    /// # Errors
    /// `Compacted` if the history was trimmed past the replay meanwhile;
    /// store errors.
    pub async fn next(&mut self) -> Result<Option<Change>> {
        loop {
            if let Some(change) = self.page.pop_front() {
                return Ok(Some(change));
            }
            if self.done {
                return Ok(None);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<()> {
        let page = match self
            .store
            .history(self.after, self.upto, REPLAY_PAGE)
            .await?
        {
            History::Compacted { oldest } => return Err(Error::Compacted { oldest }),
            History::Changes(page) => page,
        };
        self.done = page.len() < REPLAY_PAGE;
        for entry in page {
            self.after = entry.change.revision;
            if self
                .selection
                .selects(&entry.change, entry.before.as_deref())
            {
                self.page.push_back(entry.change);
            }
        }
        Ok(())
    }
}

impl<S: Store> Registry<S> {
    /// WatchAgents: the snapshot (when asked for) and the live queue, taken
    /// atomically with respect to the feed; when resuming, the replay of the
    /// history between the resume point and the revision the live queue
    /// starts after, so the seam has no gap and no duplicate (BEHAVIOUR.md
    /// §11).
    ///
    /// # Errors
    /// `NotServing`; `Compacted` when the history no longer reaches back to
    /// the resume point; store errors.
    pub async fn watch(&self, call: &Call, request: WatchRequest) -> Result<Watching<S>> {
        self.refuse_while_unavailable(call).await?;
        let watch = self.view.watch(request.selection.clone(), request.snapshot);
        let joined = watch.revision;
        let replay = match request.start_revision {
            Some(start) if start < joined => {
                let mut replay = Replay {
                    store: self.store.clone(),
                    selection: request.selection,
                    after: start,
                    upto: joined,
                    page: std::collections::VecDeque::new(),
                    done: false,
                };
                // The first page now: a compacted history answers at once.
                replay.fill().await?;
                Some(replay)
            }
            _ => None,
        };
        let progress = request.progress.then(|| Progress {
            interval: self.policy.bookmark_interval,
            view: self.view.clone(),
        });
        Ok(Watching {
            watch,
            replay,
            skip_through: joined.max(request.start_revision.unwrap_or(0)),
            progress,
        })
    }
}
