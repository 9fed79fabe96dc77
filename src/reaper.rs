//! The reaper: asks the store to apply due liveness transitions (overdue →
//! UNHEALTHY, past grace → removed), sleeping until the next one is due. Runs
//! in every replica; the store makes each transition happen once.
//!
//! Depends on: domain (clock), store.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    domain::{Error, clock::Clock},
    metrics::Metrics,
    store::Store,
};

/// Longest sleep between passes: bounds how late a transition can fire when
/// another replica made it due (a deadline this replica did not see).
pub const MAX_SLEEP: Duration = Duration::from_millis(250);

/// Runs until `shutdown`.
pub async fn run<S: Store>(
    store: Arc<S>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let now = clock.now();
        let sleep = match store.expire_due(now).await {
            Ok(reaped) => {
                metrics
                    .expired
                    .inc_by(u64::try_from(reaped.expired).unwrap_or(0));
                if reaped.overdue + reaped.expired > 0 {
                    tracing::debug!(overdue = reaped.overdue, expired = reaped.expired, "reaped");
                }
                reaped
                    .next_due
                    .map(|due| Duration::from_millis(u64::try_from(due - now).unwrap_or(0)))
                    .unwrap_or(MAX_SLEEP)
                    .min(MAX_SLEEP)
            }
            // The store logs when it becomes unreachable (and back); only
            // other failures deserve a line per pass.
            Err(error @ Error::Unavailable { .. }) => {
                metrics.store_errors.inc();
                tracing::debug!(%error, "reaper pass skipped: store unavailable");
                MAX_SLEEP
            }
            Err(error) => {
                metrics.store_errors.inc();
                tracing::warn!(%error, "reaper pass failed");
                MAX_SLEEP
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(sleep.max(Duration::from_millis(5))) => {}
        }
    }
}
