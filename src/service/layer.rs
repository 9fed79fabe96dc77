//! Per-call metrics and tracing for every registry RPC, as one tower layer
//! keyed by [`Rpc`]: the handlers carry no cross-cutting code.
//!
//! For each call the layer opens the `call` span (`rpc`, `identity`, `agent_id`,
//! `code`, `duration_ms`; handlers record `agent_id`), runs the handler in
//! it, and once the outcome is known records the latency, counts the result
//! and logs `call finished` at debug level. The outcome is the `grpc-status`
//! of a trailers-only answer (every error), the trailers of a unary answer,
//! or, for a stream, the moment it started. Health and reflection calls pass
//! through untouched.
//!
//! Depends on: metrics, convert (code names), domain (Rpc).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Instrument, Span, field::Empty};

use crate::{convert::code_name, domain::rpc::Rpc, metrics::Metrics};

/// The path prefix of the registry's methods.
const SERVICE_PATH: &str = "/neural_hive.service_registry.ServiceRegistry/";

/// Wraps the gRPC routes in [`Observe`].
#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
}

impl ObserveLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`ObserveLayer`] makes.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The registry method a request path names.
pub(crate) fn rpc_of(path: &str) -> Option<Rpc> {
    path.strip_prefix(SERVICE_PATH).and_then(Rpc::from_name)
}

/// The `grpc-status` in `headers`, if any.
fn status_in(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from_i32)
}

/// What is left to do once a call's outcome is known.
struct Finish {
    rpc: Rpc,
    started: Instant,
    span: Span,
    metrics: Arc<Metrics>,
}

impl Finish {
    fn record(self, code: Code) {
        let elapsed = self.started.elapsed();
        let result = code_name(code);
        self.metrics
            .observe_call(self.rpc, result, elapsed.as_secs_f64());
        self.span.record("code", result);
        self.span.record("duration_ms", elapsed.as_secs_f64() * 1e3);
        tracing::debug!(parent: &self.span, "call finished");
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Observe<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResBody: Body + Send + 'static,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let Some(rpc) = rpc_of(request.uri().path()) else {
            let call = self.inner.call(request);
            return Box::pin(async move {
                let response = call.await?;
                Ok(response.map(|inner| ObservedBody {
                    inner,
                    finish: None,
                }))
            });
        };
        let span = tracing::info_span!(
            "call",
            rpc = rpc.name(),
            identity = Empty,
            agent_id = Empty,
            code = Empty,
            duration_ms = Empty
        );
        let finish = Finish {
            rpc,
            started: Instant::now(),
            span: span.clone(),
            metrics: self.metrics.clone(),
        };
        let call = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let response = match call.await {
                Ok(response) => response,
                Err(error) => {
                    finish.record(Code::Internal);
                    return Err(error);
                }
            };
            let finish = match status_in(response.headers()) {
                Some(code) => {
                    finish.record(code);
                    None
                }
                None if rpc.is_streaming() => {
                    finish.record(Code::Ok);
                    None
                }
                None => Some(finish),
            };
            Ok(response.map(|inner| ObservedBody { inner, finish }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call's outcome from its trailers
    /// (or, if it is dropped before them, as CANCELLED).
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        finish: Option<Finish>,
    }

    impl<B> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(finish) = this.project().finish.take() {
                finish.record(Code::Cancelled);
            }
        }
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let outcome = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|trailers| status_in(trailers).unwrap_or(Code::Unknown)),
            Poll::Ready(Some(Err(_))) => Some(Code::Internal),
            Poll::Ready(None) => Some(Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = outcome
            && let Some(finish) = this.finish.take()
        {
            finish.record(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_registry_methods_only() {
        assert_eq!(
            rpc_of("/neural_hive.service_registry.ServiceRegistry/DiscoverAgents"),
            Some(Rpc::DiscoverAgents)
        );
        assert_eq!(rpc_of("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            rpc_of("/neural_hive.service_registry.ServiceRegistry/Nope"),
            None
        );
    }
}
