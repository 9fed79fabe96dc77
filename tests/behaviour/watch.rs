//! WatchAgents (BEHAVIOUR.md §4): change events with full agents and strictly
//! increasing revisions, silence on no-op heartbeats, filters, agents leaving
//! a selection, the initial snapshot (SNAPSHOT… SYNCED, then live changes,
//! nothing missed and nothing twice under concurrent registration), and
//! cancellation.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use agent_registry::pb::{
    self, agent_change_event::EventType, service_registry_client::ServiceRegistryClient,
};
use tonic::transport::Channel;

use crate::common::*;
use crate::support::*;

type Client = ServiceRegistryClient<Channel>;

fn id_of(event: &pb::AgentChangeEvent) -> String {
    agent_of(event).agent_id.clone()
}

fn watch_request(
    agent_type: pb::AgentType,
    capabilities: &[&str],
    namespace: &str,
    send_initial_snapshot: bool,
) -> pb::WatchAgentsRequest {
    pb::WatchAgentsRequest {
        agent_type: agent_type as i32,
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        namespace: namespace.to_string(),
        send_initial_snapshot,
        ..pb::WatchAgentsRequest::default()
    }
}

fn watch_all(send_initial_snapshot: bool) -> pb::WatchAgentsRequest {
    watch_request(pb::AgentType::Unspecified, &[], "", send_initial_snapshot)
}

async fn watch(client: &mut Client, request: pb::WatchAgentsRequest) -> Events {
    client
        .watch_agents(request)
        .await
        .expect("watch_agents succeeds")
        .into_inner()
}

/// Opens a snapshot watch and reads up to its SYNCED: returns the stream,
/// the SNAPSHOT events and the SYNCED revision. After this the server is
/// known to deliver every later change to the stream.
async fn watch_synced(
    client: &mut Client,
    mut request: pb::WatchAgentsRequest,
) -> (Events, Vec<pb::AgentChangeEvent>, u64) {
    request.send_initial_snapshot = true;
    let mut stream = watch(client, request).await;
    let mut snapshot = Vec::new();
    for _ in 0..10_000 {
        let event = next_event(&mut stream).await;
        match kind(&event) {
            EventType::Snapshot => snapshot.push(event),
            EventType::Synced => {
                assert!(
                    event.agent.as_ref().is_none_or(|a| a.agent_id.is_empty()),
                    "SYNCED carries an empty agent: {event:?}"
                );
                return (stream, snapshot, event.revision);
            }
            other => panic!("{other:?} before SYNCED: {event:?}"),
        }
    }
    panic!("no SYNCED after 10000 snapshot events");
}

async fn register(client: &mut Client, request: pb::RegisterRequest) -> pb::RegisterResponse {
    client
        .register(request)
        .await
        .expect("register succeeds")
        .into_inner()
}

async fn heartbeat(
    client: &mut Client,
    registered: &pb::RegisterResponse,
    telemetry: Option<pb::AgentTelemetry>,
) -> pb::HeartbeatResponse {
    client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: registered.agent_id.clone(),
            telemetry,
            registration_token: registered.registration_token.clone(),
        })
        .await
        .expect("heartbeat succeeds")
        .into_inner()
}

async fn deregister(client: &mut Client, registered: &pb::RegisterResponse) {
    let ok = client
        .deregister(pb::DeregisterRequest {
            agent_id: registered.agent_id.clone(),
            registration_token: registered.registration_token.clone(),
        })
        .await
        .expect("deregister succeeds")
        .into_inner()
        .success;
    assert!(ok, "deregistering a registered agent answers success");
}

async fn list_ids(client: &mut Client) -> HashSet<String> {
    client
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .expect("list_agents succeeds")
        .into_inner()
        .agents
        .into_iter()
        .map(|a| a.agent_id)
        .collect()
}

/// Checks the per-event invariants of a change event and that its revision
/// is above `last`; returns the new last revision.
fn check_change(event: &pb::AgentChangeEvent, last: u64) -> u64 {
    let agent = agent_of(event);
    assert_eq!(
        event.revision, agent.revision,
        "event revision is the agent's revision: {event:?}"
    );
    assert!(
        event.revision > last,
        "revisions strictly increase: {} after {last} ({event:?})",
        event.revision
    );
    assert!(event.timestamp > 0, "event has a timestamp: {event:?}");
    event.revision
}

