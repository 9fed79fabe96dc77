//! Wire ↔ domain, in one place for the whole crate: the service decodes and
//! validates every request here (BEHAVIOUR.md §2) and encodes every answer;
//! the SDK, the Redis codec and the CLI use the same conversions.
//!
//! Depends on: pb, domain.

mod agent;

use std::{collections::HashMap, sync::Arc};

use tonic::metadata::MetadataMap;

pub use self::agent::{agent_from_wire, marker_event, snapshot_event};
use crate::{
    api,
    config::TtlPolicy,
    domain::{
        Agent, AgentType, Error, Result, Telemetry, Token,
        agent::Registration,
        check::{self, CheckKind, CheckRequest, HealthCheck},
        query::{
            AgentFilter, DiscoverQuery, Strategy, WatchSelection, decode_page_token,
            encode_page_token,
        },
        validate,
    },
    pb,
    store::{Heartbeaten, NotifyCommand, Registered},
};

/// gRPC metadata key that may carry the registration token.
pub const TOKEN_METADATA_KEY: &str = "x-registration-token";

/// Response metadata set on reads served while the store is unreachable.
pub const STALE_METADATA_KEY: &str = "x-registry-stale";

/// The token a caller presented: the request field if set, else the
/// `x-registration-token` metadata entry.
pub fn presented_token(field: String, metadata: &MetadataMap) -> Option<Token> {
    let header = metadata
        .get(TOKEN_METADATA_KEY)
        .and_then(|v| v.to_str().ok());
    token_of(field, header)
}

/// The token a caller presented: the request field if set, else the
/// header's value (`x-registration-token`, gRPC metadata or HTTP header).
pub fn token_of(field: String, header: Option<&str>) -> Option<Token> {
    if !field.is_empty() {
        return Some(Token::presented(field));
    }
    header
        .filter(|s| !s.is_empty())
        .map(|s| Token::presented(s.to_owned()))
}

/// An agent type that must be set (Register).
pub fn required_agent_type(n: i32) -> Result<AgentType> {
    AgentType::from_wire(n).ok_or_else(|| {
        Error::invalid(
            "agent_type",
            format!("{n} is not WORKER, SCOUT, GUARD or ANALYST"),
        )
    })
}

/// An agent type filter: 0 = any.
pub fn agent_type_filter(n: i32) -> Result<Option<AgentType>> {
    if n == 0 {
        return Ok(None);
    }
    required_agent_type(n).map(Some)
}

impl From<pb::AgentTelemetry> for Telemetry {
    /// Field by field, unvalidated (see [`telemetry`] for requests).
    fn from(t: pb::AgentTelemetry) -> Self {
        Self {
            success_rate: t.success_rate,
            avg_duration_ms: t.avg_duration_ms,
            total_executions: t.total_executions,
            failed_executions: t.failed_executions,
            last_execution_at: t.last_execution_at,
        }
    }
}

impl From<&Telemetry> for pb::AgentTelemetry {
    fn from(t: &Telemetry) -> Self {
        let Telemetry {
            success_rate,
            avg_duration_ms,
            total_executions,
            failed_executions,
            last_execution_at,
        } = *t;
        Self {
            success_rate,
            avg_duration_ms,
            total_executions,
            failed_executions,
            last_execution_at,
        }
    }
}

/// Telemetry from a request, validated.
pub fn telemetry(t: pb::AgentTelemetry) -> Result<Telemetry> {
    validate::telemetry(t.into())
}

impl From<pb::DiscoveryStrategy> for Strategy {
    fn from(s: pb::DiscoveryStrategy) -> Self {
        match s {
            pb::DiscoveryStrategy::Ranked => Self::Ranked,
            pb::DiscoveryStrategy::RoundRobin => Self::RoundRobin,
            pb::DiscoveryStrategy::Random => Self::Random,
        }
    }
}

/// A strategy number from a request.
pub fn strategy(n: i32) -> Result<Strategy> {
    pb::DiscoveryStrategy::try_from(n)
        .map(Strategy::from)
        .map_err(|_| Error::invalid("strategy", "must be RANKED, ROUND_ROBIN or RANDOM"))
}

/// A whole Register request: the registration, then the id to register
/// again under (the token is the call's, see [`presented_token`]).
pub fn register_request(
    req: &mut pb::RegisterRequest,
    ttl: &TtlPolicy,
) -> Result<api::RegisterRequest> {
    let registration = registration(req, ttl)?;
    let agent_id = match req.agent_id.as_str() {
        "" => None,
        id => Some(validate::agent_id("agent_id", id)?),
    };
    Ok(api::RegisterRequest {
        registration,
        agent_id,
    })
}

