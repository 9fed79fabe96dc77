//! Helpers shared by the behaviour modules: reading watch streams and
//! building telemetry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_registry::pb::{self, agent_change_event::EventType};
use tonic::Streaming;

/// A watch stream.
pub type Events = Streaming<pb::AgentChangeEvent>;

/// How long a test waits for an event it expects.
pub const EVENT_WAIT: Duration = Duration::from_secs(5);

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub fn telemetry(success_rate: f64, avg_duration_ms: i64, total: i64) -> pb::AgentTelemetry {
    let failed = (((1.0 - success_rate) * total as f64).round() as i64).clamp(0, total);
    pb::AgentTelemetry {
        success_rate,
        avg_duration_ms,
        total_executions: total,
        failed_executions: failed,
        last_execution_at: 0,
    }
}

pub fn kind(event: &pb::AgentChangeEvent) -> EventType {
    EventType::try_from(event.event_type).expect("a known event type")
}

pub fn agent_of(event: &pb::AgentChangeEvent) -> &pb::AgentInfo {
    event
        .agent
        .as_ref()
        .unwrap_or_else(|| panic!("event carries the agent: {event:?}"))
}

pub async fn next_event(stream: &mut Events) -> pb::AgentChangeEvent {
    match tokio::time::timeout(EVENT_WAIT, stream.message()).await {
        Err(_) => panic!("no event within {EVENT_WAIT:?}"),
        Ok(Err(status)) => panic!("watch stream failed: {status:?}"),
        Ok(Ok(None)) => panic!("watch stream ended"),
        Ok(Ok(Some(event))) => event,
    }
}

pub async fn expect_quiet(stream: &mut Events, quiet: Duration) {
    match tokio::time::timeout(quiet, stream.message()).await {
        Err(_) => {}
        Ok(Ok(Some(event))) => panic!("unexpected event: {event:?}"),
        Ok(other) => panic!("watch stream ended: {other:?}"),
    }
}