// -------------------------------------------------------------------- tests

pub async fn watch_reports_each_change_with_the_full_agent_and_increasing_revisions(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut stream = watch(&mut client, watch_all(false)).await;

    let before = unix_now();
    let mut request = register_request(&["w1", "w2"]);
    request.agent_type = pb::AgentType::Scout as i32;
    request.namespace = "ns-w".into();
    request.endpoint = "127.0.0.1:7000".into();
    request.metadata = [("zone".to_string(), "eu".to_string())]
        .into_iter()
        .collect();
    let a = register(&mut client, request).await;

    let registered = next_event(&mut stream).await;
    assert_eq!(kind(&registered), EventType::Registered);
    let agent = agent_of(&registered);
    assert_eq!(agent.agent_id, a.agent_id);
    assert_eq!(agent.agent_type, pb::AgentType::Scout as i32);
    assert_eq!(agent.capabilities, vec!["w1".to_string(), "w2".to_string()]);
    assert_eq!(agent.namespace, "ns-w");
    assert_eq!(agent.endpoint, "127.0.0.1:7000");
    assert_eq!(agent.metadata.get("zone").map(String::as_str), Some("eu"));
    assert_eq!(agent.status, pb::AgentStatus::Healthy as i32);
    assert_eq!(agent.registered_at, a.registered_at);
    assert!(
        registered.timestamp >= before && registered.timestamp <= unix_now() + 1,
        "timestamp is now: {}",
        registered.timestamp
    );
    let mut last = check_change(&registered, 0);

    let good = telemetry(0.9, 10, 10);
    let response = heartbeat(&mut client, &a, Some(good)).await;
    assert_eq!(response.status, pb::AgentStatus::Healthy as i32);
    let updated = next_event(&mut stream).await;
    assert_eq!(kind(&updated), EventType::Updated, "{updated:?}");
    assert_eq!(id_of(&updated), a.agent_id);
    assert_eq!(agent_of(&updated).telemetry, Some(good));
    last = check_change(&updated, last);

    let bad = telemetry(0.2, 10, 20);
    let response = heartbeat(&mut client, &a, Some(bad)).await;
    assert_eq!(response.status, pb::AgentStatus::Unhealthy as i32);
    let updated = next_event(&mut stream).await;
    assert_eq!(kind(&updated), EventType::Updated, "{updated:?}");
    assert_eq!(agent_of(&updated).telemetry, Some(bad));
    last = check_change(&updated, last);
    let changed = next_event(&mut stream).await;
    assert_eq!(kind(&changed), EventType::StatusChanged, "{changed:?}");
    assert_eq!(id_of(&changed), a.agent_id);
    assert_eq!(changed.previous_status, pb::AgentStatus::Healthy as i32);
    assert_eq!(agent_of(&changed).status, pb::AgentStatus::Unhealthy as i32);
    last = check_change(&changed, last);
    let stored = client
        .get_agent(pb::GetAgentRequest {
            agent_id: a.agent_id.clone(),
        })
        .await
        .expect("get_agent")
        .into_inner()
        .agent
        .expect("agent");
    assert_eq!(
        stored.revision, last,
        "GetAgent shows the last change's revision"
    );

    deregister(&mut client, &a).await;
    let gone = next_event(&mut stream).await;
    assert_eq!(kind(&gone), EventType::Deregistered, "{gone:?}");
    let agent = agent_of(&gone);
    assert_eq!(agent.agent_id, a.agent_id);
    assert_eq!(
        agent.namespace, "ns-w",
        "DEREGISTERED carries the last state"
    );
    assert_eq!(agent.capabilities, vec!["w1".to_string(), "w2".to_string()]);
    assert_eq!(agent.telemetry, Some(bad));
    assert_eq!(agent.status, pb::AgentStatus::Unhealthy as i32);
    check_change(&gone, last);
}

