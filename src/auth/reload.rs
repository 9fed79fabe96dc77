//! Reload of credential and policy files (BEHAVIOUR.md §9): each source is a
//! set of files and a function that builds the value from their contents.
//! The files are read again every [`RELOAD_EVERY`]; when any changed, the
//! value is rebuilt and swapped in for new connections and calls (open ones
//! keep what they have). A changed file that does not build is logged and
//! counted, and the old value stays. Reading contents rather than
//! modification times also follows Kubernetes' symlink swaps of mounted
//! secrets and ConfigMaps.
//!
//! Depends on: metrics (the counter), tokio.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use prometheus::IntCounter;
use tokio_util::sync::CancellationToken;

use crate::sync;

/// How often watched files are read again (a change applies within
/// twice this, well inside §9's 10 s).
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// A value built from files, swapped whole when they change. Readers take
/// a cheap `Arc` and never wait for a rebuild.
pub struct Reloadable<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Reloadable<T> {
    /// Holds `value` until the first reload.
    pub fn new(value: T) -> Self {
        Self {
            current: RwLock::new(Arc::new(value)),
        }
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        sync::read(&self.current).clone()
    }

    /// Replaces the value.
    pub fn set(&self, value: T) {
        let value = Arc::new(value);
        *sync::write(&self.current) = value;
    }
}

/// Builds a value from the contents of a source's files (in order) and
/// swaps it in; `Err` says why it could not.
pub type Apply = Box<dyn Fn(&[Vec<u8>]) -> Result<(), String> + Send + Sync>;

/// Files watched together: a change of any rebuilds from all.
pub struct Source {
    /// What the files are, for the log (`tls`, `jwt bundle`, `policy`).
    pub name: &'static str,
    /// The files.
    pub paths: Vec<PathBuf>,
    /// Rebuilds and swaps the value.
    pub apply: Apply,
    /// The contents last seen (built or not), to notice the next change.
    pub seen: Vec<Vec<u8>>,
}

/// Reads a source's files at start-up.
///
/// # Errors
/// The first file that cannot be read, with the OS error.
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, (PathBuf, std::io::Error)> {
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| (p.clone(), e)))
        .collect()
}

/// Watches `sources` until `stop`, applying changes; failures count in
/// `errors`.
pub async fn watch(mut sources: Vec<Source>, errors: IntCounter, stop: CancellationToken) {
    if sources.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for source in &mut sources {
            poll(source, &errors).await;
        }
    }
}

async fn poll(source: &mut Source, errors: &IntCounter) {
    let mut contents = Vec::with_capacity(source.paths.len());
    for path in &source.paths {
        match tokio::fs::read(path).await {
            Ok(bytes) => contents.push(bytes),
            // Mid-swap (a file briefly missing) or unreadable: try again at
            // the next tick, keep the current value meanwhile.
            Err(error) => {
                tracing::debug!(source = source.name, path = %path.display(), %error, "cannot read");
                return;
            }
        }
    }
    if contents == source.seen {
        return;
    }
    match (source.apply)(&contents) {
        Ok(()) => tracing::info!(source = source.name, "reloaded"),
        Err(reason) => {
            errors.inc();
            tracing::error!(
                source = source.name,
                %reason,
                "changed file not usable; keeping the previous one"
            );
        }
    }
    source.seen = contents;
}
