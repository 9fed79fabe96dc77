//! The one way this project waits for a request to stop: SIGTERM (what
//! Kubernetes and `docker stop` send) or SIGINT (Ctrl-C).
//!
//! [`shutdown_requested`] is for a process that stops on the first signal
//! (the server); [`ShutdownSignal`] listens from its creation on and can be
//! waited on again and again (the CLI's streams and kept-alive sessions).
//!
//! When SIGTERM cannot be listened for, only Ctrl-C requests a shutdown; when
//! nothing can be listened for, nothing does. Both are logged with
//! `tracing::warn!`.

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C) received after the call
/// is first polled.
///
/// Must be polled within a Tokio runtime.
pub async fn shutdown_requested() {
    ShutdownSignal::listen().requested().await;
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from [`ShutdownSignal::listen`]
/// on: from then on these signals no longer end the process by themselves.
#[derive(Debug)]
pub struct ShutdownSignal {
    /// SIGINT, when it can be listened for.
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    /// SIGTERM, when it can be listened for.
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    /// Starts listening now (a signal arriving before the first
    /// [`requested`](Self::requested) is not lost).
    ///
    /// # Panics
    /// Outside a Tokio runtime (as Tokio's own signal listeners do).
    #[must_use]
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let terminate = match signal(SignalKind::terminate()) {
                Ok(terminate) => Some(terminate),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C requests a shutdown");
                    None
                }
            };
            let interrupt = match signal(SignalKind::interrupt()) {
                Ok(interrupt) => Some(interrupt),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for Ctrl-C");
                    None
                }
            };
            Self {
                interrupt,
                terminate,
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for the next SIGTERM or SIGINT (forever when neither can be
    /// listened for).
    pub async fn requested(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = next(self.interrupt.as_mut()) => {}
            _ = next(self.terminate.as_mut()) => {}
        }
        #[cfg(not(unix))]
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

/// The next delivery of `signal`; pending forever without one.
#[cfg(unix)]
async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            let _ = signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
