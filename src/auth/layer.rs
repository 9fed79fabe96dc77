//! Identity, policy and limits for every registry RPC, as one tower layer
//! inside the metrics/spans layer (so refusals are counted and traced like
//! any call). For each call, in order:
//!
//! 1. the caller ([`super::authenticate`]): a bad credential is
//!    UNAUTHENTICATED, never anonymous;
//! 2. the policy: PERMISSION_DENIED for an identified caller,
//!    UNAUTHENTICATED for an anonymous one;
//! 3. the caller's rate (`--rate-limit`) and, for streams, a replica stream
//!    slot (`--max-streams`): RESOURCE_EXHAUSTED;
//! 4. the call runs with its [`Caller`] in the request extensions; a request
//!    body tonic could not decode is answered INVALID_ARGUMENT (a client
//!    mistake, not INTERNAL) and one over `--max-message-bytes`
//!    RESOURCE_EXHAUSTED (not OUT_OF_RANGE).
//!
//! Health and reflection pass through untouched: they are always allowed.
//!
//! Depends on: auth, service::status (every status), domain (Rpc, Caller).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    auth::{AuthFailure, Security, listener::PeerInfo},
    domain::{Caller, rpc::Rpc},
    service::{layer::rpc_of, status},
};

/// Wraps the gRPC routes in [`Guard`].
#[derive(Clone)]
pub struct GuardLayer {
    security: Arc<Security>,
}

impl GuardLayer {
    /// A layer enforcing `security`.
    pub fn new(security: Arc<Security>) -> Self {
        Self { security }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            security: self.security.clone(),
        }
    }
}

/// The service [`GuardLayer`] makes.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    security: Arc<Security>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Guard<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = http::Response<GuardedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The clone takes the place of the service that was polled ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(rpc) = rpc_of(request.uri().path()) else {
            let call = inner.call(request);
            return Box::pin(async move { Ok(call.await?.map(GuardedBody::inner)) });
        };
        let security = self.security.clone();
        Box::pin(async move {
            let slot = match admit(&security, rpc, &mut request) {
                Ok(slot) => slot,
                Err(refusal) => return Ok(refusal.into_http().map(|()| GuardedBody::empty())),
            };
            let response = inner.call(request).await?;
            if let Some(status) = rewrite_decode_error(response.headers()) {
                return Ok(status.into_http().map(|()| GuardedBody::empty()));
            }
            Ok(response.map(|body| GuardedBody::holding(body, slot)))
        })
    }
}

/// Steps 1–3: the caller, the policy, the limits. On success the caller is
/// in the request's extensions and, for a stream, its slot is returned.
pub(crate) fn admit<B>(
    security: &Security,
    rpc: Rpc,
    request: &mut http::Request<B>,
) -> Result<Option<OwnedSemaphorePermit>, tonic::Status> {
    let peer = request.extensions().get::<PeerInfo>();
    let caller = security
        .authenticate(request.headers(), peer)
        .map_err(|failure| security.refuse(failure))?;
    let span = tracing::Span::current();
    span.record("identity", tracing::field::display(&caller));
    if !security.allows(&caller, rpc) {
        return Err(security.refuse(match caller {
            Caller::Anonymous => AuthFailure::Missing,
            Caller::Identified(_) => AuthFailure::Denied,
        }));
    }
    let rate_key = match (&caller, peer) {
        (Caller::Identified(identity), _) => identity.as_str().to_owned(),
        (Caller::Anonymous, Some(peer)) => peer.remote.ip().to_string(),
        (Caller::Anonymous, None) => String::new(),
    };
    if let Some(limiter) = &security.rate
        && !limiter.admit(&rate_key, Instant::now())
    {
        security.count_limited("rate_limit");
        return Err(status::rate_limited());
    }
    let slot = if rpc.is_streaming() {
        match security.streams.try_open() {
            Some(slot) => Some(slot),
            None => {
                security.count_limited("max_streams");
                return Err(status::too_many_streams());
            }
        }
    } else {
        None
    };
    request.extensions_mut().insert(caller);
    Ok(slot)
}

/// Statuses tonic itself produces while decoding a request (before any
/// handler runs) that are client mistakes: the answer they should be.
fn rewrite_decode_error(headers: &http::HeaderMap) -> Option<tonic::Status> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()
        .map(Code::from_i32)?;
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok());
    let message = message
        .map(|m| {
            percent_encoding::percent_decode_str(m)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    match code {
        Code::OutOfRange if message.starts_with("Error, decoded message length too large") => {
            Some(status::request_too_large(&message))
        }
        Code::Internal if is_decode_failure(&message) => Some(status::malformed_request(&message)),
        _ => None,
    }
}

/// Whether an INTERNAL message is one of tonic's request-decoding failures.
/// The registry's own INTERNAL answers all say `internal error`.
pub fn is_decode_failure(message: &str) -> bool {
    const PREFIXES: [&str; 5] = [
        "failed to decode Protobuf message",
        "Missing request message",
        "Unexpected EOF decoding stream",
        "protocol error:",
        "Error decompressing",
    ];
    PREFIXES.iter().any(|p| message.starts_with(p))
}

pin_project_lite::pin_project! {
    /// A response body that holds its stream's slot until it ends; empty
    /// for a refusal (trailers-only).
    pub struct GuardedBody<B> {
        #[pin]
        body: Option<B>,
        slot: Option<OwnedSemaphorePermit>,
    }
}

impl<B> GuardedBody<B> {
    fn inner(body: B) -> Self {
        Self {
            body: Some(body),
            slot: None,
        }
    }

    pub(crate) fn holding(body: B, slot: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            body: Some(body),
            slot,
        }
    }

    fn empty() -> Self {
        Self {
            body: None,
            slot: None,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for GuardedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().body.as_pin_mut() {
            Some(body) => body.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(code: i32, message: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", code.to_string().parse().unwrap());
        h.insert("grpc-message", message.parse().unwrap());
        h
    }

    #[test]
    fn decode_failures_become_client_errors() {
        let bad = headers(
            13,
            "failed%20to%20decode%20Protobuf%20message:%20invalid%20wire%20type",
        );
        assert_eq!(
            rewrite_decode_error(&bad).unwrap().code(),
            Code::InvalidArgument
        );
        let big = headers(
            11,
            "Error,%20decoded%20message%20length%20too%20large:%20found%209%20bytes",
        );
        assert_eq!(
            rewrite_decode_error(&big).unwrap().code(),
            Code::ResourceExhausted
        );
        assert!(rewrite_decode_error(&headers(13, "internal%20error")).is_none());
        assert!(rewrite_decode_error(&headers(11, "history%20too%20short")).is_none());
        assert!(rewrite_decode_error(&http::HeaderMap::new()).is_none());
    }
}