pub async fn a_heartbeat_that_changes_nothing_emits_no_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let (mut stream, snapshot, _) = watch_synced(&mut client, watch_all(true)).await;
    assert!(snapshot.is_empty());

    let t = telemetry(0.9, 10, 10);
    let mut request = register_request(&["quiet"]);
    request.telemetry = Some(t);
    let a = register(&mut client, request).await;
    let b = register(&mut client, register_request(&["quiet"])).await;
    for expected in [&a, &b] {
        let event = next_event(&mut stream).await;
        assert_eq!(kind(&event), EventType::Registered);
        assert_eq!(id_of(&event), expected.agent_id);
    }

    // Keep-alives: no telemetry, or the very same telemetry.
    heartbeat(&mut client, &a, None).await;
    heartbeat(&mut client, &a, Some(t)).await;
    heartbeat(&mut client, &b, None).await;
    heartbeat(&mut client, &a, None).await;
    // A distinguishable change afterwards: it must be the next event.
    heartbeat(&mut client, &b, Some(telemetry(0.8, 7, 5))).await;
    let event = next_event(&mut stream).await;
    assert_eq!(
        (kind(&event), id_of(&event)),
        (EventType::Updated, b.agent_id.clone()),
        "keep-alive heartbeats emitted an event: {event:?}"
    );
}

pub async fn a_heartbeat_changing_telemetry_and_status_emits_updated_then_status_changed(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let (mut stream, _, synced) = watch_synced(&mut client, watch_all(true)).await;

    let mut request = register_request(&["both"]);
    request.telemetry = Some(telemetry(0.9, 10, 10));
    let a = register(&mut client, request).await;
    let event = next_event(&mut stream).await;
    assert_eq!(kind(&event), EventType::Registered);
    let mut last = check_change(&event, synced);

    for (t, previous, now) in [
        (
            telemetry(0.4, 10, 20),
            pb::AgentStatus::Healthy,
            pb::AgentStatus::Degraded,
        ),
        (
            telemetry(0.95, 10, 40),
            pb::AgentStatus::Degraded,
            pb::AgentStatus::Healthy,
        ),
    ] {
        let response = heartbeat(&mut client, &a, Some(t)).await;
        assert_eq!(response.status, now as i32);
        let updated = next_event(&mut stream).await;
        assert_eq!(kind(&updated), EventType::Updated, "{updated:?}");
        assert_eq!(agent_of(&updated).telemetry, Some(t));
        last = check_change(&updated, last);
        let changed = next_event(&mut stream).await;
        assert_eq!(kind(&changed), EventType::StatusChanged, "{changed:?}");
        assert_eq!(changed.previous_status, previous as i32);
        assert_eq!(agent_of(&changed).status, now as i32);
        assert_eq!(id_of(&changed), a.agent_id);
        last = check_change(&changed, last);
    }
}

pub async fn watch_filters_by_agent_type_capabilities_and_namespace(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let (mut by_type, _, _) = watch_synced(
        &mut client,
        watch_request(pb::AgentType::Scout, &[], "", true),
    )
    .await;
    let (mut by_caps, _, _) = watch_synced(
        &mut client,
        watch_request(pb::AgentType::Unspecified, &["a", "b"], "", true),
    )
    .await;
    let (mut by_namespace, _, _) = watch_synced(
        &mut client,
        watch_request(pb::AgentType::Unspecified, &[], "ns1", true),
    )
    .await;
    let (mut combined, _, _) = watch_synced(
        &mut client,
        watch_request(pb::AgentType::Scout, &["a"], "ns1", true),
    )
    .await;

    let reg = |agent_type: pb::AgentType, caps: &[&str], namespace: &str| {
        let mut request = register_request(caps);
        request.agent_type = agent_type as i32;
        request.namespace = namespace.to_string();
        request
    };
    let w_a = register(&mut client, reg(pb::AgentType::Worker, &["a"], "")).await;
    let s_a = register(&mut client, reg(pb::AgentType::Scout, &["a"], "")).await;
    let w_abc = register(
        &mut client,
        reg(pb::AgentType::Worker, &["a", "b", "c"], ""),
    )
    .await;
    let w_a_ns1 = register(&mut client, reg(pb::AgentType::Worker, &["a"], "ns1")).await;
    let s_b_ns1 = register(&mut client, reg(pb::AgentType::Scout, &["b"], "ns1")).await;
    let marker = register(&mut client, reg(pb::AgentType::Scout, &["b", "a"], "ns1")).await;
    // Removals: w_a matches no watcher; s_a matches the type watcher only.
    deregister(&mut client, &w_a).await;
    deregister(&mut client, &s_a).await;
    let marker2 = register(&mut client, reg(pb::AgentType::Scout, &["a", "b"], "ns1")).await;

    let r = |x: &pb::RegisterResponse| (EventType::Registered, x.agent_id.clone());
    let d = |x: &pb::RegisterResponse| (EventType::Deregistered, x.agent_id.clone());
    let cases = [
        (
            "agent_type SCOUT",
            &mut by_type,
            vec![r(&s_a), r(&s_b_ns1), r(&marker), d(&s_a), r(&marker2)],
        ),
        (
            "capabilities [a, b]",
            &mut by_caps,
            vec![r(&w_abc), r(&marker), r(&marker2)],
        ),
        (
            "namespace ns1",
            &mut by_namespace,
            vec![r(&w_a_ns1), r(&s_b_ns1), r(&marker), r(&marker2)],
        ),
        (
            "SCOUT with [a] in ns1",
            &mut combined,
            vec![r(&marker), r(&marker2)],
        ),
    ];
    for (name, stream, expected) in cases {
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            let event = next_event(stream).await;
            got.push((kind(&event), id_of(&event)));
        }
        assert_eq!(got, expected, "events of the watcher filtered by {name}");
    }
}

