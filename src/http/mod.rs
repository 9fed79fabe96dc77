//! The HTTP/JSON door of the registry (BEHAVIOUR.md §12): each route decodes
//! its request into the RPC's message ([`decode`]), runs the same decoder
//! ([`crate::convert`]) and the same [`Registry`] operation as its RPC, and
//! encodes the answer in the proto3 JSON mapping; errors become HTTP answers
//! only in [`error`]. `GET /v1/watch` streams WatchAgents as Server-Sent
//! Events; `/ui/` is the read-only console, served from assets compiled into
//! the binary ([`console`]).
//!
//! Per-call metrics and spans come from one middleware keyed by the route's
//! [`Rpc`], as the gRPC layer does, so HTTP calls count like RPCs.
//! Connections come from the gRPC port's accept loop ([`listener`]): the
//! same TLS, client certificates and connection limits.
//!
//! Depends on: api, auth, convert, service (the watch stream and status
//! mapping), metrics, pb, axum.

mod console;
pub mod decode;
pub mod error;
mod listener;
mod routes;

pub use listener::spawn;

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{ConnectInfo, DefaultBodyLimit, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::Response,
    routing::{MethodRouter, delete, get, post},
};
use tracing::{Instrument, field::Empty};

use crate::{
    api::Registry,
    auth::{
        Security,
        layer::{GuardedBody, admit},
        listener::PeerInfo,
    },
    domain::rpc::Rpc,
    metrics::Metrics,
    service::streams::StreamContext,
    store::Store,
};
use axum::response::IntoResponse;
use error::{ApiError, Outcome};

/// What the routes share.
pub struct Http<S> {
    /// The registry the routes call.
    registry: Arc<Registry<S>>,
    /// Shutdown and the aborted-stream counter, for watch streams.
    streams: StreamContext,
}

/// The router of every route of §12, over `registry`. Every call passes
/// `security`'s identity, policy and limits first (BEHAVIOUR.md §9), as an
/// RPC does.
pub fn router<S: Store>(
    registry: Arc<Registry<S>>,
    metrics: Arc<Metrics>,
    security: Arc<Security>,
) -> Router {
    let state = Arc::new(Http {
        streams: StreamContext::new(registry.shutdown(), &metrics),
        registry,
    });
    let observed = |rpc: Rpc, route: MethodRouter<Arc<Http<S>>>| {
        route.layer(middleware::from_fn_with_state(
            Observer {
                rpc,
                metrics: metrics.clone(),
                security: security.clone(),
            },
            observe,
        ))
    };
    Router::new()
        .route(
            "/v1/agents",
            observed(Rpc::Register, post(routes::register::<S>))
                .merge(observed(Rpc::ListAgents, get(routes::list::<S>))),
        )
        .route(
            "/v1/agents/{id}",
            observed(Rpc::GetAgent, get(routes::get_agent::<S>))
                .merge(observed(Rpc::Deregister, delete(routes::deregister::<S>))),
        )
        .route(
            "/v1/agents/{id}/heartbeat",
            observed(Rpc::Heartbeat, post(routes::heartbeat::<S>)),
        )
        .route(
            "/v1/agents/{id}/notifications",
            observed(Rpc::NotifyAgent, post(routes::notify::<S>)),
        )
        .route(
            "/v1/discover",
            observed(Rpc::DiscoverAgents, get(routes::discover::<S>)),
        )
        .route(
            "/v1/watch",
            observed(Rpc::WatchAgents, get(routes::watch::<S>)),
        )
        .route(
            "/v1/capabilities",
            // The catalog is a read of the population: ListAgents' rights.
            observed(Rpc::ListAgents, get(routes::capabilities::<S>)),
        )
        .route("/v1/openapi.json", get(console::openapi))
        .merge(console::routes())
        .fallback(routes::no_route)
        .layer(DefaultBodyLimit::max(decode::MAX_BODY_BYTES))
        .with_state(state)
}

/// What the per-call middleware needs.
#[derive(Clone)]
struct Observer {
    rpc: Rpc,
    metrics: Arc<Metrics>,
    security: Arc<Security>,
}

/// Runs one call in its `call` span and records its latency and result
/// (the [`Outcome`] an error answer leaves, else `ok`; a watch counts when
/// its stream starts, as on gRPC). A 405 (no such method on the route) is
/// not a call and is not counted.
async fn observe(State(observer): State<Observer>, mut request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "call",
        rpc = observer.rpc.name(),
        transport = "http",
        agent_id = Empty,
        code = Empty,
        duration_ms = Empty
    );
    let started = Instant::now();
    // The connection's peer (address, client certificate) where `admit`
    // looks for it, as tonic puts it for an RPC.
    if let Some(ConnectInfo(peer)) = request.extensions_mut().remove::<ConnectInfo<PeerInfo>>() {
        request.extensions_mut().insert(peer);
    }
    // Identity, policy, rate and stream slots, exactly as for the RPC; the
    // caller travels to the route in the request's extensions.
    let admitted = {
        let _entered = span.enter();
        admit(&observer.security, observer.rpc, &mut request)
    };
    let response = match admitted {
        Ok(slot) => next
            .run(request)
            .instrument(span.clone())
            .await
            .map(|body| axum::body::Body::new(GuardedBody::holding(body, slot))),
        Err(status) => ApiError::from(status).into_response(),
    };
    let elapsed = started.elapsed();
    let status = response.status();
    let result = match response.extensions().get::<Outcome>() {
        Some(outcome) => outcome.0,
        // A method the route does not have: no call of its RPC happened.
        None if status == StatusCode::METHOD_NOT_ALLOWED => return response,
        None if status.is_success() => "ok",
        None if status.is_client_error() => "INVALID_ARGUMENT",
        None => "INTERNAL",
    };
    observer
        .metrics
        .observe_call(observer.rpc, result, elapsed.as_secs_f64());
    span.record("code", result);
    span.record("duration_ms", elapsed.as_secs_f64() * 1e3);
    tracing::debug!(parent: &span, "call finished");
    response
}
