//! The route handlers: decode → the RPC's decoder → one [`Registry`]
//! operation → encode, exactly as [`crate::service`] does for gRPC.
//!
//! [`Registry`]: crate::api::Registry

use std::{convert::Infallible, sync::Arc};

use axum::{
    Extension,
    body::Bytes,
    extract::{
        Path, RawQuery, State,
        rejection::{BytesRejection, PathRejection},
    },
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use serde::Serialize;
use tokio_stream::StreamExt;

use super::{Http, decode, error::ApiError};
use crate::{
    api::{Call, Read},
    convert::{self, STALE_METADATA_KEY, TOKEN_METADATA_KEY},
    domain::{Caller, validate},
    pb,
    service::streams,
    store::Store,
};

type Answer = Result<Response, ApiError>;
type AppState<S> = State<Arc<Http<S>>>;

/// The call context of an HTTP request: the token (request field, else the
/// `x-registration-token` header) and the caller the guard established
/// (`http::observe`). HTTP callers state no deadline.
fn call(headers: &HeaderMap, caller: &Option<Extension<Caller>>, token_field: String) -> Call {
    let header = headers
        .get(TOKEN_METADATA_KEY)
        .and_then(|v| v.to_str().ok());
    Call {
        token: convert::token_of(token_field, header),
        deadline: None,
        caller: caller
            .as_ref()
            .map(|Extension(caller)| caller.clone())
            .unwrap_or_default(),
    }
}

/// `message` as a 200 JSON answer.
fn json<T: Serialize>(message: &T) -> Answer {
    let body = serde_json::to_vec(message).map_err(|e| {
        tracing::error!(error = %e, "cannot encode a reply as JSON");
        ApiError::from(crate::domain::Error::Internal { source: e.into() })
    })?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// A read's answer, marked `x-registry-stale: true` when it is.
fn read_json<T, M: Serialize>(read: Read<T>, encode: impl FnOnce(T) -> M) -> Answer {
    let mut response = json(&encode(read.value))?;
    if read.stale {
        response
            .headers_mut()
            .insert(STALE_METADATA_KEY, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The body's bytes; too large is 413.
fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(_) => ApiError::too_large(decode::MAX_BODY_BYTES),
        other => ApiError::invalid("body", other.body_text()),
    })
}

/// The `{id}` path segment, as the request's agent id (validated by the
/// RPC's decoder).
fn id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|rejection| ApiError::invalid("agent_id", rejection.body_text()))
}

/// `POST /v1/agents`: Register.
pub async fn register<S: Store>(
    State(http): AppState<S>,
    headers: HeaderMap,
    caller: Option<Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let mut req: pb::RegisterRequest = decode::body(&bytes(body)?)?;
    let decoded = convert::register_request(&mut req, http.registry.ttl())?;
    let call = call(
        &headers,
        &caller,
        std::mem::take(&mut req.registration_token),
    );
    let registered = http.registry.register(&call, decoded).await?;
    json(&convert::register_response(&registered))
}

/// `POST /v1/agents/{id}/heartbeat`: Heartbeat (the body may be empty).
pub async fn heartbeat<S: Store>(
    State(http): AppState<S>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    caller: Option<Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let mut req: pb::HeartbeatRequest = decode::body(&bytes(body)?)?;
    decode::path_id(id(path)?, &mut req.agent_id)?;
    let agent_id = validate::agent_id("agent_id", &req.agent_id)?;
    let telemetry = req.telemetry.map(convert::telemetry).transpose()?;
    let call = call(&headers, &caller, req.registration_token);
    let done = http.registry.heartbeat(&call, agent_id, telemetry).await?;
    json(&convert::heartbeat_response(&done))
}

/// `DELETE /v1/agents/{id}`: Deregister.
pub async fn deregister<S: Store>(
    State(http): AppState<S>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    caller: Option<Extension<Caller>>,
) -> Answer {
    let agent_id = validate::agent_id("agent_id", &id(path)?)?;
    let success = http
        .registry
        .deregister(&call(&headers, &caller, String::new()), agent_id)
        .await?;
    json(&pb::DeregisterResponse { success })
}

