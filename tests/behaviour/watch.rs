//! WatchAgents (BEHAVIOUR.md §4): change events with full agents and strictly
//! increasing revisions, silence on no-op heartbeats, filters, agents leaving
//! a selection, the initial snapshot (SNAPSHOT… SYNCED, then live changes,
//! nothing missed and nothing twice under concurrent registration), and
//! cancellation.

use std::{collections::HashSet, time::Duration};

use agent_registry::pb::{
    self, agent_change_event::EventType, service_registry_client::ServiceRegistryClient,
};
use tonic::transport::Channel;

use crate::common::*;
use crate::support::*;

type Client = ServiceRegistryClient<Channel>;

pub(crate) fn id_of(event: &pb::AgentChangeEvent) -> String {
    agent_of(event).agent_id.clone()
}

pub(crate) fn watch_request(
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

pub(crate) fn watch_all(send_initial_snapshot: bool) -> pb::WatchAgentsRequest {
    watch_request(pb::AgentType::Unspecified, &[], "", send_initial_snapshot)
}

pub(crate) async fn watch(client: &mut Client, request: pb::WatchAgentsRequest) -> Events {
    client
        .watch_agents(request)
        .await
        .expect("watch_agents succeeds")
        .into_inner()
}

/// Opens a snapshot watch and reads up to its SYNCED: returns the stream,
/// the SNAPSHOT events and the SYNCED revision. After this the server is
/// known to deliver every later change to the stream.
pub(crate) async fn watch_synced(
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

pub(crate) async fn register(
    client: &mut Client,
    request: pb::RegisterRequest,
) -> pb::RegisterResponse {
    client
        .register(request)
        .await
        .expect("register succeeds")
        .into_inner()
}

pub(crate) async fn heartbeat(
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

pub(crate) async fn deregister(client: &mut Client, registered: &pb::RegisterResponse) {
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

pub(crate) async fn list_ids(client: &mut Client) -> HashSet<String> {
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
pub(crate) fn check_change(event: &pb::AgentChangeEvent, last: u64) -> u64 {
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
    a_dropped_watch_stream_does_not_disturb_the_server_or_other_watchers,
    opening_and_dropping_200_watchers_leaves_the_server_serving,
}
