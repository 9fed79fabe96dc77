//! Helpers of several fault topics: the contract's time bounds, a panic
//! counter, timed calls, stale reads, requests, and stream collectors.

use std::{
    collections::BTreeSet,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use agent_registry::pb;
use tonic::{Code, Response, Status, Streaming};

use crate::common::calls::Client;

type Events = Streaming<pb::AgentChangeEvent>;

/// Longer than this, a call counts as hung.
pub const HANG: Duration = Duration::from_secs(5);
/// The contract: a write fails with UNAVAILABLE within 2 s.
pub const FAIL_FAST: Duration = Duration::from_secs(2);
/// The contract: everything recovers within 5 s of the store coming back.
pub const RECOVERY: Duration = Duration::from_secs(5);

/// Counts panics anywhere in this test process (nextest runs each test in
/// its own process, so the in-process server's panics are ours).
pub static PANICS: AtomicUsize = AtomicUsize::new(0);

pub fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// Runs a call, timing it; `None` when it hung past [`HANG`].
pub async fn timed<T>(
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> (Duration, Option<Result<Response<T>, Status>>) {
    let start = Instant::now();
    let result = tokio::time::timeout(HANG, call).await.ok();
    (start.elapsed(), result)
}

pub fn code_of<T>(result: &Option<Result<Response<T>, Status>>) -> Option<Code> {
    match result {
        None => None,
        Some(Ok(_)) => Some(Code::Ok),
        Some(Err(s)) => Some(s.code()),
    }
}

/// Asserts a write failed fast with UNAVAILABLE.
pub fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    (elapsed, result): (Duration, Option<Result<Response<T>, Status>>),
) {
    let result = result.unwrap_or_else(|| panic!("{what}: hung for {HANG:?}"));
    match result {
        Err(status) => assert_eq!(
            status.code(),
            Code::Unavailable,
            "{what}: expected UNAVAILABLE, got {status:?}"
        ),
        Ok(response) => panic!("{what}: expected UNAVAILABLE, got OK {response:?}"),
    }
    assert!(
        elapsed < FAIL_FAST,
        "{what}: UNAVAILABLE took {elapsed:?} (contract: < 2 s)"
    );
}

pub fn is_stale<T>(response: &Response<T>) -> bool {
    response
        .metadata()
        .get("x-registry-stale")
        .is_some_and(|v| v.to_str().is_ok_and(|v| v == "true"))
}

pub fn heartbeat_request(
    agent: &pb::RegisterResponse,
    telemetry: Option<pb::AgentTelemetry>,
) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        agent_id: agent.agent_id.clone(),
        telemetry,
        registration_token: agent.registration_token.clone(),
    }
}

pub fn get_request(id: &str) -> pb::GetAgentRequest {
    pb::GetAgentRequest {
        agent_id: id.to_string(),
    }
}

pub async fn list(client: &mut Client) -> Response<pb::ListAgentsResponse> {
    tokio::time::timeout(HANG, client.list_agents(pb::ListAgentsRequest::default()))
        .await
        .expect("list_agents answers in time")
        .expect("list_agents answers")
}

pub fn ids(agents: &[pb::AgentInfo]) -> BTreeSet<String> {
    agents.iter().map(|a| a.agent_id.clone()).collect()
}

/// Collects a watch stream's events in a background task, and how it ended.
pub struct Collector {
    events: Arc<Mutex<Vec<pb::AgentChangeEvent>>>,
    end: Arc<Mutex<Option<Result<(), Status>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub fn spawn(mut stream: Events) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let end = Arc::new(Mutex::new(None));
        let (events2, end2) = (events.clone(), end.clone());
        let task = tokio::spawn(async move {
            for _ in 0..1_000_000 {
                match stream.message().await {
                    Ok(Some(event)) => events2.lock().unwrap().push(event),
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
        Self { events, end, task }
    }

    pub fn events(&self) -> Vec<pb::AgentChangeEvent> {
        self.events.lock().unwrap().clone()
    }

    pub fn ended(&self) -> Option<Result<(), Status>> {
        self.end.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether a new stream is refused with UNAVAILABLE (at the call or as its
/// first message).
pub async fn stream_refused_unavailable<T>(
    opened: Result<Response<Streaming<T>>, Status>,
) -> Result<(), String> {
    match opened {
        Err(status) if status.code() == Code::Unavailable => Ok(()),
        Err(status) => Err(format!("refused with {status:?}")),
        Ok(response) => {
            let mut stream = response.into_inner();
            match tokio::time::timeout(Duration::from_secs(3), stream.message()).await {
                Ok(Err(status)) if status.code() == Code::Unavailable => Ok(()),
                Ok(Err(status)) => Err(format!("ended with {status:?}")),
                Ok(Ok(Some(_))) => Err("delivered a message".into()),
                Ok(Ok(None)) => Err("ended cleanly".into()),
                Err(_) => Err("stayed open without messages".into()),
            }
        }
    }
}