/// `GET /v1/agents/{id}`: GetAgent.
pub async fn get_agent<S: Store>(
    State(http): AppState<S>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    caller: Option<Extension<Caller>>,
) -> Answer {
    let agent_id = validate::agent_id("agent_id", &id(path)?)?;
    let agent = http
        .registry
        .get(&call(&headers, &caller, String::new()), agent_id)
        .await?;
    read_json(agent, |agent| pb::GetAgentResponse {
        agent: Some(pb::AgentInfo::from(&*agent)),
    })
}

/// `GET /v1/agents?…`: ListAgents.
pub async fn list<S: Store>(
    State(http): AppState<S>,
    headers: HeaderMap,
    caller: Option<Extension<Caller>>,
    RawQuery(query): RawQuery,
) -> Answer {
    let request = convert::list_request(decode::list_request(query.as_deref())?)?;
    let page = http
        .registry
        .list(&call(&headers, &caller, String::new()), &request)
        .await?;
    read_json(page, |page| convert::list_response(&request, page))
}

/// `GET /v1/discover?…`: DiscoverAgents.
pub async fn discover<S: Store>(
    State(http): AppState<S>,
    headers: HeaderMap,
    caller: Option<Extension<Caller>>,
    RawQuery(query): RawQuery,
) -> Answer {
    let query = convert::discover_query(decode::discover_request(query.as_deref())?)?;
    let found = http
        .registry
        .discover(&call(&headers, &caller, String::new()), &query)
        .await?;
    read_json(found, |agents| convert::discover_response(&query, &agents))
}

/// `POST /v1/agents/{id}/notifications`: NotifyAgent.
pub async fn notify<S: Store>(
    State(http): AppState<S>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    caller: Option<Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let mut req: pb::NotifyAgentRequest = decode::body(&bytes(body)?)?;
    decode::path_id(id(path)?, &mut req.agent_id)?;
    let cmd = convert::notify_command(req)?;
    let outcome = http
        .registry
        .notify(&call(&headers, &caller, String::new()), cmd)
        .await?;
    json(&convert::notify_response(&outcome))
}

/// `GET /v1/watch?…`: WatchAgents as Server-Sent Events, one `data:` line
/// of JSON (an AgentChangeEvent) per event. The stream ends as the gRPC
/// one does, with an `error` event carrying `{"code","message"}`.
pub async fn watch<S: Store>(
    State(http): AppState<S>,
    headers: HeaderMap,
    caller: Option<Extension<Caller>>,
    RawQuery(query): RawQuery,
) -> Answer {
    let request = convert::watch_request(decode::watch_request(query.as_deref())?)?;
    let snapshot = request.snapshot;
    let watching = http
        .registry
        .watch(&call(&headers, &caller, String::new()), request)
        .await?;
    let events = streams::watch(
        watching,
        snapshot,
        http.registry.clock().clone(),
        http.streams.clone(),
    )
    .map(|item| Ok::<_, Infallible>(sse_event(item)));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One stream item as an SSE event.
fn sse_event(item: Result<pb::AgentChangeEvent, tonic::Status>) -> Event {
    match item {
        Ok(event) => match serde_json::to_string(&event) {
            Ok(data) => Event::default().data(data),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a watch event as JSON");
                Event::default().event("error").data(
                    ApiError::from(crate::domain::Error::Internal { source: e.into() })
                        .json()
                        .to_string(),
                )
            }
        },
        Err(status) => Event::default()
            .event("error")
            .data(ApiError::from(status).json().to_string()),
    }
}

/// `GET /v1/capabilities`: the catalog, sorted by name.
pub async fn capabilities<S: Store>(
    State(http): AppState<S>,
    headers: HeaderMap,
    caller: Option<Extension<Caller>>,
) -> Answer {
    let catalog = http
        .registry
        .capabilities(&call(&headers, &caller, String::new()))
        .await;
    read_json(catalog, |catalog| Catalog {
        capabilities: catalog
            .into_iter()
            .map(|c| CatalogEntry {
                name: c.name,
                agents: c.agents,
                healthy: c.healthy,
            })
            .collect(),
    })
}

/// The body of `GET /v1/capabilities`.
#[derive(Serialize)]
struct Catalog {
    capabilities: Vec<CatalogEntry>,
}

/// One capability: how many agents have it, how many of those are HEALTHY.
#[derive(Serialize)]
struct CatalogEntry {
    name: String,
    agents: usize,
    healthy: usize,
}

/// Any other path: a JSON 404.
pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::no_route(method.as_str(), uri.path())
}