pub async fn an_agent_re_registered_into_another_namespace_is_reported_to_both_namespaces(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let (mut old, _, _) = watch_synced(
        &mut client,
        watch_request(pb::AgentType::Unspecified, &[], "old", true),
    )
    .await;
    let (mut new, _, _) = watch_synced(
        &mut client,
        watch_request(pb::AgentType::Unspecified, &[], "new", true),
    )
    .await;

    let mut request = register_request(&["moving"]);
    request.namespace = "old".into();
    let a = register(&mut client, request.clone()).await;
    let event = next_event(&mut old).await;
    assert_eq!(
        (kind(&event), id_of(&event)),
        (EventType::Registered, a.agent_id.clone())
    );

    request.namespace = "new".into();
    request.agent_id = a.agent_id.clone();
    request.registration_token = a.registration_token.clone();
    let again = register(&mut client, request).await;
    assert_eq!(again.agent_id, a.agent_id, "re-register keeps the id");

    for (name, stream) in [("old", &mut old), ("new", &mut new)] {
        let event = next_event(stream).await;
        assert_eq!(
            (kind(&event), id_of(&event)),
            (EventType::Updated, a.agent_id.clone()),
            "watcher of namespace {name} learns of the move"
        );
        assert_eq!(agent_of(&event).namespace, "new");
    }

    // Now it belongs to "new" only.
    heartbeat(&mut client, &a, Some(telemetry(0.9, 3, 3))).await;
    let event = next_event(&mut new).await;
    assert_eq!(
        (kind(&event), id_of(&event)),
        (EventType::Updated, a.agent_id.clone())
    );
    let mut request = register_request(&["marker"]);
    request.namespace = "old".into();
    let marker = register(&mut client, request).await;
    let event = next_event(&mut old).await;
    assert_eq!(
        (kind(&event), id_of(&event)),
        (EventType::Registered, marker.agent_id.clone()),
        "the old namespace's watcher no longer sees the moved agent"
    );
}

