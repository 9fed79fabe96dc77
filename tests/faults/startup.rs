//! A registry started while Redis is down recovers by itself.

use std::{
    collections::BTreeSet,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use agent_registry::{
    pb::{self, agent_change_event::EventType, service_registry_client::ServiceRegistryClient},
    server,
};
use tonic::Code;

use crate::{
    common::{calls::*, *},
    support::*,
};

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
    let settings = test_settings(Some(&url), &[]);
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
