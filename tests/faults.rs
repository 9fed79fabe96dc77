//! Faults (BEHAVIOUR.md §5) on the Redis store: Redis killed and restarted
//! empty, Redis stalled, outages of Redis and of every replica (outage
//! fencing), and a registry started while Redis is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use agent_registry::{
    config::Config,
    pb::{self, agent_change_event::EventType, service_registry_client::ServiceRegistryClient},
    server,
};
use clap::Parser;
use tonic::{Code, Response, Status, Streaming, transport::Channel};

type Client = ServiceRegistryClient<Channel>;
type Events = Streaming<pb::AgentChangeEvent>;

/// Longer than this, a call counts as hung.
const HANG: Duration = Duration::from_secs(5);
/// The contract: a write fails with UNAVAILABLE within 2 s.
const FAIL_FAST: Duration = Duration::from_secs(2);
/// The contract: everything recovers within 5 s of the store coming back.
const RECOVERY: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------ helpers

/// Counts panics anywhere in this test process (nextest runs each test in
/// its own process, so the in-process server's panics are ours).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
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
async fn timed<T>(
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> (Duration, Option<Result<Response<T>, Status>>) {
    let start = Instant::now();
    let result = tokio::time::timeout(HANG, call).await.ok();
    (start.elapsed(), result)
}

fn code_of<T>(result: &Option<Result<Response<T>, Status>>) -> Option<Code> {
    match result {
        None => None,
        Some(Ok(_)) => Some(Code::Ok),
        Some(Err(s)) => Some(s.code()),
    }
}

/// Asserts a write failed fast with UNAVAILABLE.
fn assert_unavailable<T: std::fmt::Debug>(
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

fn is_stale<T>(response: &Response<T>) -> bool {
    response
        .metadata()
        .get("x-registry-stale")
        .is_some_and(|v| v.to_str().is_ok_and(|v| v == "true"))
}

fn kind(event: &pb::AgentChangeEvent) -> EventType {
    EventType::try_from(event.event_type).expect("a known event type")
}

fn id_of(event: &pb::AgentChangeEvent) -> String {
    event
        .agent
        .as_ref()
        .map(|a| a.agent_id.clone())
        .unwrap_or_default()
}

fn telemetry(success_rate: f64, total: i64) -> pb::AgentTelemetry {
    let failed = (((1.0 - success_rate) * total as f64).round() as i64).clamp(0, total);
    pb::AgentTelemetry {
        success_rate,
        avg_duration_ms: 10,
        total_executions: total,
        failed_executions: failed,
        last_execution_at: 0,
    }
}

async fn register(client: &mut Client, request: pb::RegisterRequest) -> pb::RegisterResponse {
    tokio::time::timeout(HANG, client.register(request))
        .await
        .expect("register answers in time")
        .expect("register succeeds")
        .into_inner()
}

fn with_ttl(mut request: pb::RegisterRequest, ttl_seconds: i32) -> pb::RegisterRequest {
    request.ttl_seconds = ttl_seconds;
    request
}

fn heartbeat_request(
    agent: &pb::RegisterResponse,
    telemetry: Option<pb::AgentTelemetry>,
) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        agent_id: agent.agent_id.clone(),
        telemetry,
        registration_token: agent.registration_token.clone(),
    }
}

fn get_request(id: &str) -> pb::GetAgentRequest {
    pb::GetAgentRequest {
        agent_id: id.to_string(),
    }
}

async fn list(client: &mut Client) -> Response<pb::ListAgentsResponse> {
    tokio::time::timeout(HANG, client.list_agents(pb::ListAgentsRequest::default()))
        .await
        .expect("list_agents answers in time")
        .expect("list_agents answers")
}

fn ids(agents: &[pb::AgentInfo]) -> BTreeSet<String> {
    agents.iter().map(|a| a.agent_id.clone()).collect()
}

