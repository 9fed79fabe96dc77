//! The Rust SDK against real servers: agent sessions survive registry
//! restarts, discovery caches converge after interruptions, retries are
//! bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use agent_registry::{
    client::{AgentSession, DiscoveryCache, RegistryClient},
    pb,
};
use common::*;
use tokio_stream::StreamExt;

fn registration(caps: &[&str], ttl: i32) -> pb::RegisterRequest {
    pb::RegisterRequest {
        ttl_seconds: ttl,
        ..register_request(caps)
    }
}

async fn next_notification(
    stream: &mut (impl tokio_stream::Stream<Item = pb::AgentNotification> + Unpin),
) -> pb::AgentNotification {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a notification within 5 s")
        .expect("the notification stream is open")
}

/// A memory-store server on a fixed port, so it can be replaced by a new
/// (empty) one at the same address.
async fn server_on(port: u16) -> TestServer {
    TestServer::start_with(Backend::Memory, &["--port", &port.to_string()]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reregisters_under_its_id_after_the_registry_restarts() {
    let port = free_port();
    let server = server_on(port).await;
    let client = RegistryClient::connect_lazy(server.endpoint()).unwrap();
    // ttl 3 s → heartbeat interval 1 s.
    let mut session = AgentSession::start(client.clone(), registration(&["sdk"], 3))
        .await
        .unwrap();
    let id = session.agent_id().to_owned();
    let mut notifications = session.notifications().unwrap();
    client
        .notify(&id, "", "before", Default::default())
        .await
        .unwrap();
    assert_eq!(
        next_notification(&mut notifications).await.message,
        "before"
    );

    server.stop().await;
    let restarted = server_on(port).await; // empty: the registry "lost" the agent
    let back = tokio::time::Instant::now();
    wait_until(
        Duration::from_millis(2500),
        "the agent is registered again",
        || {
            let client = client.clone();
            let id = id.clone();
            async move { client.get_agent(&id).await.is_ok() }
        },
    )
    .await;
    assert!(
        back.elapsed() <= Duration::from_millis(2000),
        "re-registered {:?} after the restart (interval 1 s, plus connection set-up)",
        back.elapsed()
    );
    // The session records the registration when its answer arrives, which
    // may be just after the registry already shows the agent.
    let mut states = session.state();
    let state = tokio::time::timeout(
        Duration::from_millis(500),
        states.wait_for(|s| s.registrations >= 2),
    )
    .await
    .expect("the session counts its re-registration")
    .unwrap()
    .clone();
    assert_eq!(state.registrations, 2);
    assert!(state.connected);

    // The notification stream resumed on the new registry.
    wait_until(Duration::from_secs(5), "notifications flow again", || {
        let client = client.clone();
        let id = id.clone();
        async move {
            client
                .notify(&id, "", "after", Default::default())
                .await
                .is_ok_and(|r| r.delivered)
        }
    })
    .await;
    let got = next_notification(&mut notifications).await;
    assert_eq!(got.message, "after");

    session.shutdown().await.unwrap();
    assert!(client.get_agent(&id).await.is_err(), "shutdown deregisters");
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_while_the_registry_is_down_are_bounded() {
    let port = free_port();
    let server = server_on(port).await;
    let client = RegistryClient::connect_lazy(server.endpoint())
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    let session = AgentSession::start(client.clone(), registration(&["sdk"], 3))
        .await
        .unwrap();
    server.stop().await;
    let before = session.heartbeat_attempts();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let attempts = session.heartbeat_attempts() - before;
    // Backoff from 100 ms doubling to the 1 s interval: about 6–8 tries in
    // 4 s. A busy loop would make thousands.
    assert!(
        (2..=12).contains(&attempts),
        "{attempts} heartbeat attempts in 4 s of downtime"
    );
    let state = session.state().borrow().clone();
    assert!(!state.connected);
    assert!(state.last_error.is_some());
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reports_telemetry_through_its_handle() {
    let server = TestServer::start(Backend::Memory).await;
    let client = RegistryClient::connect(server.endpoint()).await.unwrap();
    let session = AgentSession::start(client.clone(), registration(&["sdk"], 3))
        .await
        .unwrap();
    session.telemetry().set(pb::AgentTelemetry {
        success_rate: 0.4,
        total_executions: 10,
        ..Default::default()
    });
    let id = session.agent_id().to_owned();
    wait_until(
        Duration::from_secs(3),
        "the degraded status is reported",
        || {
            let client = client.clone();
            let id = id.clone();
            async move {
                client
                    .get_agent(&id)
                    .await
                    .is_ok_and(|a| a.status == pb::AgentStatus::Degraded as i32)
            }
        },
    )
    .await;
    let mut state = session.state();
    tokio::time::timeout(
        Duration::from_secs(3),
        state.wait_for(|s| s.status == pb::AgentStatus::Degraded),
    )
    .await
    .expect("the session learns its status from the heartbeat")
    .unwrap();
    session.shutdown().await.unwrap();
}

async fn wait_for_ids(cache: &DiscoveryCache, expected: &[String], what: &str) {
    let mut expected = expected.to_vec();
    expected.sort();
    wait_until(Duration::from_secs(5), what, || {
        let ids: Vec<String> = cache.agents().into_iter().map(|a| a.agent_id).collect();
        let ok = ids == expected;
        async move { ok }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_cache_converges_after_its_watch_is_interrupted() {
    let port = free_port();
    let server = server_on(port).await;
    let client = RegistryClient::connect_lazy(server.endpoint()).unwrap();
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(
            client
                .register(register_request(&["gpu"]))
                .await
                .unwrap()
                .agent_id,
        );
    }
    let cache = DiscoveryCache::start(client.clone(), pb::WatchAgentsRequest::default());
    assert!(cache.wait_synced(Duration::from_secs(5)).await);
    wait_for_ids(&cache, &first, "the snapshot").await;
    let late = client
        .register(register_request(&["gpu"]))
        .await
        .unwrap()
        .agent_id;
    first.push(late);
    wait_for_ids(&cache, &first, "a live registration").await;

    // The watch ends (the registry goes away); a new registry holds others.
    server.stop().await;
    let replacement = server_on(port).await;
    let mut second = Vec::new();
    for _ in 0..2 {
        second.push(
            client
                .register(register_request(&["cpu"]))
                .await
                .unwrap()
                .agent_id,
        );
    }
    wait_for_ids(&cache, &second, "the new registry's set").await;
    assert!(cache.resyncs() >= 1);
    assert!(cache.is_synced());
    cache.stop().await;
    replacement.stop().await;
}

/// A feed loss ends every watch with ABORTED; the cache resumes from its
/// last revision (the history is in Redis), with no snapshot, and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_cache_resumes_from_its_revision_after_an_interruption() {
    let server = TestServer::start(Backend::Redis).await;
    let client = RegistryClient::connect_lazy(server.endpoint()).unwrap();
    let first = client.register(register_request(&["gpu"])).await.unwrap();
    let cache = DiscoveryCache::start(client.clone(), pb::WatchAgentsRequest::default());
    assert!(cache.wait_synced(Duration::from_secs(5)).await);
    wait_for_ids(
        &cache,
        std::slice::from_ref(&first.agent_id),
        "the snapshot",
    )
    .await;

    // Cut the replica's pub/sub connection: its view reloads and every
    // watch ends ABORTED, while Redis (and its history) stays.
    let redis = server.redis.as_ref().unwrap();
    let mut conn = redis.connection().await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(killed >= 1);
    wait_until(Duration::from_secs(5), "writes work again", || {
        let client = client.clone();
        async move { client.register(register_request(&["gpu"])).await.is_ok() }
    })
    .await;
    let mut expected: Vec<String> = client
        .list_all(0, Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.agent_id)
        .collect();
    let gone = client
        .deregister(&first.agent_id, &first.registration_token)
        .await
        .unwrap();
    assert!(gone);
    expected.retain(|id| *id != first.agent_id);
    wait_for_ids(&cache, &expected, "the set after the interruption").await;
    assert!(cache.resyncs() >= 1, "the watch was interrupted");
    assert!(cache.resumes() >= 1, "and resumed without a snapshot");
    cache.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_cache_converges_after_an_aborted_watch_on_redis() {
    let server = TestServer::start(Backend::Redis).await;
    let client = RegistryClient::connect_lazy(server.endpoint()).unwrap();
    let cache = DiscoveryCache::start(client.clone(), pb::WatchAgentsRequest::default());
    assert!(cache.wait_synced(Duration::from_secs(5)).await);
    let before = client
        .register(register_request(&["gpu"]))
        .await
        .unwrap()
        .agent_id;
    wait_for_ids(&cache, std::slice::from_ref(&before), "the first agent").await;

    // Killing Redis aborts every watch; the restarted Redis is empty.
    let mut server = server;
    let redis = server.redis.as_mut().unwrap();
    redis.kill();
    redis.restart().await;
    let after = std::sync::Arc::new(std::sync::Mutex::new(None));
    wait_until(Duration::from_secs(5), "writes work again", || {
        let client = client.clone();
        let slot = after.clone();
        async move {
            match client.register(register_request(&["gpu"])).await {
                Ok(r) => {
                    *slot.lock().unwrap() = Some(r.agent_id);
                    true
                }
                Err(_) => false,
            }
        }
    })
    .await;
    let after = after.lock().unwrap().clone();
    wait_for_ids(&cache, &[after.unwrap()], "the set after the outage").await;
    assert!(cache.resyncs() >= 1);
    cache.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_cache_picks_locally_like_discover_would() {
    let server = TestServer::start(Backend::Memory).await;
    let client = RegistryClient::connect(server.endpoint()).await.unwrap();
    let mut ids = Vec::new();
    for rate in [0.6, 0.9, 0.7, 0.8] {
        let r = client
            .register(pb::RegisterRequest {
                telemetry: Some(pb::AgentTelemetry {
                    success_rate: rate,
                    total_executions: 10,
                    ..Default::default()
                }),
                ..register_request(&["gpu"])
            })
            .await
            .unwrap();
        ids.push(r.agent_id);
    }
    client.register(register_request(&["cpu"])).await.unwrap();
    let cache = DiscoveryCache::start(client.clone(), pb::WatchAgentsRequest::default());
    assert!(cache.wait_synced(Duration::from_secs(5)).await);
    wait_until(Duration::from_secs(5), "all five cached", || {
        let n = cache.agents().len();
        async move { n == 5 }
    })
    .await;

    let best = cache.pick(&["gpu"], pb::DiscoveryStrategy::Ranked).unwrap();
    assert_eq!(best.agent_id, ids[1], "the 0.9 success rate ranks first");
    let remote = client
        .discover(pb::DiscoverRequest {
            capabilities: vec!["gpu".into()],
            max_results: 4,
            ..Default::default()
        })
        .await
        .unwrap();
    let local = cache.pick_n(&["gpu"], pb::DiscoveryStrategy::Ranked, 4);
    let ids_of = |v: &[pb::AgentInfo]| v.iter().map(|a| a.agent_id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids_of(&local),
        ids_of(&remote),
        "same order as DiscoverAgents"
    );

    let mut counts = std::collections::HashMap::new();
    for _ in 0..8 {
        let a = cache
            .pick(&["gpu"], pb::DiscoveryStrategy::RoundRobin)
            .unwrap();
        *counts.entry(a.agent_id).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 4);
    assert!(counts.values().all(|n| *n == 2), "{counts:?}");
    assert!(
        cache
            .pick(&["tpu"], pb::DiscoveryStrategy::Random)
            .is_none()
    );
    cache.stop().await;
}
