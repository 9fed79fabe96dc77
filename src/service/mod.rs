//! The tonic service: each RPC decodes its request ([`crate::convert`]),
//! calls one operation of the transport-independent [`Registry`], and
//! encodes the answer. Errors become statuses only through [`status`];
//! per-call metrics and spans come from [`layer`], outside the handlers.
//!
//! Depends on: api, convert, pb.

pub mod layer;
pub mod status;
pub(crate) mod streams;

use std::{pin::Pin, sync::Arc, time::Duration};

use tokio_stream::Stream;
use tonic::{
    Extensions, Request, Response, Status,
    metadata::{MetadataMap, MetadataValue},
};

use crate::{
    api::{Call, Read, Registry},
    convert::{self, STALE_METADATA_KEY},
    domain::{Caller, Error, validate},
    metrics::Metrics,
    pb::{self, service_registry_server::ServiceRegistry},
    store::Store,
};

/// A server-streaming response.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The gRPC face of a [`Registry`]; cheap to clone.
pub struct RegistryService<S> {
    registry: Arc<Registry<S>>,
    streams: streams::StreamContext,
    /// Largest ListAgents/DiscoverAgents answer (`--max-response-bytes`).
    max_response_bytes: usize,
}

impl<S: Store> RegistryService<S> {
    /// The service of `registry`; `metrics` counts aborted streams.
    pub fn new(registry: Arc<Registry<S>>, metrics: &Metrics) -> Self {
        let streams = streams::StreamContext::new(registry.shutdown(), metrics);
        Self {
            registry,
            streams,
            max_response_bytes: usize::MAX,
        }
    }

    /// Refuses ListAgents/DiscoverAgents answers larger than `max` bytes.
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// An answer within `--max-response-bytes`.
    fn bounded<M: prost::Message>(&self, response: Response<M>) -> Result<Response<M>, Status> {
        let size = response.get_ref().encoded_len();
        if size > self.max_response_bytes {
            return Err(Error::ResourceExhausted(format!(
                "answer of {size} bytes exceeds --max-response-bytes ({}); ask for less with page_size (or max_results)",
                self.max_response_bytes
            ))
            .into());
        }
        Ok(response)
    }
}

/// The call context a gRPC request carries: the token (request field, else
/// `x-registration-token`), the deadline (`grpc-timeout`) and the caller
/// the guard layer established (anonymous when no layer ran).
fn call(metadata: &MetadataMap, extensions: &Extensions, token_field: String) -> Call {
    Call {
        token: convert::presented_token(token_field, metadata),
        deadline: call_deadline(metadata),
        caller: extensions.get::<Caller>().cloned().unwrap_or_default(),
    }
}

/// A read's response, marked stale when it is.
fn read_response<T, M>(read: Read<T>, encode: impl FnOnce(T) -> M) -> Response<M> {
    let mut response = Response::new(encode(read.value));
    if read.stale {
        response
            .metadata_mut()
            .insert(STALE_METADATA_KEY, MetadataValue::from_static("true"));
    }
    response
}

/// The call's deadline from its `grpc-timeout` header (digits and a unit:
/// `H`, `M`, `S`, `m`, `u`, `n`), if it sent one that parses.
fn call_deadline(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = (value.get(..split)?, value.get(split..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl<S: Store> ServiceRegistry for RegistryService<S> {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let (metadata, extensions, mut req) = request.into_parts();
        let decoded = convert::register_request(&mut req, self.registry.ttl())?;
        let call = call(
            &metadata,
            &extensions,
            std::mem::take(&mut req.registration_token),
        );
        let registered = self.registry.register(&call, decoded).await?;
        Ok(Response::new(convert::register_response(&registered)))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let agent_id = validate::agent_id("agent_id", &req.agent_id)?;
        let telemetry = req.telemetry.map(convert::telemetry).transpose()?;
        let call = call(&metadata, &extensions, req.registration_token);
        let done = self.registry.heartbeat(&call, agent_id, telemetry).await?;
        Ok(Response::new(convert::heartbeat_response(&done)))
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let agent_id = validate::agent_id("agent_id", &req.agent_id)?;
        let call = call(&metadata, &extensions, req.registration_token);
        let success = self.registry.deregister(&call, agent_id).await?;
        Ok(Response::new(pb::DeregisterResponse { success }))
    }

    async fn discover_agents(
        &self,
        request: Request<pb::DiscoverRequest>,
    ) -> Result<Response<pb::DiscoverResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let query = convert::discover_query(req)?;
        let found = self
            .registry
            .discover(&call(&metadata, &extensions, String::new()), &query)
            .await?;
        self.bounded(read_response(found, |agents| {
            convert::discover_response(&query, &agents)
        }))
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::GetAgentResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let agent_id = validate::agent_id("agent_id", &req.agent_id)?;
        let agent = self
            .registry
            .get(&call(&metadata, &extensions, String::new()), agent_id)
            .await?;
        Ok(read_response(agent, |agent| pb::GetAgentResponse {
            agent: Some(pb::AgentInfo::from(&*agent)),
        }))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let request = convert::list_request(req)?;
        let page = self
            .registry
            .list(&call(&metadata, &extensions, String::new()), &request)
            .await?;
        self.bounded(read_response(page, |page| {
            convert::list_response(&request, page)
        }))
    }

    type WatchAgentsStream = ResponseStream<pb::AgentChangeEvent>;

    async fn watch_agents(
        &self,
        request: Request<pb::WatchAgentsRequest>,
    ) -> Result<Response<Self::WatchAgentsStream>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let request = convert::watch_request(req)?;
        let snapshot = request.snapshot;
        let watching = self
            .registry
            .watch(&call(&metadata, &extensions, String::new()), request)
            .await?;
        Ok(Response::new(streams::watch(
            watching,
            snapshot,
            self.registry.clock().clone(),
            self.streams.clone(),
        )))
    }

    async fn notify_agent(
        &self,
        request: Request<pb::NotifyAgentRequest>,
    ) -> Result<Response<pb::NotifyAgentResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let cmd = convert::notify_command(req)?;
        let outcome = self
            .registry
            .notify(&call(&metadata, &extensions, String::new()), cmd)
            .await?;
        Ok(Response::new(convert::notify_response(&outcome)))
    }

    type SubscribeNotificationsStream = ResponseStream<pb::AgentNotification>;

    async fn subscribe_notifications(
        &self,
        request: Request<pb::SubscribeNotificationsRequest>,
    ) -> Result<Response<Self::SubscribeNotificationsStream>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let agent_id = validate::agent_id("agent_id", &req.agent_id)?;
        let after = validate::after_notification_id(&req.after_notification_id)?;
        let call = call(&metadata, &extensions, req.registration_token);
        let subscribed = self.registry.subscribe(&call, agent_id, after).await?;
        Ok(Response::new(streams::notifications(
            subscribed,
            self.streams.clone(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_parse_every_unit_and_nothing_else() {
        let parse = |v: &'static str| {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", MetadataValue::from_static(v));
            call_deadline(&m)
        };
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "12", "1x", "123456789S", "-1S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(call_deadline(&MetadataMap::new()), None);
    }
}
