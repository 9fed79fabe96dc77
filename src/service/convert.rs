//! Wire ↔ domain: every request is decoded and validated here (BEHAVIOUR.md
//! §2) before anything else sees it, and every response is encoded here.
//!
//! Depends on: pb, domain.

use std::collections::HashMap;

use tonic::metadata::MetadataMap;

use crate::{
    config::TtlPolicy,
    domain::{
        Agent, AgentType, ChangeKind, Error, Notification, Result, Telemetry, Token,
        agent::Registration,
        query::{AgentFilter, DiscoverQuery, Strategy, WatchSelection},
        to_secs, validate,
    },
    pb,
    view::WatchEvent,
};

/// gRPC metadata key that may carry the registration token.
pub const TOKEN_METADATA_KEY: &str = "x-registration-token";

/// The token a caller presented: the request field if set, else the
/// `x-registration-token` metadata entry.
pub fn presented_token(field: String, metadata: &MetadataMap) -> Option<Token> {
    if !field.is_empty() {
        return Some(Token::presented(field));
    }
    metadata
        .get(TOKEN_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
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

/// Telemetry from the wire, validated.
pub fn telemetry(t: pb::AgentTelemetry) -> Result<Telemetry> {
    validate::telemetry(Telemetry {
        success_rate: t.success_rate,
        avg_duration_ms: t.avg_duration_ms,
        total_executions: t.total_executions,
        failed_executions: t.failed_executions,
        last_execution_at: t.last_execution_at,
    })
}

/// The registration part of a Register request.
pub fn registration(req: &mut pb::RegisterRequest, ttl: &TtlPolicy) -> Result<Registration> {
    let mut registration = Registration {
        agent_type: required_agent_type(req.agent_type)?,
        capabilities: validate::capabilities(std::mem::take(&mut req.capabilities), true)?,
        metadata: validate::metadata("metadata", std::mem::take(&mut req.metadata))?,
        namespace: validate::label("namespace", std::mem::take(&mut req.namespace), "default")?,
        cluster: validate::label("cluster", std::mem::take(&mut req.cluster), "local")?,
        version: validate::label("version", std::mem::take(&mut req.version), "1.0.0")?,
        endpoint: validate::endpoint(std::mem::take(&mut req.endpoint))?,
        telemetry: req.telemetry.take().map(telemetry).transpose()?,
        ttl_secs: validate::ttl(req.ttl_seconds, ttl.default_ttl, ttl.min_ttl, ttl.max_ttl)?,
    };
    registration.mirror_endpoint();
    Ok(registration)
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
        match key.as_str() {
            "namespace" => filter.namespace = Some(value),
            "cluster" => filter.cluster = Some(value),
            "version" => filter.version = Some(value),
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

/// A DiscoverAgents request.
pub fn discover_query(req: pb::DiscoverRequest) -> Result<DiscoverQuery> {
    let mut capabilities = validate::capabilities(req.capabilities, false)?;
    capabilities.sort();
    let mut filter = filter(req.agent_type, req.filters)?;
    filter.status.get_or_insert(crate::domain::Status::Healthy);
    let strategy = match pb::DiscoveryStrategy::try_from(req.strategy) {
        Ok(pb::DiscoveryStrategy::Ranked) => Strategy::Ranked,
        Ok(pb::DiscoveryStrategy::RoundRobin) => Strategy::RoundRobin,
        Ok(pb::DiscoveryStrategy::Random) => Strategy::Random,
        Err(_) => {
            return Err(Error::invalid(
                "strategy",
                "must be RANKED, ROUND_ROBIN or RANDOM",
            ));
        }
    };
    Ok(DiscoverQuery {
        capabilities,
        filter,
        max_results: validate::max_results(req.max_results)?,
        strategy,
    })
}

/// A WatchAgents selection.
pub fn watch_selection(req: &mut pb::WatchAgentsRequest) -> Result<WatchSelection> {
    let namespace = std::mem::take(&mut req.namespace);
    if namespace.len() > validate::MAX_LABEL_BYTES {
        return Err(Error::invalid("namespace", "at most 128 bytes"));
    }
    Ok(WatchSelection {
        agent_type: agent_type_filter(req.agent_type)?,
        capabilities: validate::capabilities(std::mem::take(&mut req.capabilities), false)?,
        namespace: (!namespace.is_empty()).then_some(namespace),
    })
}

/// The wire form of an agent. Never carries anything secret: the domain
/// agent holds no token.
pub fn agent_info(agent: &Agent) -> pb::AgentInfo {
    pb::AgentInfo {
        agent_id: agent.id.to_string(),
        agent_type: agent.agent_type as i32,
        capabilities: agent.capabilities.clone(),
        metadata: agent
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        telemetry: Some(pb::AgentTelemetry {
            success_rate: agent.telemetry.success_rate,
            avg_duration_ms: agent.telemetry.avg_duration_ms,
            total_executions: agent.telemetry.total_executions,
            failed_executions: agent.telemetry.failed_executions,
            last_execution_at: agent.telemetry.last_execution_at,
        }),
        status: agent.status as i32,
        registered_at: agent.registered_at,
        last_seen: agent.last_seen(),
        namespace: agent.namespace.clone(),
        cluster: agent.cluster.clone(),
        version: agent.version.clone(),
        schema_version: 1,
        endpoint: agent.endpoint.clone(),
        expires_at: agent.expires_at(),
        revision: agent.revision,
        health_check: None,
        health_output: String::new(),
    }
}

/// The wire form of a live change.
pub fn change_event(event: &WatchEvent) -> pb::AgentChangeEvent {
    use pb::agent_change_event::EventType;
    let (event_type, previous_status) = match event.kind {
        ChangeKind::Registered => (EventType::Registered, 0),
        ChangeKind::Updated | ChangeKind::Touched => (EventType::Updated, 0),
        ChangeKind::StatusChanged { previous } => (EventType::StatusChanged, previous as i32),
        ChangeKind::Deregistered => (EventType::Deregistered, 0),
        ChangeKind::Expired => (EventType::Expired, 0),
    };
    let mut agent = agent_info(&event.agent);
    agent.revision = event.revision;
    pb::AgentChangeEvent {
        event_type: event_type as i32,
        agent: Some(agent),
        timestamp: to_secs(event.at),
        revision: event.revision,
        previous_status,
    }
}

/// A SNAPSHOT event for an agent of the initial snapshot.
pub fn snapshot_event(agent: &Agent, now_ms: i64) -> pb::AgentChangeEvent {
    pb::AgentChangeEvent {
        event_type: pb::agent_change_event::EventType::Snapshot as i32,
        agent: Some(agent_info(agent)),
        timestamp: to_secs(now_ms),
        revision: agent.revision,
        previous_status: 0,
    }
}

/// The SYNCED marker closing the initial snapshot.
pub fn synced_event(revision: u64, now_ms: i64) -> pb::AgentChangeEvent {
    pb::AgentChangeEvent {
        event_type: pb::agent_change_event::EventType::Synced as i32,
        agent: None,
        timestamp: to_secs(now_ms),
        revision,
        previous_status: 0,
    }
}

/// The wire form of a notification.
pub fn notification(n: &Notification) -> pb::AgentNotification {
    pb::AgentNotification {
        notification_id: n.id.to_string(),
        agent_id: n.agent_id.to_string(),
        notification_type: n.kind.clone(),
        message: n.message.clone(),
        metadata: n
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        timestamp: to_secs(n.at),
    }
}
