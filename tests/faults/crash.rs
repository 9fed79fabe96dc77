//! Redis killed under load, then restarted empty.

use std::{
    collections::{BTreeSet, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use agent_registry::pb::{self, agent_change_event::EventType};
use tonic::{Code, Status, Streaming};

use crate::{
    common::{calls::*, *},
    support::*,
};

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

/// A token of the accepted shape (22..=256 url-safe characters).
fn token_like(seed: u64) -> String {
    format!("tok{seed:0>40}_-abcXYZ")
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
