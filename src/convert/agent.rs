//! Agents, change events and notifications on the wire: what every read,
//! the watch stream, the Redis codec and the SDK's cache encode or decode.

use std::collections::HashMap;

use super::health_check_from_wire;
use crate::{
    domain::{
        Agent, AgentId, AgentType, Change, ChangeKind, Notification, Status, agent::Registration,
        to_secs,
    },
    pb::{self, agent_change_event::EventType},
};

impl From<&Registration> for pb::AgentInfo {
    /// The registration's fields only (what the Redis store keeps as the
    /// agent's `reg` blob).
    fn from(reg: &Registration) -> Self {
        Self {
            agent_type: reg.agent_type as i32,
            capabilities: to_strings(&reg.capabilities),
            metadata: to_map(&reg.metadata),
            namespace: reg.namespace.as_str().to_owned(),
            cluster: reg.cluster.as_str().to_owned(),
            version: reg.version.as_str().to_owned(),
            endpoint: reg.endpoint.as_str().to_owned(),
            health_check: reg.health_check.as_ref().map(Into::into),
            ..Self::default()
        }
    }
}

impl From<&Agent> for pb::AgentInfo {
    /// The wire form of an agent. Never carries anything secret: the domain
    /// agent holds no token.
    fn from(agent: &Agent) -> Self {
        Self {
            agent_id: agent.id.to_string(),
            agent_type: agent.agent_type as i32,
            capabilities: to_strings(&agent.capabilities),
            metadata: to_map(&agent.metadata),
            telemetry: Some((&agent.telemetry).into()),
            status: agent.status as i32,
            registered_at: agent.registered_at,
            last_seen: agent.last_seen(),
            namespace: agent.namespace.as_str().to_owned(),
            cluster: agent.cluster.as_str().to_owned(),
            version: agent.version.as_str().to_owned(),
            schema_version: 1,
            endpoint: agent.endpoint.as_str().to_owned(),
            expires_at: agent.expires_at(),
            revision: agent.revision,
            health_check: agent.health_check.as_ref().map(Into::into),
            health_output: agent.probe.output.clone(),
        }
    }
}

/// The domain form of a wire agent with id `id`, as far as the wire carries
/// it: `last_seen` in whole seconds, no TTL, not overdue; a status of 0
/// reads as HEALTHY. `None` for an unknown agent type.
pub fn agent_from_wire(id: AgentId, info: pb::AgentInfo) -> Option<Agent> {
    Some(Agent {
        id,
        agent_type: AgentType::from_wire(info.agent_type)?,
        capabilities: info.capabilities.into_iter().map(Into::into).collect(),
        metadata: info.metadata.into_iter().collect(),
        telemetry: info.telemetry.unwrap_or_default().into(),
        status: Status::from_wire(info.status).unwrap_or(Status::Healthy),
        overdue: false,
        registered_at: info.registered_at,
        last_seen_ms: info.last_seen.saturating_mul(1000),
        ttl_secs: 0,
        namespace: info.namespace.into(),
        cluster: info.cluster.into(),
        version: info.version.into(),
        endpoint: info.endpoint.into(),
        revision: info.revision,
        health_check: info.health_check.and_then(health_check_from_wire),
        probe: crate::domain::check::ProbeState {
            output: info.health_output,
            ..Default::default()
        },
    })
}

fn to_strings(v: &[compact_str::CompactString]) -> Vec<String> {
    v.iter().map(|c| c.as_str().to_owned()).collect()
}

fn to_map<'a, T: AsRef<str> + 'a>(
    m: impl IntoIterator<Item = (&'a T, &'a T)>,
) -> HashMap<String, String> {
    m.into_iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect()
}

/// The wire name of a change kind (keep-alives, never sent, read as
/// UPDATED).
impl From<ChangeKind> for EventType {
    fn from(kind: ChangeKind) -> Self {
        match kind {
            ChangeKind::Registered => Self::Registered,
            ChangeKind::Updated | ChangeKind::Touched => Self::Updated,
            ChangeKind::StatusChanged { .. } => Self::StatusChanged,
            ChangeKind::Deregistered => Self::Deregistered,
            ChangeKind::Expired => Self::Expired,
        }
    }
}

impl From<&Change> for pb::AgentChangeEvent {
    /// The wire form of a live change.
    fn from(change: &Change) -> Self {
        let previous_status = match change.kind {
            ChangeKind::StatusChanged { previous } => previous as i32,
            _ => 0,
        };
        let mut agent = pb::AgentInfo::from(&*change.agent);
        agent.revision = change.revision;
        Self {
            event_type: EventType::from(change.kind) as i32,
            agent: Some(agent),
            timestamp: to_secs(change.at),
            revision: change.revision,
            previous_status,
        }
    }
}

/// A SNAPSHOT event for an agent of the initial snapshot.
pub fn snapshot_event(agent: &Agent, now_ms: i64) -> pb::AgentChangeEvent {
    pb::AgentChangeEvent {
        event_type: EventType::Snapshot as i32,
        agent: Some(agent.into()),
        timestamp: to_secs(now_ms),
        revision: agent.revision,
        previous_status: 0,
    }
}

/// A marker event without an agent: SYNCED closing the initial snapshot,
/// or a BOOKMARK of progress, at `revision`.
pub fn marker_event(kind: EventType, revision: u64, now_ms: i64) -> pb::AgentChangeEvent {
    pb::AgentChangeEvent {
        event_type: kind as i32,
        agent: None,
        timestamp: to_secs(now_ms),
        revision,
        previous_status: 0,
    }
}

impl From<&Notification> for pb::AgentNotification {
    fn from(n: &Notification) -> Self {
        Self {
            notification_id: n.id.to_string(),
            agent_id: n.agent_id.to_string(),
            notification_type: n.kind.clone(),
            message: n.message.clone(),
            metadata: to_map(&n.metadata),
            timestamp: to_secs(n.at),
        }
    }
}