/// The answer to a Register: id, token, granted TTL and interval.
pub fn register_response(registered: &Registered) -> pb::RegisterResponse {
    let ttl = registered.agent.ttl_secs;
    pb::RegisterResponse {
        agent_id: registered.agent.id.to_string(),
        registration_token: registered
            .token
            .as_ref()
            .map(|t| t.expose().to_owned())
            .unwrap_or_default(),
        registered_at: registered.agent.registered_at,
        ttl_seconds: i32::try_from(ttl).unwrap_or(i32::MAX),
        heartbeat_interval_seconds: i32::try_from((ttl / 3).max(1)).unwrap_or(i32::MAX),
    }
}

/// The registration part of a Register request.
pub fn registration(req: &mut pb::RegisterRequest, ttl: &TtlPolicy) -> Result<Registration> {
    let mut registration = Registration {
        agent_type: required_agent_type(req.agent_type)?,
        capabilities: validate::capabilities(std::mem::take(&mut req.capabilities), true)?
            .into_iter()
            .map(Into::into)
            .collect(),
        metadata: validate::metadata("metadata", std::mem::take(&mut req.metadata))?.into(),
        namespace: validate::label("namespace", std::mem::take(&mut req.namespace), "default")?
            .into(),
        cluster: validate::label("cluster", std::mem::take(&mut req.cluster), "local")?.into(),
        version: validate::label("version", std::mem::take(&mut req.version), "1.0.0")?.into(),
        endpoint: validate::endpoint(std::mem::take(&mut req.endpoint))?.into(),
        telemetry: req.telemetry.take().map(telemetry).transpose()?,
        ttl_secs: validate::ttl(req.ttl_seconds, ttl.default_ttl, ttl.min_ttl, ttl.max_ttl)?,
        health_check: None,
    };
    registration.mirror_endpoint();
    if let Some(wanted) = req.health_check.take() {
        registration.health_check = check::grant(wanted.into(), &registration.endpoint)?;
    }
    Ok(registration)
}

impl From<pb::HealthCheck> for CheckRequest {
    fn from(c: pb::HealthCheck) -> Self {
        Self {
            kind: c.kind,
            target: c.target,
            path: c.path,
            interval_seconds: c.interval_seconds,
            timeout_seconds: c.timeout_seconds,
            failures_before_unhealthy: c.failures_before_unhealthy,
            successes_before_healthy: c.successes_before_healthy,
            deregister_after_seconds: c.deregister_after_seconds,
        }
    }
}

impl From<&HealthCheck> for pb::HealthCheck {
    fn from(c: &HealthCheck) -> Self {
        let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        Self {
            kind: c.kind as i32,
            target: c.target.clone(),
            path: c.path.clone(),
            interval_seconds: int(c.interval_secs),
            timeout_seconds: int(c.timeout_secs),
            failures_before_unhealthy: int(c.failures_before_unhealthy),
            successes_before_healthy: int(c.successes_before_healthy),
            deregister_after_seconds: int(c.deregister_after_secs),
        }
    }
}

/// A granted check as the wire (or a stored record) carries it, taken as
/// is: `None` for NONE or an unknown kind.
pub fn health_check_from_wire(c: pb::HealthCheck) -> Option<HealthCheck> {
    let uint = |n: i32| u32::try_from(n).unwrap_or(0);
    Some(HealthCheck {
        kind: CheckKind::from_wire(c.kind)?,
        target: c.target,
        path: c.path,
        interval_secs: uint(c.interval_seconds).max(1),
        timeout_secs: uint(c.timeout_seconds).max(1),
        failures_before_unhealthy: uint(c.failures_before_unhealthy).max(1),
        successes_before_healthy: uint(c.successes_before_healthy).max(1),
        deregister_after_secs: uint(c.deregister_after_seconds),
    })
}

/// List/Discover filters: `namespace`, `cluster`, `version`, `status`,
/// `agent_type` (as if given in the field; both must agree); any other key
/// is a metadata match (BEHAVIOUR.md §4).
pub fn filter(agent_type: i32, filters: HashMap<String, String>) -> Result<AgentFilter> {
    let mut filter = AgentFilter {
        agent_type: agent_type_filter(agent_type)?,
        ..AgentFilter::default()
    };
    for (key, value) in validate::metadata("filters", filters)? {
        validate::filter_key(&key)?;
        match key.as_str() {
            "namespace" => {
                filter.namespace = Some(validate::label_filter("filters[\"namespace\"]", value)?);
            }
            "cluster" => {
                filter.cluster = Some(validate::label_filter("filters[\"cluster\"]", value)?);
            }
            "version" => {
                filter.version = Some(validate::label_filter("filters[\"version\"]", value)?);
            }
            "status" => filter.status = Some(validate::status_filter(&value)?),
            "agent_type" => {
                let named = validate::agent_type_filter(&value)?;
                if filter.agent_type.is_some_and(|t| t != named) {
                    return Err(Error::invalid(
                        "filters[\"agent_type\"]",
                        format!("{value} contradicts the agent_type field"),
                    ));
                }
                filter.agent_type = Some(named);
            }
            _ => {
                filter.metadata.insert(key, value);
            }
        }
    }
    Ok(filter)
}