pub async fn a_snapshot_watch_sends_every_matching_agent_then_synced_then_live_changes(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let mut inside = HashMap::new();
    for i in 0..5 {
        let mut request = register_request(&["snap"]);
        request.namespace = "snap".into();
        let r = register(&mut client, request).await;
        if i == 2 {
            heartbeat(&mut client, &r, Some(telemetry(0.9, 1, 1))).await;
        }
        inside.insert(r.agent_id.clone(), r);
    }
    for _ in 0..2 {
        let mut request = register_request(&["snap"]);
        request.namespace = "elsewhere".into();
        register(&mut client, request).await;
    }

    let mut stream = watch(
        &mut client,
        watch_request(pb::AgentType::Unspecified, &[], "snap", true),
    )
    .await;
    let mut snapshot_ids = HashSet::new();
    let mut max_snapshot_revision = 0;
    for _ in 0..5 {
        let event = next_event(&mut stream).await;
        assert_eq!(kind(&event), EventType::Snapshot, "{event:?}");
        let agent = agent_of(&event);
        assert_eq!(agent.namespace, "snap");
        assert_eq!(
            event.revision, agent.revision,
            "a SNAPSHOT carries the agent's last revision"
        );
        let stored = client
            .get_agent(pb::GetAgentRequest {
                agent_id: agent.agent_id.clone(),
            })
            .await
            .expect("get_agent")
            .into_inner()
            .agent
            .expect("agent");
        assert_eq!(
            stored.revision, agent.revision,
            "SNAPSHOT revision is current"
        );
        assert!(
            snapshot_ids.insert(agent.agent_id.clone()),
            "agent twice in snapshot"
        );
        max_snapshot_revision = max_snapshot_revision.max(event.revision);
    }
    assert_eq!(snapshot_ids, inside.keys().cloned().collect::<HashSet<_>>());

    let synced = next_event(&mut stream).await;
    assert_eq!(kind(&synced), EventType::Synced, "{synced:?}");
    assert!(
        synced.agent.as_ref().is_none_or(|a| a.agent_id.is_empty()),
        "SYNCED has an empty agent"
    );
    assert!(synced.revision >= max_snapshot_revision);

    let mut request = register_request(&["snap"]);
    request.namespace = "snap".into();
    let fresh = register(&mut client, request).await;
    let event = next_event(&mut stream).await;
    assert_eq!(
        (kind(&event), id_of(&event)),
        (EventType::Registered, fresh.agent_id.clone())
    );
    let last = check_change(&event, synced.revision);
    let old = inside.values().next().expect("five agents");
    heartbeat(&mut client, old, Some(telemetry(0.7, 9, 9))).await;
    let event = next_event(&mut stream).await;
    assert_eq!(
        (kind(&event), id_of(&event)),
        (EventType::Updated, old.agent_id.clone())
    );
    check_change(&event, last);
}

/// What one watcher of the convergence test has built from its stream.
#[derive(Default)]
struct View {
    synced: bool,
    agents: HashSet<String>,
    errors: Vec<String>,
    ended: bool,
    snapshots: usize,
    live_registered: usize,
}

/// One watcher of the convergence test: connects, waits until `progress`
/// (registrations done so far) reaches `start_at`, then watches with a
/// snapshot and applies every event to `view`.
async fn run_view(
    endpoint: String,
    view: Arc<Mutex<View>>,
    mut progress: tokio::sync::watch::Receiver<usize>,
    start_at: usize,
) {
    let fail = |message: String| {
        let mut v = view.lock().expect("view lock");
        v.errors.push(message);
        v.ended = true;
    };
    let mut client = match ServiceRegistryClient::connect(endpoint).await {
        Ok(client) => client,
        Err(e) => return fail(format!("connect: {e}")),
    };
    match tokio::time::timeout(
        Duration::from_secs(10),
        progress.wait_for(|n| *n >= start_at),
    )
    .await
    {
        Ok(Ok(_)) => {}
        other => return fail(format!("registrations did not reach {start_at}: {other:?}")),
    }
    let mut stream = match client.watch_agents(watch_all(true)).await {
        Ok(response) => response.into_inner(),
        Err(e) => return fail(format!("watch: {e:?}")),
    };
    let mut ever_seen = HashSet::new();
    let mut max_snapshot = 0;
    let mut last_change = 0;
    for _ in 0..20_000 {
        let event = match tokio::time::timeout(Duration::from_secs(60), stream.message()).await {
            Ok(Ok(Some(event))) => event,
            other => return fail(format!("stream ended or stalled: {other:?}")),
        };
        let mut v = view.lock().expect("view lock");
        let kind = EventType::try_from(event.event_type);
        let id = event
            .agent
            .as_ref()
            .map(|a| a.agent_id.clone())
            .unwrap_or_default();
        let agent_revision = event.agent.as_ref().map_or(0, |a| a.revision);
        match kind {
            Ok(EventType::Snapshot) => {
                if v.synced {
                    v.errors.push(format!("SNAPSHOT after SYNCED: {id}"));
                }
                if !ever_seen.insert(id.clone()) {
                    v.errors.push(format!("{id} twice in the snapshot"));
                }
                if event.revision != agent_revision {
                    v.errors
                        .push(format!("SNAPSHOT revision differs from agent's: {event:?}"));
                }
                max_snapshot = max_snapshot.max(event.revision);
                v.snapshots += 1;
                v.agents.insert(id);
            }
            Ok(EventType::Synced) => {
                if v.synced {
                    v.errors.push("second SYNCED".into());
                }
                if event.revision < max_snapshot {
                    v.errors.push(format!(
                        "SYNCED revision {} below a SNAPSHOT's {max_snapshot}",
                        event.revision
                    ));
                }
                last_change = event.revision;
                v.synced = true;
            }
            Ok(change) => {
                if !v.synced {
                    v.errors.push(format!("{change:?} before SYNCED: {id}"));
                }
                if event.revision <= last_change || event.revision != agent_revision {
                    v.errors.push(format!(
                        "bad revision {} after {last_change} (agent {agent_revision}) on {change:?}",
                        event.revision
                    ));
                }
                last_change = event.revision;
                match change {
                    EventType::Registered => {
                        if !ever_seen.insert(id.clone()) {
                            v.errors
                                .push(format!("{id} delivered twice (SNAPSHOT/REGISTERED)"));
                        }
                        v.live_registered += 1;
                        v.agents.insert(id);
                    }
                    EventType::Updated | EventType::StatusChanged => {
                        v.agents.insert(id);
                    }
                    EventType::Deregistered | EventType::Expired => {
                        v.agents.remove(&id);
                    }
                    other => v.errors.push(format!("unexpected event type {other:?}")),
                }
            }
            Err(_) => v
                .errors
                .push(format!("unknown event type {}", event.event_type)),
        }
    }
    fail("more than 20000 events".into());
}

