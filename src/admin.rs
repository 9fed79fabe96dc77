//! The HTTP side on `METRICS_PORT`:
//!
//! - `GET /metrics`: Prometheus text exposition.
//! - `GET /healthz`: 200 while the process runs (liveness).
//! - `GET /readyz`: 200 while the store is reachable, the view is current
//!   and the server is not shutting down; 503 otherwise (readiness).
//!
//! Unlike a start-up latch, readiness follows the store: it drops while
//! Redis is unreachable and during shutdown.
//!
//! Depends on: metrics, axum.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Gauges, Metrics};

/// Reads the gauges' values at scrape time; given by whoever owns what they
/// count.
pub type GaugeSource = Arc<dyn Fn() -> Gauges + Send + Sync>;

/// Whether the registry should receive traffic; written by the health loop.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Sets readiness.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Reads readiness.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Metric handles.
    pub metrics: Arc<Metrics>,
    /// The gauges' values now (population, watchers, subscribers).
    pub gauges: GaugeSource,
    /// Readiness as the health loop last saw it.
    pub readiness: Arc<Readiness>,
}

fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves until `shutdown` on an already bound listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) {
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "metrics HTTP server failed");
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match state.metrics.render(&(state.gauges)()) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n").into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.readiness.get() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}
