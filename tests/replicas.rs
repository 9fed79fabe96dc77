//! Several registry replicas on one Redis behave as one registry
//! (BEHAVIOUR.md §4–§5): writes on one replica are read on another within
//! 200 ms, watchers on different replicas see the same changes in the same
//! order, racing reapers produce one transition, notifications cross
//! replicas, acknowledged writes survive the death of the replica that took
//! them, a replica reads its own writes, and page tokens work across
//! replicas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "replicas/notify.rs"]
mod notify;
#[path = "replicas/reads.rs"]
mod reads;
#[path = "replicas/watch.rs"]
mod watch;
use common::calls::*;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agent_registry::pb::{self, agent_change_event::EventType};
use tonic::Streaming;

/// The contract's bound for a write to show on every replica.
const REPLICATION: Duration = Duration::from_millis(200);

// ------------------------------------------------------------------ helpers

async fn heartbeat(
    client: &mut Client,
    agent: &pb::RegisterResponse,
    telemetry: Option<pb::AgentTelemetry>,
) -> pb::HeartbeatResponse {
    let request = pb::HeartbeatRequest {
        agent_id: agent.agent_id.clone(),
        telemetry,
        registration_token: agent.registration_token.clone(),
    };
    tokio::time::timeout(CALL_WAIT, client.heartbeat(request))
        .await
        .expect("heartbeat answers in time")
        .expect("heartbeat succeeds")
        .into_inner()
}

async fn deregister(client: &mut Client, agent: &pb::RegisterResponse) {
    let request = pb::DeregisterRequest {
        agent_id: agent.agent_id.clone(),
        registration_token: agent.registration_token.clone(),
    };
    let success = tokio::time::timeout(CALL_WAIT, client.deregister(request))
        .await
        .expect("deregister answers in time")
        .expect("deregister succeeds")
        .into_inner()
        .success;
    assert!(success, "deregistering {} answers success", agent.agent_id);
}

async fn get(client: &mut Client, id: &str) -> Result<pb::AgentInfo, tonic::Status> {
    let request = pb::GetAgentRequest {
        agent_id: id.to_string(),
    };
    tokio::time::timeout(CALL_WAIT, client.get_agent(request))
        .await
        .expect("get_agent answers in time")
        .map(|r| r.into_inner().agent.expect("GetAgent carries the agent"))
}

async fn list_all(client: &mut Client) -> Vec<pb::AgentInfo> {
    tokio::time::timeout(
        CALL_WAIT,
        client.list_agents(pb::ListAgentsRequest::default()),
    )
    .await
    .expect("list_agents answers in time")
    .expect("list_agents succeeds")
    .into_inner()
    .agents
}

/// Collects a stream's messages in a background task, with the time each
/// arrived and how the stream ended.
struct Collector<T> {
    items: Arc<Mutex<Vec<(Instant, T)>>>,
    end: Arc<Mutex<Option<Result<(), tonic::Status>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Clone + Send + 'static> Collector<T> {
    fn spawn(mut stream: Streaming<T>) -> Self {
        let items = Arc::new(Mutex::new(Vec::new()));
        let end = Arc::new(Mutex::new(None));
        let (items2, end2) = (items.clone(), end.clone());
        let task = tokio::spawn(async move {
            // Bounded: a stream in these tests carries far fewer messages.
            for _ in 0..1_000_000 {
                match stream.message().await {
                    Ok(Some(item)) => items2.lock().unwrap().push((Instant::now(), item)),
                    Ok(None) => {
                        *end2.lock().unwrap() = Some(Ok(()));
                        return;
                    }
                    Err(status) => {
                        *end2.lock().unwrap() = Some(Err(status));
                        return;
                    }
                }
            }
        });
        Self { items, end, task }
    }

    fn items(&self) -> Vec<T> {
        self.items
            .lock()
            .unwrap()
            .iter()
            .map(|(_, i)| i.clone())
            .collect()
    }

    fn timed(&self) -> Vec<(Instant, T)> {
        self.items.lock().unwrap().clone()
    }

    fn ended(&self) -> Option<Result<(), tonic::Status>> {
        self.end.lock().unwrap().clone()
    }
}

impl<T> Drop for Collector<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// (event type, agent id, revision) of every change event.
fn changes(events: &[pb::AgentChangeEvent]) -> Vec<(EventType, String, u64)> {
    events
        .iter()
        .map(|e| (kind(e), id_of(e), e.revision))
        .collect()
}

fn assert_strictly_increasing(events: &[(EventType, String, u64)], who: &str) {
    for pair in events.windows(2) {
        assert!(
            pair[1].2 > pair[0].2,
            "{who}: revisions strictly increase: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

// -------------------------------------------------------------------- tests
