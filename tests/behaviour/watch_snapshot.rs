//! The initial snapshot of WatchAgents (BEHAVIOUR.md §4): SNAPSHOT… SYNCED, then
//! live changes, nothing missed and nothing twice under concurrent registration.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use agent_registry::pb::{
    self, agent_change_event::EventType, service_registry_client::ServiceRegistryClient,
};

use crate::common::*;
use crate::support::*;

use crate::watch::{
    check_change, heartbeat, id_of, list_ids, register, watch, watch_all, watch_request,
};

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

behaviour_tests! {
    a_snapshot_watch_sends_every_matching_agent_then_synced_then_live_changes,
    twenty_snapshot_watchers_converge_on_the_server_set_while_fifty_agents_register,
}