pub async fn twenty_snapshot_watchers_converge_on_the_server_set_while_fifty_agents_register(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let mut early = Vec::new();
    for _ in 0..10 {
        early.push(register(&mut client, register_request(&["conv"])).await);
    }

    let views: Vec<Arc<Mutex<View>>> = (0..20).map(|_| Arc::default()).collect();
    let mut watchers = Vec::new();
    let mut writers = Vec::new();
    // `count` registrations one after the other, on a connection of its own.
    let (progress, _) = tokio::sync::watch::channel(0usize);
    let progress = Arc::new(progress);
    // `count` registrations one after the other, on a connection of its own.
    let spawn_registers = |writers: &mut Vec<_>, count: usize| {
        let endpoint = server.endpoint();
        let progress = progress.clone();
        writers.push(tokio::spawn(async move {
            let mut c = ServiceRegistryClient::connect(endpoint)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            for _ in 0..count {
                c.register(register_request(&["conv"])).await?;
                progress.send_modify(|n| *n += 1);
            }
            Ok::<(), tonic::Status>(())
        }));
    };
    // 40 registrations run in 4 sequential streams while the watchers open,
    // watcher i once 2 * i of them are done, so snapshots are taken all
    // along the registrations; 5 early agents are deregistered meanwhile.
    for (i, view) in views.iter().enumerate() {
        watchers.push(tokio::spawn(run_view(
            server.endpoint(),
            view.clone(),
            progress.subscribe(),
            2 * i,
        )));
    }
    for _ in 0..4 {
        spawn_registers(&mut writers, 10);
    }
    for gone in early.drain(..5) {
        let mut c = client.clone();
        writers.push(tokio::spawn(async move {
            c.deregister(pb::DeregisterRequest {
                agent_id: gone.agent_id,
                registration_token: gone.registration_token,
            })
            .await
            .map(|_| ())
        }));
    }
    // The last 10 register once every watcher is live, so each one
    // certainly gets live REGISTERED events too.
    wait_until(
        Duration::from_secs(10),
        "every watcher reaches SYNCED",
        || {
            let done = views.iter().all(|v| {
                let v = v.lock().expect("view lock");
                v.synced || v.ended
            });
            async move { done }
        },
    )
    .await;
    for _ in 0..10 {
        spawn_registers(&mut writers, 1);
    }
    for writer in writers {
        writer
            .await
            .expect("writer task")
            .expect("register/deregister succeeds");
    }
    let server_set = list_ids(&mut client).await;
    assert_eq!(server_set.len(), 10 - 5 + 50, "server holds 55 agents");

    // Waited for in a task so that a timeout still reaches the per-watcher
    // report below instead of ending the test without details.
    let waited = {
        let views = views.clone();
        let server_set = server_set.clone();
        tokio::spawn(async move {
            wait_until(
                Duration::from_secs(10),
                "every watcher converges on the server's set",
                move || {
                    let done = views.iter().all(|v| {
                        let v = v.lock().expect("view lock");
                        (v.synced && v.agents == server_set) || !v.errors.is_empty() || v.ended
                    });
                    async move { done }
                },
            )
            .await
        })
        .await
    };
    for (i, view) in views.iter().enumerate() {
        let v = view.lock().expect("view lock");
        assert!(v.errors.is_empty(), "watcher {i}: {:?}", v.errors);
        assert!(v.synced, "watcher {i} got SYNCED");
        assert!(v.live_registered >= 10, "watcher {i} got the last 10 live");
        let missing: Vec<_> = server_set.difference(&v.agents).collect();
        let extra: Vec<_> = v.agents.difference(&server_set).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "watcher {i}: missing {missing:?}, extra {extra:?}"
        );
    }
    assert!(waited.is_ok(), "watchers did not converge");
    for watcher in watchers {
        watcher.abort();
    }
}

