//! Graceful shutdown of the real binary on SIGTERM and SIGINT.

use std::time::{Duration, Instant};

use agent_registry::pb::{self, service_registry_client::ServiceRegistryClient};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::{common::*, support::*};

/// SIGTERM while a Register is blocked in Redis and a watch is open: the
/// Register completes OK, the watch ends UNAVAILABLE, new calls are refused,
/// readiness drops, and the process exits 0 within 12 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_calls_and_ends_streams() {
    let redis = RedisProcess::start().await;
    let mut registry =
        Registry::start(&["--store", "redis", "--redis-url", &redis.url()], &[]).await;
    let tail = |r: &Registry| format!("\n--- registry stderr ---\n{}", r.tail());

    // An open watch (its own connection), past its snapshot.
    let mut watcher = registry.client().await;
    let mut watch = watcher
        .watch_agents(pb::WatchAgentsRequest {
            send_initial_snapshot: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(2), watch.message())
            .await
            .expect("snapshot in time")
            .unwrap()
            .expect("stream open");
        if event.event_type == pb::agent_change_event::EventType::Synced as i32 {
            break;
        }
    }
    // The writer connects before Redis pauses, so only the call blocks.
    let mut writer = registry.client().await;
    let warm = writer
        .register(worker(&["warm-up"]))
        .await
        .unwrap()
        .into_inner();
    // An open notification subscription too (its own connection).
    let mut subscriber = registry.client().await;
    let mut notifications = subscriber
        .subscribe_notifications(pb::SubscribeNotificationsRequest {
            agent_id: warm.agent_id.clone(),
            registration_token: warm.registration_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let metrics = registry.metrics;
    wait_until(
        Duration::from_secs(1),
        "/readyz 200 before SIGTERM",
        || async move { http_status(metrics, "/readyz").await == Some(200) },
    )
    .await;

    // Pause Redis writes for 400 ms: the next Register blocks in EVALSHA.
    // (Not longer: the server's Redis connections give up on an answer after
    // 500 ms, the redis crate's default response timeout, and the Register
    // would then fail with UNAVAILABLE.)
    let mut conn = redis.connection().await;
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(400)
        .arg("WRITE")
        .query_async::<()>(&mut conn)
        .await
        .expect("CLIENT PAUSE WRITE");
    let paused = Instant::now();
    let in_flight = tokio::spawn(async move {
        let result = writer.register(worker(&["in-flight"])).await;
        (result, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !in_flight.is_finished(),
        "the Register did not block on the paused Redis"
    );
    registry.signal("-TERM");
    let termed = Instant::now();

    // Readiness drops during the drain (the HTTP side is still up).
    let mut ready_after_term = Vec::new();
    let deadline = termed + Duration::from_millis(600);
    let mut saw_503 = false;
    while Instant::now() < deadline {
        let status = http_status(metrics, "/readyz").await;
        ready_after_term.push(status);
        if status == Some(503) {
            saw_503 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // New calls are refused.
    let endpoint = registry.endpoint();
    wait_until(
        Duration::from_secs(1),
        "a new call after SIGTERM is refused",
        || {
            let endpoint = endpoint.clone();
            async move {
                let attempt = async {
                    let mut client = ServiceRegistryClient::connect(endpoint)
                        .await
                        .map_err(|_| ())?;
                    client.register(worker(&["too-late"])).await.map_err(|_| ())
                };
                matches!(
                    tokio::time::timeout(Duration::from_millis(500), attempt).await,
                    Ok(Err(()))
                )
            }
        },
    )
    .await;

    // The open watch ends with UNAVAILABLE (not silently, not hanging).
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(3), watch.message()).await {
            Err(_) => panic!(
                "the watch stream is still open 3 s after SIGTERM{}",
                tail(&registry)
            ),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the watch stream ended without a status{}", tail(&registry)),
            Ok(Err(status)) => break status,
        }
    };
    assert_eq!(
        ended.code(),
        Code::Unavailable,
        "watch ended with {ended:?}"
    );
    // So does the notification subscription.
    let ended = match tokio::time::timeout(Duration::from_secs(3), notifications.message()).await {
        Err(_) => panic!(
            "the subscription is still open 3 s after SIGTERM{}",
            tail(&registry)
        ),
        Ok(Ok(m)) => panic!(
            "the subscription ended without a status: {m:?}{}",
            tail(&registry)
        ),
        Ok(Err(status)) => status,
    };
    assert_eq!(
        ended.code(),
        Code::Unavailable,
        "subscription ended with {ended:?}"
    );

    // The in-flight Register finishes OK, after SIGTERM.
    let (result, finished) = tokio::time::timeout(Duration::from_secs(11), in_flight)
        .await
        .expect("in-flight Register answers within the drain")
        .unwrap();
    let response = result
        .unwrap_or_else(|s| panic!("in-flight Register failed: {s:?}{}", tail(&registry)))
        .into_inner();
    assert!(!response.agent_id.is_empty());
    assert!(
        finished > termed,
        "the Register was not in flight at SIGTERM"
    );
    assert!(
        finished.duration_since(paused) >= Duration::from_millis(350),
        "the Register did not wait for the paused Redis ({:?})",
        finished.duration_since(paused)
    );

    // And the process exits 0 within 12 s of SIGTERM.
    let status = registry
        .wait_exit(Duration::from_secs(12).saturating_sub(termed.elapsed()))
        .await
        .unwrap_or_else(|| panic!("still running 12 s after SIGTERM{}", tail(&registry)));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}{}",
        tail(&registry)
    );
    assert!(
        saw_503,
        "/readyz did not answer 503 during the drain: {ready_after_term:?}{}",
        tail(&registry)
    );
    // The in-flight write was applied.
    let mut conn = redis.connection().await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("{{registry}}:agent:{}", response.agent_id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(exists, "the drained Register is not in Redis");
}

/// A health Watch open at SIGTERM reports NOT_SERVING, then ends (cleanly or
/// with UNAVAILABLE) instead of holding the drain open: with no unary call in
/// flight the process exits promptly, not after the 10 s grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_health_not_serving_and_ends_health_watches() {
    let mut registry = Registry::start(&["--store", "memory"], &[]).await;
    let health = health_client(&registry.endpoint()).await;
    let mut watch = health
        .clone()
        .watch(HealthCheckRequest {
            service: REGISTRY_SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    watch_health_until(&mut watch, ServingStatus::Serving, Duration::from_secs(2))
        .await
        .expect("SERVING before SIGTERM");
    registry.signal("-TERM");
    let termed = Instant::now();
    let reported = watch_health_until(
        &mut watch,
        ServingStatus::NotServing,
        Duration::from_secs(2),
    )
    .await;
    // Then the stream ends (within 2 s of NOT_SERVING).
    let ended = match tokio::time::timeout(Duration::from_secs(2), watch.message()).await {
        Err(_) => Err("still open 2 s after NOT_SERVING".to_owned()),
        Ok(Ok(Some(m))) => Err(format!("another message after NOT_SERVING: {m:?}")),
        // Ending cleanly after NOT_SERVING (the status cleared) or with
        // UNAVAILABLE are both fine for a health watcher: it re-checks.
        Ok(Ok(None)) => Ok(()),
        Ok(Err(status)) if status.code() == Code::Unavailable => Ok(()),
        Ok(Err(status)) => Err(format!("ended with {status:?}")),
    };
    let status = registry.wait_exit(Duration::from_secs(12)).await;
    let took = termed.elapsed();
    reported.unwrap_or_else(|e| panic!("health Watch after SIGTERM: {e}\n{}", registry.tail()));
    let status =
        status.unwrap_or_else(|| panic!("still running 12 s after SIGTERM\n{}", registry.tail()));
    assert_eq!(status.code(), Some(0));
    assert!(
        ended.is_ok() && took < Duration::from_secs(3),
        "health Watch at shutdown: {ended:?}; process exited {took:?} after SIGTERM \
         (streams should end with UNAVAILABLE at once; only unary calls may hold the drain)"
    );
}

async fn idle_signal_exits_zero(signal: &str, store: &[&str]) {
    let mut registry = Registry::start(store, &[]).await;
    registry.signal(signal);
    let sent = Instant::now();
    let status = registry
        .wait_exit(Duration::from_secs(3))
        .await
        .unwrap_or_else(|| {
            panic!(
                "still running 3 s after {signal} with no traffic\n{}",
                registry.tail()
            )
        });
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", registry.tail());
    assert!(sent.elapsed() < Duration::from_secs(3));
    let log = registry.stderr();
    assert!(log.contains("shutdown requested"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_with_no_traffic_exits_zero_quickly() {
    idle_signal_exits_zero("-INT", &["--store", "memory"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_no_traffic_exits_zero_quickly_on_redis() {
    let redis = RedisProcess::start().await;
    idle_signal_exits_zero("-TERM", &["--store", "redis", "--redis-url", &redis.url()]).await;
}
