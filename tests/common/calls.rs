//! Calls and event accessors shared by the suites that drive replicas on
//! Redis (faults, replicas, keys). Not glob-exported by `common`: a suite
//! opts in with `use common::calls::*;` (the behaviour suite has helpers of
//! the same names).

use std::time::Duration;

use agent_registry::pb::{
    self, agent_change_event::EventType, service_registry_client::ServiceRegistryClient,
};
use tonic::transport::Channel;

/// A client of the registry service.
pub type Client = ServiceRegistryClient<Channel>;

/// Longest a single call may take in these tests before it counts as a hang.
pub const CALL_WAIT: Duration = Duration::from_secs(5);

/// Telemetry with `success_rate` over `total` executions (the failed ones
/// rounded to match), 10 ms on average.
pub fn telemetry(success_rate: f64, total: i64) -> pb::AgentTelemetry {
    let failed = (((1.0 - success_rate) * total as f64).round() as i64).clamp(0, total);
    pb::AgentTelemetry {
        success_rate,
        avg_duration_ms: 10,
        total_executions: total,
        failed_executions: failed,
        last_execution_at: 0,
    }
}

/// The type of a change event.
pub fn kind(event: &pb::AgentChangeEvent) -> EventType {
    EventType::try_from(event.event_type).expect("a known event type")
}

/// The id of the event's agent ("" for SYNCED).
pub fn id_of(event: &pb::AgentChangeEvent) -> String {
    event
        .agent
        .as_ref()
        .map(|a| a.agent_id.clone())
        .unwrap_or_default()
}

/// Registers, which must succeed within [`CALL_WAIT`].
pub async fn register(client: &mut Client, request: pb::RegisterRequest) -> pb::RegisterResponse {
    tokio::time::timeout(CALL_WAIT, client.register(request))
        .await
        .expect("register answers in time")
        .expect("register succeeds")
        .into_inner()
}

/// `request` with the heartbeat timeout `ttl_seconds`.
pub fn with_ttl(mut request: pb::RegisterRequest, ttl_seconds: i32) -> pb::RegisterRequest {
    request.ttl_seconds = ttl_seconds;
    request
}
