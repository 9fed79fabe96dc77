//! gRPC health and /readyz follow Redis (BEHAVIOUR.md §1), also for a
//! replica started while Redis is down.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::{common::*, support::*};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_and_readiness_follow_redis() {
    let mut redis = RedisProcess::start().await;
    let server = TestServer::replica(&redis, &[]).await;
    let health = health_client(&server.endpoint()).await;

    // Serving while Redis answers; both names are known.
    wait_health(&health, "", ServingStatus::Serving, Duration::from_secs(2)).await;
    wait_health(
        &health,
        REGISTRY_SERVICE,
        ServingStatus::Serving,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(http_get(server.metrics_addr, "/readyz").await.0, 200);
    assert_eq!(http_get(server.metrics_addr, "/healthz").await.0, 200);
    // An unknown service name is NOT_FOUND, as grpc_health_probe expects.
    let unknown = health
        .clone()
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);

    // A Watch stream opened while serving first reports SERVING.
    let mut watch = health
        .clone()
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health Watch")
        .into_inner();
    watch_health_until(&mut watch, ServingStatus::Serving, Duration::from_secs(2))
        .await
        .expect("health Watch starts SERVING");

    // Redis dies: NOT_SERVING (Check and Watch) and /readyz 503 within 2 s,
    // while /healthz (liveness) stays 200.
    redis.kill();
    let killed = Instant::now();
    let metrics_addr = server.metrics_addr;
    let (watched, (), (), ()) = tokio::join!(
        watch_health_until(
            &mut watch,
            ServingStatus::NotServing,
            Duration::from_secs(2)
        ),
        wait_health(
            &health,
            "",
            ServingStatus::NotServing,
            Duration::from_secs(2)
        ),
        wait_health(
            &health,
            REGISTRY_SERVICE,
            ServingStatus::NotServing,
            Duration::from_secs(2)
        ),
        wait_until(
            Duration::from_secs(2),
            "/readyz answers 503",
            || async move { http_status(metrics_addr, "/readyz").await == Some(503) }
        ),
    );
    watched.expect("health Watch reports NOT_SERVING after Redis died");
    assert!(killed.elapsed() < Duration::from_millis(2500));
    for _ in 0..3 {
        assert_eq!(
            http_get(server.metrics_addr, "/healthz").await.0,
            200,
            "liveness while Redis is down"
        );
        assert_eq!(
            http_get(server.metrics_addr, "/readyz").await.0,
            503,
            "readiness while Redis is down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Redis is back (empty): SERVING again within 5 s, no restart.
    redis.restart().await;
    let (watched, (), (), ()) = tokio::join!(
        watch_health_until(&mut watch, ServingStatus::Serving, Duration::from_secs(5)),
        wait_health(&health, "", ServingStatus::Serving, Duration::from_secs(5)),
        wait_health(
            &health,
            REGISTRY_SERVICE,
            ServingStatus::Serving,
            Duration::from_secs(5)
        ),
        wait_until(
            Duration::from_secs(5),
            "/readyz answers 200",
            || async move { http_status(metrics_addr, "/readyz").await == Some(200) }
        ),
    );
    watched.expect("health Watch reports SERVING after Redis came back");
    // And it really serves: a write succeeds.
    let mut client = server.client().await;
    client
        .register(worker(&["after-outage"]))
        .await
        .expect("Register after recovery");
}

/// BEHAVIOUR §1: a replica started while Redis is down starts anyway (no
/// crash loop), reports not serving, logs its configuration with the
/// password redacted, and serves once Redis answers, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starts_while_redis_is_down_and_serves_when_it_answers() {
    let mut redis = RedisProcess::start().await;
    redis.kill();
    let url = redis.url();
    let mut registry = Registry::spawn(&["--store", "redis", "--redis-url", &url], &[]);
    let metrics = registry.metrics;
    wait_until(
        Duration::from_secs(5),
        "/healthz 200 while Redis is down",
        || async move { http_status(metrics, "/healthz").await == Some(200) },
    )
    .await;
    assert_eq!(
        http_status(metrics, "/readyz").await,
        Some(503),
        "{}",
        registry.tail()
    );
    let health = health_client(&registry.endpoint()).await;
    wait_health(
        &health,
        "",
        ServingStatus::NotServing,
        Duration::from_secs(2),
    )
    .await;
    // Writes are refused fast, not hung.
    let mut client = registry.client().await;
    let started = Instant::now();
    let refused = client.register(worker(&["early"])).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Still running a while later (it keeps retrying).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        registry.wait_exit(Duration::ZERO).await.is_none(),
        "exited while Redis was down\n{}",
        registry.tail()
    );
    // The start line comes once the initial sync gave up waiting (2 s).
    wait_until(Duration::from_secs(5), "start line logged", || {
        let logged = registry.stderr().contains("agent registry started");
        async move { logged }
    })
    .await;
    let log = registry.stderr();
    let started_line = log
        .lines()
        .find(|l| l.contains("agent registry started"))
        .unwrap();
    assert!(
        started_line.contains(&registry.grpc.to_string()),
        "{started_line}"
    );
    assert!(
        started_line.contains(&registry.metrics.to_string()),
        "{started_line}"
    );

    redis.restart().await;
    wait_health(&health, "", ServingStatus::Serving, Duration::from_secs(5)).await;
    wait_until(
        Duration::from_secs(5),
        "/readyz 200 once Redis answers",
        || async move { http_status(metrics, "/readyz").await == Some(200) },
    )
    .await;
    client
        .register(worker(&["late"]))
        .await
        .expect("Register once Redis answers");
}