/// Collects a watch stream's events in a background task, and how it ended.
struct Collector {
    events: Arc<Mutex<Vec<pb::AgentChangeEvent>>>,
    end: Arc<Mutex<Option<Result<(), Status>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    fn spawn(mut stream: Events) -> Self {
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

    fn events(&self) -> Vec<pb::AgentChangeEvent> {
        self.events.lock().unwrap().clone()
    }

    fn ended(&self) -> Option<Result<(), Status>> {
        self.end.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads a stream to its end in a background task: how many messages it
/// carried and the status it ended with (`None`: ended cleanly).
fn drain<T: Send + 'static>(
    mut stream: Streaming<T>,
) -> tokio::task::JoinHandle<(usize, Option<Status>)> {
    tokio::spawn(async move {
        let mut count = 0;
        for _ in 0..1_000_000 {
            match stream.message().await {
                Ok(Some(_)) => count += 1,
                Ok(None) => return (count, None),
                Err(status) => return (count, Some(status)),
            }
        }
        (count, None)
    })
}

/// Whether a new stream is refused with UNAVAILABLE (at the call or as its
/// first message).
async fn stream_refused_unavailable<T>(
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

/// One write of a load task.
#[derive(Clone, Debug)]
struct Outcome {
    op: &'static str,
    started: Instant,
    elapsed: Duration,
    /// `None`: hung past [`HANG`].
    code: Option<Code>,
    registered: Option<pb::RegisterResponse>,
}

/// Registers new agents and heartbeats known ones until `stop` (at most
/// `rounds` writes), logging every outcome.
async fn load(
    client: Client,
    mut agents: Vec<pb::RegisterResponse>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Outcome>>>,
    rounds: usize,
) {
    let mut client = client;
    for i in 0..rounds {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let started = Instant::now();
        if i % 3 == 0 || agents.is_empty() {
            let (elapsed, result) =
                timed(client.register(register_request(&["load", &format!("l{i}")]))).await;
            let code = code_of(&result);
            let registered = match result {
                Some(Ok(r)) => Some(r.into_inner()),
                _ => None,
            };
            if let Some(r) = &registered {
                agents.push(r.clone());
            }
            log.lock().unwrap().push(Outcome {
                op: "register",
                started,
                elapsed,
                code,
                registered,
            });
        } else {
            let agent = &agents[i % agents.len()];
            let request = heartbeat_request(agent, Some(telemetry(0.9, i as i64)));
            let (elapsed, result) = timed(client.heartbeat(request)).await;
            log.lock().unwrap().push(Outcome {
                op: "heartbeat",
                started,
                elapsed,
                code: code_of(&result),
                registered: None,
            });
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// Heartbeats every agent (no telemetry) about every second through the
/// given clients in turn, ignoring errors, until `stop` (at most `rounds`).
/// Counts successful heartbeats.
async fn heartbeater(
    clients: Vec<Client>,
    agents: Vec<pb::RegisterResponse>,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    rounds: usize,
) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for round in 0..rounds {
        interval.tick().await;
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let beats = agents.iter().enumerate().map(|(i, agent)| {
            let mut client = clients[(round + i) % clients.len()].clone();
            let request = heartbeat_request(agent, None);
            let ok = ok.clone();
            async move {
                let result =
                    tokio::time::timeout(Duration::from_millis(900), client.heartbeat(request))
                        .await;
                if matches!(result, Ok(Ok(_))) {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        futures_join_all(beats).await;
    }
}

/// Runs futures concurrently (no `futures` crate among the dependencies).
async fn futures_join_all<F: Future<Output = ()> + Send + 'static>(
    futures: impl IntoIterator<Item = F>,
) {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for handle in handles {
        handle.await.unwrap();
    }
}

/// After an outage: a watcher opened now (with snapshot) sees every agent
/// HEALTHY, heartbeats go on for `keep` and the watcher sees no liveness
/// transition of them; List and Get agree they are all HEALTHY.
async fn assert_all_survived(client: &mut Client, agents: &[pb::RegisterResponse], keep: Duration) {
    let mine: HashSet<String> = agents.iter().map(|a| a.agent_id.clone()).collect();
    let (stream, snapshot) = watch_synced(client).await;
    let watch = Collector::spawn(stream);
    let snap: HashMap<String, i32> = snapshot
        .iter()
        .map(|e| (id_of(e), e.agent.as_ref().unwrap().status))
        .collect();
    for agent in agents {
        assert_eq!(
            snap.get(&agent.agent_id),
            Some(&(pb::AgentStatus::Healthy as i32)),
            "snapshot after recovery shows {} HEALTHY (snapshot: {snap:?})",
            agent.agent_id
        );
    }

    tokio::time::sleep(keep).await;

    let transitions: Vec<(EventType, String)> = watch
        .events()
        .iter()
        .filter(|e| mine.contains(&id_of(e)))
        .filter(|e| matches!(kind(e), EventType::StatusChanged | EventType::Expired))
        .map(|e| (kind(e), id_of(e)))
        .collect();
    assert!(
        transitions.is_empty(),
        "no liveness transition after the outage, got {transitions:?}"
    );
    assert!(
        watch.ended().is_none(),
        "watch stays open: {:?}",
        watch.ended()
    );

    let listed: HashMap<String, i32> = list(client)
        .await
        .into_inner()
        .agents
        .into_iter()
        .map(|a| (a.agent_id, a.status))
        .collect();
    for agent in agents {
        assert_eq!(
            listed.get(&agent.agent_id),
            Some(&(pb::AgentStatus::Healthy as i32)),
            "ListAgents shows {} HEALTHY",
            agent.agent_id
        );
        let got = client
            .get_agent(get_request(&agent.agent_id))
            .await
            .unwrap_or_else(|s| panic!("GetAgent {}: {s:?}", agent.agent_id))
            .into_inner()
            .agent
            .unwrap();
        assert_eq!(
            got.status,
            pb::AgentStatus::Healthy as i32,
            "GetAgent {}",
            agent.agent_id
        );
    }
}

/// A token of the accepted shape (22..=256 url-safe characters).
fn token_like(seed: u64) -> String {
    format!("tok{seed:0>40}_-abcXYZ")
}

// -------------------------------------------------------------------- tests

/// SIGKILL Redis under load: writes fail fast with UNAVAILABLE, reads go on
/// stale and say so, streams end ABORTED, new streams are refused; Redis
/// restarted (empty) on the same port: everything recovers within 5 s, and
/// agents re-register under their ids with their tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_then_restarted_empty() {
    count_panics();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let mut redis = RedisProcess::start().await;
    let server = TestServer::replica(&redis, &[]).await;
    let mut client = server.client().await;
    // A second replica (the real binary) must recover by itself as well.
    let other = ReplicaProcess::start(&redis, &[]).await;
    let other_client = other.client().await;

    let mut initial = Vec::new();
    for i in 0..5 {
        initial.push(register(&mut client, register_request(&["crash", &format!("i{i}")])).await);
    }
    let (stream, _) = watch_synced(&mut client).await;
    let watch = Collector::spawn(stream);
    let subscription = client
        .subscribe_notifications(with_token(
            pb::SubscribeNotificationsRequest {
                agent_id: initial[4].agent_id.clone(),
                ..Default::default()
            },
            &initial[4].registration_token,
        ))
        .await
        .expect("subscribe before the outage")
        .into_inner();
    let subscription = drain(subscription);

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let load_task = tokio::spawn(load(
        client.clone(),
        initial.clone(),
        stop.clone(),
        log.clone(),
        1000,
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;

    redis.kill();
    let killed = Instant::now();

    // Every write fails fast with UNAVAILABLE.
    assert_unavailable(
        "Register",
        timed(client.register(register_request(&["after-kill"]))).await,
    );
    assert_unavailable(
        "Heartbeat",
        timed(client.heartbeat(heartbeat_request(&initial[0], Some(telemetry(0.1, 9))))).await,
    );
    assert_unavailable(
        "Deregister",
        timed(client.deregister(pb::DeregisterRequest {
            agent_id: initial[1].agent_id.clone(),
            registration_token: initial[1].registration_token.clone(),
        }))
        .await,
    );
    assert_unavailable(
        "NotifyAgent",
        timed(client.notify_agent(pb::NotifyAgentRequest {
            agent_id: initial[2].agent_id.clone(),
            message: "lost".into(),
            ..Default::default()
        }))
        .await,
    );

    // Reads answer from the last view and say it is stale.
    wait_until(FAIL_FAST, "GetAgent carries x-registry-stale", || {
        let (mut client, id) = (client.clone(), initial[0].agent_id.clone());
        async move { matches!(client.get_agent(get_request(&id)).await, Ok(r) if is_stale(&r)) }
    })
    .await;
    let acked_before_kill: BTreeSet<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|o| o.registered.as_ref().map(|r| r.agent_id.clone()))
        .chain(initial.iter().map(|r| r.agent_id.clone()))
        .collect();
    let listed = list(&mut client).await;
    assert!(is_stale(&listed), "ListAgents carries x-registry-stale");
    let listed = ids(&listed.into_inner().agents);
    let missing: Vec<_> = acked_before_kill.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "the stale view keeps every acknowledged agent; missing {missing:?}"
    );
    for agent in &initial {
        let got = client
            .get_agent(get_request(&agent.agent_id))
            .await
            .unwrap_or_else(|s| panic!("stale GetAgent {}: {s:?}", agent.agent_id));
        assert!(is_stale(&got));
        // The failed heartbeat changed nothing.
        let info = got.into_inner().agent.unwrap();
        assert_eq!(info.status, pb::AgentStatus::Healthy as i32);
    }
    let discovered = client
        .discover_agents(pb::DiscoverRequest {
            capabilities: vec!["crash".into()],
            max_results: 100,
            ..Default::default()
        })
        .await
        .expect("stale DiscoverAgents answers");
    assert!(
        is_stale(&discovered),
        "DiscoverAgents carries x-registry-stale"
    );
    assert_eq!(
        ids(&discovered.into_inner().agents),
        initial.iter().map(|a| a.agent_id.clone()).collect(),
        "DiscoverAgents answers with the last view"
    );

    // The open watch ends ABORTED; new streams are refused UNAVAILABLE.
    wait_until(FAIL_FAST, "the open watch ends", || {
        let ended = watch.ended().is_some();
        async move { ended }
    })
    .await;
    match watch.ended().unwrap() {
        Err(status) => assert_eq!(status.code(), Code::Aborted, "watch ended: {status:?}"),
        Ok(()) => panic!("watch ended without a status; expected ABORTED"),
    }
    let (_, ended) = tokio::time::timeout(FAIL_FAST, subscription)
        .await
        .expect("the open subscription ends within 2 s")
        .unwrap();
    assert_eq!(
        ended.as_ref().map(Status::code),
        Some(Code::Aborted),
        "the open notification stream ends ABORTED: {ended:?}"
    );
    let revision_before = watch
        .events()
        .iter()
        .map(|e| e.revision)
        .max()
        .expect("the watch saw the load");
    let opened = client
        .watch_agents(pb::WatchAgentsRequest {
            send_initial_snapshot: true,
            ..Default::default()
        })
        .await;
    if let Err(why) = stream_refused_unavailable(opened).await {
        panic!("a new WatchAgents during the outage: expected UNAVAILABLE, {why}");
    }
    let opened = client
        .subscribe_notifications(with_token(
            pb::SubscribeNotificationsRequest {
                agent_id: initial[3].agent_id.clone(),
                ..Default::default()
            },
            &initial[3].registration_token,
        ))
        .await;
    if let Err(why) = stream_refused_unavailable(opened).await {
        panic!("a new SubscribeNotifications during the outage: expected UNAVAILABLE, {why}");
    }

    // Let the load run on against the dead store a little, then look at it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    load_task.await.unwrap();
    let outcomes = log.lock().unwrap().clone();
    let after_kill: Vec<&Outcome> = outcomes.iter().filter(|o| o.started >= killed).collect();
    assert!(
        after_kill.len() >= 10,
        "the load kept writing during the outage ({} writes)",
        after_kill.len()
    );
    for o in &outcomes {
        assert!(o.code.is_some(), "a {} hung: {o:?}", o.op);
        assert!(
            matches!(o.code, Some(Code::Ok | Code::Unavailable)),
            "a {} answered {:?} (only OK or UNAVAILABLE are acceptable)",
            o.op,
            o.code
        );
        assert!(o.elapsed < FAIL_FAST, "a {} took {:?}", o.op, o.elapsed);
    }
    for o in &after_kill {
        assert_eq!(
            o.code,
            Some(Code::Unavailable),
            "{} after the kill: {o:?}",
            o.op
        );
    }

    // Redis comes back, empty, on the same port.
    redis.restart().await;
    let restarted = Instant::now();
    wait_until(RECOVERY, "writes succeed again", || {
        let mut client = client.clone();
        async move {
            client
                .register(register_request(&["after-restart"]))
                .await
                .is_ok()
        }
    })
    .await;
    let old: HashSet<String> = acked_before_kill.iter().cloned().collect();
    wait_until(
        RECOVERY.saturating_sub(restarted.elapsed()),
        "reads are fresh again (no stale marker, the old agents gone)",
        || {
            let (mut client, old) = (client.clone(), old.clone());
            async move {
                let Ok(response) = client.list_agents(pb::ListAgentsRequest::default()).await
                else {
                    return false;
                };
                !is_stale(&response)
                    && response
                        .into_inner()
                        .agents
                        .iter()
                        .all(|a| !old.contains(&a.agent_id))
            }
        },
    )
    .await;
    eprintln!("recovered {:?} after the restart", restarted.elapsed());
    let got = client
        .get_agent(get_request(&initial[4].agent_id))
        .await
        .expect_err("the old agent is gone with the data");
    assert_eq!(got.code(), Code::NotFound);

    // A new watch works again.
    let (_stream, snapshot) = watch_synced(&mut client).await;
    assert!(
        snapshot.iter().all(|e| !old.contains(&id_of(e))),
        "snapshot after the restart holds no lost agent"
    );

    // The data is gone: heartbeat NOT_FOUND, re-register under the same id.
    let lost = &initial[0];
    let status = client
        .heartbeat(heartbeat_request(lost, None))
        .await
        .expect_err("heartbeat of a lost agent fails");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let mut again = register_request(&["crash", "i0"]);
    again.agent_id = lost.agent_id.clone();
    again.registration_token = lost.registration_token.clone();
    let back = register(&mut client, again).await;
    assert_eq!(back.agent_id, lost.agent_id, "re-created under the same id");
    assert_eq!(
        back.registration_token, lost.registration_token,
        "the token the client sent is kept"
    );
    let beat = client
        .heartbeat(heartbeat_request(lost, None))
        .await
        .expect("heartbeat with the same token works")
        .into_inner();
    assert_eq!(beat.status, pb::AgentStatus::Healthy as i32);
    let mut wrong = heartbeat_request(lost, None);
    wrong.registration_token = token_like(7);
    let status = client.heartbeat(wrong).await.expect_err("a wrong token");
    assert_eq!(status.code(), Code::PermissionDenied);
    let info = client
        .get_agent(get_request(&lost.agent_id))
        .await
        .expect("the re-registered agent is readable")
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(
        info.capabilities,
        vec!["crash".to_string(), "i0".to_string()]
    );
    // Revisions keep increasing across the data loss (§4: a later change
    // has a larger revision than any earlier one).
    assert!(
        info.revision > revision_before,
        "a change after the data loss has revision {} <= {revision_before} seen before it",
        info.revision
    );

    // The other replica recovered without a restart too: fresh reads, and
    // changes made through the first replica reach it (its subscription to
    // the change feed is back).
    wait_until(
        RECOVERY
            .saturating_sub(restarted.elapsed())
            .max(Duration::from_secs(1)),
        "the other replica reads fresh and sees the re-registered agent",
        || {
            let (mut c, id) = (other_client.clone(), lost.agent_id.clone());
            async move { matches!(c.get_agent(get_request(&id)).await, Ok(r) if !is_stale(&r)) }
        },
    )
    .await;
    let mut oc = other_client.clone();
    let (stream, _) = watch_synced(&mut oc).await;
    let other_watch = Collector::spawn(stream);
    let late = register(&mut client, register_request(&["crash", "late"])).await;
    wait_until(
        Duration::from_millis(500),
        "a change via the first replica reaches the other's watcher",
        || {
            let seen = other_watch
                .events()
                .iter()
                .any(|e| id_of(e) == late.agent_id && kind(e) == EventType::Registered);
            async move { seen }
        },
    )
    .await;
    let back_on_other = register(&mut oc, register_request(&["crash", "via-other"])).await;
    wait_until(
        Duration::from_millis(500),
        "a write via the other replica is read on the first",
        || {
            let (mut c, id) = (client.clone(), back_on_other.agent_id.clone());
            async move { c.get_agent(get_request(&id)).await.is_ok() }
        },
    )
    .await;

    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        panics_before,
        "the server panicked (see the output)"
    );
    server.stop().await;
}

/// Which Redis stall is available: `DEBUG SLEEP` (often disabled) or
/// `CLIENT PAUSE`.
async fn stall_redis(redis: &RedisProcess, seconds: u64) -> &'static str {
    let mut conn = redis.connection().await;
    let debug: redis::RedisResult<redis::Value> = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(0)
        .query_async(&mut conn)
        .await;
    if debug.is_ok() {
        tokio::spawn(async move {
            let _: redis::RedisResult<redis::Value> = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(seconds)
                .query_async(&mut conn)
                .await;
        });
        "DEBUG SLEEP"
    } else {
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(seconds * 1000)
            .query_async(&mut conn)
            .await
            .expect("CLIENT PAUSE");
        "CLIENT PAUSE"
    }
}

/// One attempted write of the stall test.
#[derive(Clone, Debug)]
struct Attempt {
    tag: String,
    op: &'static str,
    elapsed: Duration,
    code: Option<Code>,
    registered: Option<pb::RegisterResponse>,
    /// For a deregister: whether it answered `success = true`.
    removed: bool,
}

/// A 2 s stall of Redis while writes go on leaves a consistent registry:
/// the replica's view, a fresh replica's view and Redis agree, every
/// acknowledged registration is there, every acknowledged deregistration
/// is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_second_stall_does_not_corrupt_state() {
    count_panics();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let redis = RedisProcess::start().await;
    let server = TestServer::replica(&redis, &[]).await;
    let client = server.client().await;

    let (stream, snapshot) = watch_synced(&mut client.clone()).await;
    assert!(snapshot.is_empty());
    let watch = Collector::spawn(stream);

    let log: Arc<Mutex<Vec<Attempt>>> = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for t in 0..3 {
        let (mut client, log) = (client.clone(), log.clone());
        writers.push(tokio::spawn(async move {
            let mut mine: Vec<(String, pb::RegisterResponse)> = Vec::new();
            for i in 0..50 {
                let tag = format!("att-{t}-{i}");
                let (elapsed, result) =
                    timed(client.register(register_request(&["stall", &tag]))).await;
                let code = code_of(&result);
                let registered = match result {
                    Some(Ok(r)) => Some(r.into_inner()),
                    _ => None,
                };
                if let Some(r) = &registered {
                    mine.push((tag.clone(), r.clone()));
                }
                log.lock().unwrap().push(Attempt {
                    tag: tag.clone(),
                    op: "register",
                    elapsed,
                    code,
                    registered,
                    removed: false,
                });
                if i % 3 == 2 && !mine.is_empty() {
                    let (tag, victim) = mine.remove(0);
                    let (elapsed, result) = timed(client.deregister(pb::DeregisterRequest {
                        agent_id: victim.agent_id.clone(),
                        registration_token: victim.registration_token.clone(),
                    }))
                    .await;
                    let removed = matches!(&result, Some(Ok(r)) if r.get_ref().success);
                    log.lock().unwrap().push(Attempt {
                        tag,
                        op: "deregister",
                        elapsed,
                        code: code_of(&result),
                        registered: Some(victim),
                        removed,
                    });
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let how = stall_redis(&redis, 2).await;
    eprintln!("stalled Redis with {how}");
    for writer in writers {
        writer.await.unwrap();
    }

    // Wait for recovery: a write succeeds and reads are fresh.
    let mut probe = client.clone();
    let mut probes = Vec::new();
    let deadline = Instant::now() + RECOVERY + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(r) = probe.register(register_request(&["stall", "probe"])).await {
            probes.push(r.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(probes.len(), 1, "writes succeed again after the stall");
    wait_until(RECOVERY, "reads are fresh again", || {
        let mut client = client.clone();
        async move { !is_stale(&list(&mut client).await) }
    })
    .await;

    let attempts = log.lock().unwrap().clone();
    let unavailable = attempts
        .iter()
        .filter(|a| a.code == Some(Code::Unavailable))
        .count();
    for a in &attempts {
        assert!(a.code.is_some(), "a {} hung: {a:?}", a.op);
        assert!(
            matches!(a.code, Some(Code::Ok | Code::Unavailable)),
            "a {} answered {:?}",
            a.op,
            a.code
        );
        assert!(a.elapsed < FAIL_FAST, "a {} took {:?}", a.op, a.elapsed);
    }
    assert!(
        unavailable > 0,
        "the stall made some writes fail (else it tested nothing)"
    );

    // What must and must not be there.
    let mut must: BTreeMap<String, String> = BTreeMap::new(); // id -> tag
    let mut maybe_tags: BTreeSet<String> = BTreeSet::new(); // outcome unknown
    let mut must_not: BTreeSet<String> = BTreeSet::new();
    for a in attempts.iter().filter(|a| a.op == "register") {
        match (&a.code, &a.registered) {
            (Some(Code::Ok), Some(r)) => {
                must.insert(r.agent_id.clone(), a.tag.clone());
            }
            _ => {
                maybe_tags.insert(a.tag.clone());
            }
        }
    }
    for a in attempts.iter().filter(|a| a.op == "deregister") {
        let id = &a.registered.as_ref().unwrap().agent_id;
        if a.removed {
            must.remove(id);
            must_not.insert(id.clone());
        } else if a.code != Some(Code::Ok) {
            // A deregister that timed out may have happened.
            must.remove(id);
            maybe_tags.insert(a.tag.clone());
        }
    }
    for p in &probes {
        must.insert(p.agent_id.clone(), "probe".into());
    }

    let mut c = client.clone();
    let listed = list(&mut c).await.into_inner().agents;
    let tag_of = |a: &pb::AgentInfo| {
        a.capabilities
            .iter()
            .find(|c| c.starts_with("att-") || *c == "probe")
            .cloned()
            .unwrap_or_default()
    };
    let mut tags_seen: HashMap<String, usize> = HashMap::new();
    let mut applied_despite_unavailable = Vec::new();
    for agent in &listed {
        let tag = tag_of(agent);
        *tags_seen.entry(tag.clone()).or_default() += 1;
        assert!(
            !must_not.contains(&agent.agent_id),
            "deregistered agent {} ({tag}) is listed",
            agent.agent_id
        );
        if !must.contains_key(&agent.agent_id) {
            assert!(
                maybe_tags.contains(&tag),
                "listed agent {} ({tag}) was never acknowledged nor attempted",
                agent.agent_id
            );
            applied_despite_unavailable.push(tag.clone());
        }
        assert_eq!(agent.capabilities, vec!["stall".to_string(), tag.clone()]);
    }
    for (tag, n) in &tags_seen {
        assert!(
            *n == 1 || tag == "probe",
            "one attempt created {n} agents ({tag})"
        );
    }
    let listed_ids = ids(&listed);
    let missing: Vec<_> = must
        .iter()
        .filter(|(id, _)| !listed_ids.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged registrations missing after the stall: {missing:?}"
    );
    eprintln!(
        "{} writes failed UNAVAILABLE; {} of them were applied anyway: {applied_despite_unavailable:?}",
        unavailable,
        applied_despite_unavailable.len()
    );

    // Every listed agent is gettable; deregistered ones are not.
    for agent in &listed {
        let got = c
            .get_agent(get_request(&agent.agent_id))
            .await
            .unwrap_or_else(|s| panic!("listed {} not gettable: {s:?}", agent.agent_id))
            .into_inner()
            .agent
            .unwrap();
        assert_eq!(&got, agent);
    }
    for id in &must_not {
        let status = c
            .get_agent(get_request(id))
            .await
            .expect_err("deregistered");
        assert_eq!(status.code(), Code::NotFound);
    }

    // The watch opened before the stall either ended ABORTED or carried
    // every change: replaying it gives the final population.
    let replay = |events: &[pb::AgentChangeEvent]| {
        let mut live = BTreeSet::new();
        for e in events {
            match kind(e) {
                EventType::Deregistered | EventType::Expired => {
                    live.remove(&id_of(e));
                }
                _ => {
                    live.insert(id_of(e));
                }
            }
        }
        live
    };
    for pair in watch.events().windows(2) {
        assert!(
            pair[1].revision > pair[0].revision,
            "revisions on the watch strictly increase: {} then {}",
            pair[0].revision,
            pair[1].revision
        );
    }
    match watch.ended() {
        Some(Err(status)) => assert_eq!(status.code(), Code::Aborted, "watch ended {status:?}"),
        Some(Ok(())) => panic!("the watch ended without a status"),
        None => {
            wait_until(
                Duration::from_secs(1),
                "the surviving watch replays to the final population (no silent gap)",
                || {
                    let same = replay(&watch.events()) == listed_ids;
                    async move { same }
                },
            )
            .await;
        }
    }
    eprintln!("watch across the stall ended with {:?}", watch.ended());

    // A fresh replica reading only Redis sees the same registry.
    let fresh = TestServer::replica(&redis, &[]).await;
    let mut fc = fresh.client().await;
    let fresh_listed = list(&mut fc).await.into_inner().agents;
    let by_id = |agents: &[pb::AgentInfo]| -> BTreeMap<String, (u64, i32)> {
        agents
            .iter()
            .map(|a| (a.agent_id.clone(), (a.revision, a.status)))
            .collect()
    };
    assert_eq!(
        by_id(&fresh_listed),
        by_id(&listed),
        "a fresh replica sees the same agents, revisions and statuses"
    );
    // And Redis agrees with both.
    let mut conn = redis.connection().await;
    let members: BTreeSet<String> = redis::cmd("SMEMBERS")
        .arg("{registry}:agents")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, listed_ids, "Redis' agent set equals the view");
    let records: Vec<String> = redis::cmd("KEYS")
        .arg("{registry}:agent:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        records.len(),
        listed_ids.len(),
        "one record per listed agent"
    );

    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        panics_before,
        "the server panicked"
    );
}

/// Agents heartbeating through a 10 s Redis outage (Redis restarted from
/// its saved data) neither turn UNHEALTHY nor expire: deadlines move back
/// by the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_does_not_expire_heartbeating_agents() {
    let mut redis = RedisProcess::start().await;
    let server = TestServer::replica(&redis, &[]).await;
    let mut client = server.client().await;

    let mut agents = Vec::new();
    for i in 0..10 {
        let r = register(
            &mut client,
            with_ttl(register_request(&["fenced", &format!("f{i}")]), 3),
        )
        .await;
        assert_eq!(r.ttl_seconds, 3);
        agents.push(r);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let beats = tokio::spawn(heartbeater(
        vec![client.clone()],
        agents.clone(),
        stop.clone(),
        ok.clone(),
        40,
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        ok.load(Ordering::SeqCst) >= 10,
        "heartbeats work before the outage"
    );

    let mut conn = redis.connection().await;
    let _: redis::Value = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    drop(conn);
    redis.kill();
    let before_outage = ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        ok.load(Ordering::SeqCst),
        before_outage,
        "no heartbeat can succeed while Redis is down"
    );
    redis.restart().await;

    let restarted = Instant::now();
    wait_until(RECOVERY, "a heartbeat succeeds again", || {
        let mut client = client.clone();
        let request = heartbeat_request(&agents[0], None);
        async move { client.heartbeat(request).await.is_ok() }
    })
    .await;
    let writable = restarted.elapsed();
    wait_until(
        RECOVERY.saturating_sub(restarted.elapsed()),
        "reads are fresh and watches open again",
        || {
            let mut client = client.clone();
            async move {
                let fresh = !is_stale(&list(&mut client).await);
                let watch = client
                    .watch_agents(pb::WatchAgentsRequest::default())
                    .await
                    .is_ok();
                fresh && watch
            }
        },
    )
    .await;
    eprintln!(
        "writes ok {writable:?}, reads/watches ok {:?} after the restart",
        restarted.elapsed()
    );
    assert_all_survived(&mut client, &agents, Duration::from_secs(4)).await;

    stop.store(true, Ordering::SeqCst);
    beats.await.unwrap();
}

/// Agents heartbeating while every registry replica is down for 10 s
/// (Redis keeps running) neither turn UNHEALTHY nor expire when the
/// replicas come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_every_replica_does_not_expire_heartbeating_agents() {
    let redis = RedisProcess::start().await;
    let mut r1 = ReplicaProcess::start(&redis, &[]).await;
    let mut r2 = ReplicaProcess::start(&redis, &[]).await;
    let clients = vec![r1.client().await, r2.client().await];

    let mut agents = Vec::new();
    for i in 0..10 {
        let r = register(
            &mut clients[i % 2].clone(),
            with_ttl(register_request(&["fenced", &format!("f{i}")]), 3),
        )
        .await;
        agents.push(r);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let beats = tokio::spawn(heartbeater(
        clients.clone(),
        agents.clone(),
        stop.clone(),
        ok.clone(),
        40,
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        ok.load(Ordering::SeqCst) >= 10,
        "heartbeats work before the outage"
    );

    r1.kill();
    r2.kill();
    let before_outage = ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        ok.load(Ordering::SeqCst),
        before_outage,
        "no heartbeat can succeed while no replica runs"
    );
    r1.start_again().await;
    let mut client = r1.client().await;
    // Open the watcher right after the restart, before the other replica.
    let mine: HashSet<String> = agents.iter().map(|a| a.agent_id.clone()).collect();
    let (stream, snapshot) = watch_synced(&mut client).await;
    let early_watch = Collector::spawn(stream);
    let unhealthy: Vec<String> = snapshot
        .iter()
        .filter(|e| e.agent.as_ref().unwrap().status != pb::AgentStatus::Healthy as i32)
        .map(id_of)
        .collect();
    assert!(
        unhealthy.is_empty(),
        "agents not HEALTHY right after the restart: {unhealthy:?}"
    );
    assert_eq!(
        snapshot.iter().map(id_of).collect::<HashSet<_>>(),
        mine,
        "every agent survived the replicas' absence"
    );
    r2.start_again().await;

    assert_all_survived(&mut client, &agents, Duration::from_secs(4)).await;
    let transitions: Vec<(EventType, String)> = early_watch
        .events()
        .iter()
        .filter(|e| matches!(kind(e), EventType::StatusChanged | EventType::Expired))
        .map(|e| (kind(e), id_of(e)))
        .collect();
    assert!(
        transitions.is_empty(),
        "the watcher opened right after the restart saw {transitions:?}"
    );
    stop.store(true, Ordering::SeqCst);
    beats.await.unwrap();
}

/// A registry started while Redis is down starts (in-process and as the
/// real binary), refuses writes with UNAVAILABLE, and is fully usable
/// within 5 s of Redis coming up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_started_while_redis_is_down_recovers_by_itself() {
    count_panics();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let mut redis = RedisProcess::start().await;
    let url = redis.url();
    redis.kill();

    // In-process, exactly as the fixture starts one, without waiting ready.
    let args = [
        "agent-registry",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--removal-grace",
        "1",
        "--min-ttl",
        "1",
        "--store",
        "redis",
        "--redis-url",
        &url,
    ];
    let settings = Config::try_parse_from(args).unwrap().settings().unwrap();
    let running = tokio::time::timeout(Duration::from_secs(10), server::start(settings))
        .await
        .expect("start-up does not hang while Redis is down")
        .expect("the registry starts while Redis is down");
    let endpoint = format!("http://{}", running.grpc_addr());
    let mut client = ServiceRegistryClient::connect(endpoint.clone())
        .await
        .unwrap();

    // The real binary too: it must keep running (no exit, no crash loop).
    let mut child = ReplicaProcess::spawn(&redis, &[]);
    let child_endpoint = child.endpoint();

    assert_unavailable(
        "Register while Redis is down",
        timed(client.register(register_request(&["early"]))).await,
    );
    let opened = client
        .watch_agents(pb::WatchAgentsRequest {
            send_initial_snapshot: true,
            ..Default::default()
        })
        .await;
    if let Err(why) = stream_refused_unavailable(opened).await {
        panic!("WatchAgents while Redis is down: expected UNAVAILABLE, {why}");
    }
    // Reads: either UNAVAILABLE, or an answer marked stale.
    match client.list_agents(pb::ListAgentsRequest::default()).await {
        Ok(response) => assert!(
            is_stale(&response),
            "a read before the store was ever reached must be marked stale"
        ),
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
    }

    // The child is up and refusing writes too.
    let mut child_client = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while child_client.is_none() && Instant::now() < deadline {
        match ServiceRegistryClient::connect(child_endpoint.clone()).await {
            Ok(c) => child_client = Some(c),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut child_client = child_client.expect("the binary listens within 5 s");
    assert_unavailable(
        "Register on the binary while Redis is down",
        timed(child_client.register(register_request(&["early"]))).await,
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.is_running(),
        "the binary must keep running while Redis is down"
    );

    redis.restart().await;
    let restarted = Instant::now();
    for (name, c) in [("in-process", &client), ("binary", &child_client)] {
        wait_until(
            RECOVERY.saturating_sub(restarted.elapsed()),
            &format!("{name}: writes succeed, streams open, reads are fresh"),
            || {
                let mut c = c.clone();
                async move {
                    let Ok(r) = c.register(register_request(&["late", name])).await else {
                        return false;
                    };
                    let id = r.into_inner().agent_id;
                    let fresh =
                        matches!(c.get_agent(get_request(&id)).await, Ok(g) if !is_stale(&g));
                    let watch = c
                        .watch_agents(pb::WatchAgentsRequest {
                            send_initial_snapshot: true,
                            ..Default::default()
                        })
                        .await;
                    fresh && watch.is_ok()
                }
            },
        )
        .await;
    }
    eprintln!("both usable {:?} after Redis came up", restarted.elapsed());

    // Fully usable: every call, across both registries.
    let (stream, _) = watch_synced(&mut child_client).await;
    let watch = Collector::spawn(stream);
    let agent = register(&mut client, register_request(&["full", "use"])).await;
    client
        .heartbeat(heartbeat_request(&agent, Some(telemetry(0.2, 10))))
        .await
        .expect("heartbeat");
    wait_until(Duration::from_secs(1), "the binary discovers it", || {
        let mut c = child_client.clone();
        let id = agent.agent_id.clone();
        async move {
            let Ok(found) = c
                .discover_agents(pb::DiscoverRequest {
                    capabilities: vec!["full".into()],
                    filters: [("status".to_string(), "unhealthy".to_string())].into(),
                    ..Default::default()
                })
                .await
            else {
                return false;
            };
            !is_stale(&found) && ids(&found.into_inner().agents) == BTreeSet::from([id])
        }
    })
    .await;
    let notified = child_client
        .notify_agent(pb::NotifyAgentRequest {
            agent_id: agent.agent_id.clone(),
            message: "hello".into(),
            ..Default::default()
        })
        .await
        .expect("notify")
        .into_inner();
    assert_eq!(notified.notification_id, "1");
    assert!(
        client
            .deregister(pb::DeregisterRequest {
                agent_id: agent.agent_id.clone(),
                registration_token: agent.registration_token.clone(),
            })
            .await
            .expect("deregister")
            .into_inner()
            .success
    );
    wait_until(
        Duration::from_secs(1),
        "the binary's watcher saw it all",
        || {
            let kinds: Vec<EventType> = watch
                .events()
                .iter()
                .filter(|e| id_of(e) == agent.agent_id)
                .map(kind)
                .collect();
            async move {
                kinds
                    == vec![
                        EventType::Registered,
                        EventType::Updated,
                        EventType::StatusChanged,
                        EventType::Deregistered,
                    ]
            }
        },
    )
    .await;
    assert!(child.is_running(), "the binary still runs");
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        panics_before,
        "the server panicked"
    );
    running.shutdown().await;
}

/// Redis restarted from an older snapshot (its `SAVE` predates the last
/// changes) must not make revisions go back: a change after the restart has
/// a larger revision than every change watchers saw before it (§4), and the
/// registry shows what the store now holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_keep_increasing_when_redis_restarts_from_an_older_snapshot() {
    let mut redis = RedisProcess::start().await;
    let server = TestServer::replica(&redis, &[]).await;
    let mut client = server.client().await;
    let (stream, _) = watch_synced(&mut client).await;
    let watch = Collector::spawn(stream);

    let kept = register(&mut client, register_request(&["rollback", "kept"])).await;
    let mut conn = redis.connection().await;
    let _: redis::Value = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    drop(conn);
    // Changes after the SAVE: Redis will lose them.
    let mut lost = Vec::new();
    for i in 0..3 {
        let r = register(
            &mut client,
            register_request(&["rollback", &format!("lost{i}")]),
        )
        .await;
        client
            .heartbeat(heartbeat_request(&r, Some(telemetry(0.9, 5))))
            .await
            .expect("heartbeat");
        lost.push(r);
    }
    wait_until(
        Duration::from_secs(1),
        "the watcher saw every change",
        || {
            let n = watch.events().len();
            async move { n >= 7 }
        },
    )
    .await;
    let seen_before = watch.events().iter().map(|e| e.revision).max().unwrap();

    redis.kill();
    redis.restart().await; // loads the dump taken before the lost changes
    let restarted = Instant::now();
    wait_until(RECOVERY, "writes succeed again", || {
        let mut client = client.clone();
        let request = heartbeat_request(&kept, None);
        async move { client.heartbeat(request).await.is_ok() }
    })
    .await;
    let after = register(&mut client, register_request(&["rollback", "after"])).await;
    wait_until(
        RECOVERY.saturating_sub(restarted.elapsed()),
        "reads are fresh again",
        || {
            let mut client = client.clone();
            async move { !is_stale(&list(&mut client).await) }
        },
    )
    .await;

    // The registry shows what the store holds now.
    let listed = ids(&list(&mut client).await.into_inner().agents);
    assert_eq!(
        listed,
        BTreeSet::from([kept.agent_id.clone(), after.agent_id.clone()]),
        "after the rollback the registry holds what Redis holds"
    );
    let info = client
        .get_agent(get_request(&after.agent_id))
        .await
        .expect("the agent registered after the restart")
        .into_inner()
        .agent
        .unwrap();
    assert!(
        info.revision > seen_before,
        "a change after Redis restarted from an older snapshot got revision {} although \
         watchers had already seen revision {seen_before}: revisions went back",
        info.revision
    );
    // A watcher opened now sees a SYNCED revision above everything before.
    let request = pb::WatchAgentsRequest {
        send_initial_snapshot: true,
        ..Default::default()
    };
    let mut stream = client.watch_agents(request).await.unwrap().into_inner();
    let mut synced = None;
    for _ in 0..100 {
        let event = tokio::time::timeout(HANG, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if kind(&event) == EventType::Synced {
            synced = Some(event.revision);
            break;
        }
    }
    let synced = synced.expect("SYNCED");
    assert!(
        synced > seen_before,
        "SYNCED revision {synced} after the rollback is not above {seen_before} seen before"
    );
}

/// Read-your-writes holds from the first write the registry acknowledges
/// after Redis comes back (§5: "the replica that took the write at once"),
/// even while the replica is still reloading its view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_writes_after_recovery_are_readable_at_once() {
    let mut redis = RedisProcess::start().await;
    let server = TestServer::replica(&redis, &[]).await;
    let mut client = server.client().await;
    register(&mut client, register_request(&["before"])).await;

    redis.kill();
    assert_unavailable(
        "Register while Redis is down",
        timed(client.register(register_request(&["down"]))).await,
    );
    redis.restart().await;
    let restarted = Instant::now();

    let mut acknowledged = Vec::new();
    let mut violations = Vec::new();
    while restarted.elapsed() < RECOVERY && acknowledged.len() < 20 {
        let Ok(r) = client.register(register_request(&["after"])).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let r = r.into_inner();
        let at = restarted.elapsed();
        match client.get_agent(get_request(&r.agent_id)).await {
            Ok(_) => {}
            Err(status) => violations.push((at, status.code(), status.message().to_string())),
        }
        acknowledged.push(r);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!acknowledged.is_empty(), "writes succeed after the restart");
    assert!(
        violations.is_empty(),
        "{} of {} writes acknowledged after Redis came back were not readable at once on \
         the replica that took them (ms after restart, code, message): {violations:?}",
        violations.len(),
        acknowledged.len()
    );
}