pub async fn a_dropped_watch_stream_does_not_disturb_the_server_or_other_watchers(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let (mut kept, _, _) = watch_synced(&mut client, watch_all(true)).await;
    let (dropped_synced, _, _) = watch_synced(&mut client, watch_all(true)).await;
    let dropped_plain = watch(&mut client, watch_all(false)).await;
    drop(dropped_synced);
    drop(dropped_plain);

    let a = register(&mut client, register_request(&["after-drop"])).await;
    let event = next_event(&mut kept).await;
    assert_eq!(
        (kind(&event), id_of(&event)),
        (EventType::Registered, a.agent_id.clone())
    );
    assert!(list_ids(&mut client).await.contains(&a.agent_id));

    let (_, snapshot, _) = watch_synced(&mut client, watch_all(true)).await;
    assert_eq!(
        snapshot.iter().map(id_of).collect::<Vec<_>>(),
        vec![a.agent_id.clone()]
    );
    heartbeat(&mut client, &a, Some(telemetry(0.6, 1, 1))).await;
    let event = next_event(&mut kept).await;
    assert_eq!(
        (kind(&event), id_of(&event)),
        (EventType::Updated, a.agent_id.clone())
    );
}

pub async fn opening_and_dropping_200_watchers_leaves_the_server_serving(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let seed = register(&mut client, register_request(&["seed"])).await;

    for round in 0..4 {
        let mut connection = server.client().await;
        let mut open = Vec::new();
        for i in 0..50 {
            if i % 2 == 0 {
                // Read the whole snapshot before dropping.
                let (stream, snapshot, _) = watch_synced(&mut connection, watch_all(true)).await;
                assert_eq!(snapshot.len(), 1 + round, "round {round} snapshot");
                open.push(stream);
            } else {
                open.push(watch(&mut connection, watch_all(i % 4 == 1)).await);
            }
        }
        drop(open);
        register(&mut client, register_request(&["round"])).await;
    }

    let (mut stream, snapshot, _) = watch_synced(&mut client, watch_all(true)).await;
    assert_eq!(snapshot.len(), 5);
    let a = register(&mut client, register_request(&["late"])).await;
    let event = next_event(&mut stream).await;
    assert_eq!(
        (kind(&event), id_of(&event)),
        (EventType::Registered, a.agent_id.clone())
    );
    heartbeat(&mut client, &seed, Some(telemetry(1.0, 1, 1))).await;
    let event = next_event(&mut stream).await;
    assert_eq!(
        (kind(&event), id_of(&event)),
        (EventType::Updated, seed.agent_id.clone())
    );
    assert_eq!(list_ids(&mut client).await.len(), 6);
    expect_quiet(&mut stream, Duration::from_millis(200)).await;
}

behaviour_tests! {
    watch_reports_each_change_with_the_full_agent_and_increasing_revisions,
    a_heartbeat_that_changes_nothing_emits_no_event,
    a_heartbeat_changing_telemetry_and_status_emits_updated_then_status_changed,
    watch_filters_by_agent_type_capabilities_and_namespace,
    an_agent_re_registered_into_another_namespace_is_reported_to_both_namespaces,
    a_snapshot_watch_sends_every_matching_agent_then_synced_then_live_changes,
    twenty_snapshot_watchers_converge_on_the_server_set_while_fifty_agents_register,
    a_dropped_watch_stream_does_not_disturb_the_server_or_other_watchers,
    opening_and_dropping_200_watchers_leaves_the_server_serving,
}
