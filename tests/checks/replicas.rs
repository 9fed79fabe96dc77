//! Two replicas on one Redis: one prober per agent (about one probe per
//! interval in total), one event per transition on watchers of both, and
//! takeover when the probing replica stops.

use std::time::{Duration, Instant};

use super::*;

/// Probes this replica ran, from its `/metrics`.
async fn probes_run(server: &TestServer) -> u64 {
    let url = format!("http://{}/metrics", server.metrics_addr);
    let body = metrics_text(&url).await;
    body.lines()
        .filter(|l| l.starts_with("service_registry_health_checks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// GET of a loopback URL with a bare HTTP/1.0 request (no client crate).
async fn metrics_text(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// Events of `id` on `events` during `wait`, by type.
async fn drain(events: &mut Events, id: &str, wait: Duration) -> Vec<pb::AgentChangeEvent> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    while let Some(event) = next_of(
        events,
        id,
        deadline.saturating_duration_since(tokio::time::Instant::now()),
    )
    .await
    {
        out.push(event);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_probe_once_and_hand_over() {
    let redis = RedisProcess::start().await;
    let target = HttpTarget::start().await;
    let a = TestServer::replica(&redis, &[]).await;
    let b = TestServer::replica(&redis, &[]).await;
    let mut ca = a.client().await;
    let mut cb = b.client().await;
    let (mut ea, _) = watch_synced(&mut ca).await;
    let (mut eb, _) = watch_synced(&mut cb).await;
    let agent = register_checked(&mut ca, check(Kind::Http, &target.addr.to_string()), 30).await;
    let id = agent.agent_id.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // About one probe per interval in total, not one per replica.
    let (h0, t0) = (target.hits(), Instant::now());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let probes = target.hits() - h0;
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        (secs * 0.6..=secs * 1.4).contains(&(probes as f64)),
        "{probes} probes in {secs:.1} s by two replicas"
    );

    // Each transition: exactly one event on each replica's watcher.
    target.set_status(500);
    let down_a = expect_status(&mut ea, &id, pb::AgentStatus::Unhealthy).await;
    let down_b = expect_status(&mut eb, &id, pb::AgentStatus::Unhealthy).await;
    assert_eq!(down_a.revision, down_b.revision);
    assert_eq!(down_a.health_output, "HTTP 500");
    target.set_status(200);
    expect_status(&mut ea, &id, pb::AgentStatus::Healthy).await;
    expect_status(&mut eb, &id, pb::AgentStatus::Healthy).await;
    assert!(drain(&mut ea, &id, Duration::from_secs(2)).await.is_empty());
    assert!(drain(&mut eb, &id, Duration::from_secs(1)).await.is_empty());

    // The probing replica stops: the other takes over within 2 × interval
    // + 5 s, and a failure is still seen once.
    let (pa, pb_) = (probes_run(&a).await, probes_run(&b).await);
    assert!(
        pa == 0 || pb_ == 0 || pa.abs_diff(pb_) > 2,
        "{pa} / {pb_}: one prober"
    );
    let (stopping, staying, mut events) = if pa > pb_ { (a, b, eb) } else { (b, a, ea) };
    let before = probes_run(&staying).await;
    stopping.stop().await;
    let stopped = Instant::now();
    wait_until(
        Duration::from_secs(7),
        "the other replica probes",
        || async { probes_run(&staying).await > before + 1 },
    )
    .await;
    assert!(stopped.elapsed() <= Duration::from_secs(7));
    target.set_status(503);
    let info = expect_status(&mut events, &id, pb::AgentStatus::Unhealthy).await;
    assert_eq!(info.health_output, "HTTP 503");
    staying.stop().await;
}