/// A whole ListAgents request: filters, page size and page token (which
/// must have been handed out for the same filters).
pub fn list_request(req: pb::ListAgentsRequest) -> Result<api::ListRequest> {
    let filter = filter(req.agent_type, req.filters)?;
    let page_size = validate::page_size(req.page_size)?;
    let after = match req.page_token.as_str() {
        "" => None,
        token => Some(decode_page_token(token, &filter)?),
    };
    Ok(api::ListRequest {
        filter,
        page_size,
        after,
    })
}

/// The answer to a ListAgents `request`: the page and, when more follow,
/// the token of the next one.
pub fn list_response(request: &api::ListRequest, page: api::ListPage) -> pb::ListAgentsResponse {
    pb::ListAgentsResponse {
        agents: page
            .agents
            .iter()
            .map(|a| pb::AgentInfo::from(&**a))
            .collect(),
        next_page_token: page
            .next
            .map(|key| encode_page_token(key, &request.filter))
            .unwrap_or_default(),
    }
}

/// The answer to a DiscoverAgents `query`.
pub fn discover_response(query: &DiscoverQuery, agents: &[Arc<Agent>]) -> pb::DiscoverResponse {
    pb::DiscoverResponse {
        agents: agents.iter().map(|a| pb::AgentInfo::from(&**a)).collect(),
        ranked: query.strategy == Strategy::Ranked,
    }
}

/// The answer to a Heartbeat.
pub fn heartbeat_response(done: &Heartbeaten) -> pb::HeartbeatResponse {
    pb::HeartbeatResponse {
        status: done.status as i32,
        last_seen: done.last_seen(),
        expires_at: done.expires_at(),
    }
}

/// A NotifyAgent request.
pub fn notify_command(req: pb::NotifyAgentRequest) -> Result<NotifyCommand> {
    Ok(NotifyCommand {
        agent_id: validate::agent_id("agent_id", &req.agent_id)?,
        kind: validate::notification_type(req.notification_type)?,
        message: validate::message(req.message)?,
        metadata: validate::metadata("metadata", req.metadata)?,
    })
}

/// The answer to a NotifyAgent.
pub fn notify_response(outcome: &api::NotifyOutcome) -> pb::NotifyAgentResponse {
    pb::NotifyAgentResponse {
        success: true,
        error: String::new(),
        notification_id: outcome.notification.id.to_string(),
        delivered: outcome.delivered,
    }
}

/// A DiscoverAgents request.
pub fn discover_query(req: pb::DiscoverRequest) -> Result<DiscoverQuery> {
    let mut capabilities = validate::capabilities(req.capabilities, false)?;
    capabilities.sort();
    let mut filter = filter(req.agent_type, req.filters)?;
    filter.status.get_or_insert(crate::domain::Status::Healthy);
    let strategy = strategy(req.strategy)?;
    Ok(DiscoverQuery {
        capabilities,
        filter,
        max_results: validate::max_results(req.max_results)?,
        strategy,
    })
}

/// A whole WatchAgents request: the selection, snapshot or resume point,
/// and progress (BEHAVIOUR.md §4, §11).
pub fn watch_request(req: pb::WatchAgentsRequest) -> Result<api::WatchRequest> {
    let namespace = validate::label_filter("namespace", req.namespace)?;
    if req.start_revision > 0 && req.send_initial_snapshot {
        return Err(Error::invalid(
            "start_revision",
            "cannot be combined with send_initial_snapshot: resume, or take a snapshot",
        ));
    }
    Ok(api::WatchRequest {
        selection: WatchSelection {
            agent_type: agent_type_filter(req.agent_type)?,
            capabilities: validate::capabilities(req.capabilities, false)?,
            namespace: (!namespace.is_empty()).then_some(namespace),
        },
        snapshot: req.send_initial_snapshot,
        start_revision: (req.start_revision > 0).then_some(req.start_revision),
        progress: req.progress_notify,
    })
}

/// `ok`, or the gRPC code's name as in `INVALID_ARGUMENT`: the `result`
/// label of the call counters, and how the SDK names a code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
