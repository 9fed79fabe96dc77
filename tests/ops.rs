#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Operations (BEHAVIOUR.md §1 and §6): gRPC health following the store,
//! gRPC reflection, Prometheus metrics, graceful shutdown of the real binary
//! on SIGTERM/SIGINT, start-up configuration errors, and logs that never
//! contain a registration token.

mod common;
use common::*;

use std::{
    io::Read,
    net::SocketAddr,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use agent_registry::pb::{self, service_registry_client::ServiceRegistryClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const REGISTRY_SERVICE: &str = "neural_hive.service_registry.ServiceRegistry";
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

// ---------------------------------------------------------------------------
// helpers: HTTP, metrics, health, child processes
// ---------------------------------------------------------------------------

/// One HTTP/1.0 GET over a raw TCP stream: `(status, body)`, or `None` when
/// the connection or the exchange failed (or took more than 2 s).
async fn try_http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head
            .lines()
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// Like [`try_http_get`], but the exchange must succeed.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path)
        .await
        .unwrap_or_else(|| panic!("GET http://{addr}{path} failed"))
}

async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    try_http_get(addr, path).await.map(|(status, _)| status)
}

/// GET /metrics, which must answer 200 and parse as Prometheus text.
async fn scrape(addr: SocketAddr) -> Vec<prometheus_parse::Sample> {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics: {body}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines)
        .expect("/metrics parses as Prometheus text")
        .samples
}

/// The value of the scalar sample `metric` whose labels are exactly `labels`.
fn metric(
    samples: &[prometheus_parse::Sample],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.metric == name && s.labels.len() == labels.len())
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .find_map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// A counter that may not have been created yet counts 0.
fn counter(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(samples, name, labels).unwrap_or(0.0)
}

async fn metric_now(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric(&scrape(addr).await, name, labels)
}

/// A gauge reaches `want` within `timeout`.
async fn wait_gauge(
    addr: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    timeout: Duration,
) {
    let what = format!("{name}{labels:?} == {want}");
    wait_until(timeout, &what, || async move {
        metric_now(addr, name, labels).await == Some(want)
    })
    .await;
}

async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn health_client(endpoint: &str) -> HealthClient<Channel> {
    HealthClient::new(channel(endpoint).await)
}

/// gRPC health Check of `service`, bounded to 1 s.
async fn health_check(client: &mut HealthClient<Channel>, service: &str) -> Result<i32, String> {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match tokio::time::timeout(Duration::from_secs(1), client.check(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner().status),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err("timed out".to_owned()),
    }
}

async fn wait_health(
    client: &HealthClient<Channel>,
    service: &'static str,
    want: ServingStatus,
    timeout: Duration,
) {
    let what = format!("health Check({service:?}) answers {want:?}");
    wait_until(timeout, &what, || {
        let mut client = client.clone();
        async move { health_check(&mut client, service).await == Ok(want as i32) }
    })
    .await;
}

/// Reads a health Watch stream until it reports `want` (at most `timeout`).
async fn watch_health_until(
    stream: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
    want: ServingStatus,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => return Err(format!("no {want:?} within {timeout:?}; saw {seen:?}")),
            Ok(Err(status)) => {
                return Err(format!("health watch failed: {status:?}; saw {seen:?}"));
            }
            Ok(Ok(None)) => return Err(format!("health watch ended; saw {seen:?}")),
            Ok(Ok(Some(response))) => {
                if response.status == want as i32 {
                    return Ok(());
                }
                seen.push(response.status);
            }
        }
    }
}

/// Every setting's environment variable: children must not inherit them.
const SETTING_ENVS: &[&str] = &[
    "SERVICE_REGISTRY_HOST",
    "SERVICE_REGISTRY_PORT",
    "METRICS_PORT",
    "REGISTRY_STORE",
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "HEARTBEAT_TIMEOUT",
    "MIN_TTL",
    "MAX_TTL",
    "REMOVAL_GRACE",
    "REQUIRE_REGISTRATION_TOKEN",
    "LOG_FORMAT",
    "RUST_LOG",
];

/// A child process of the real `agent-registry` binary; killed and reaped on
/// every path (drop), its stderr captured in a file for diagnostics.
struct Registry {
    child: Option<std::process::Child>,
    pid: u32,
    grpc: SocketAddr,
    metrics: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts the binary on free loopback ports with `extra` flags and `env`,
    /// and waits until it serves a complete view.
    async fn start(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let registry = Self::spawn(extra, env);
        wait_ready(&registry.endpoint()).await;
        registry
    }

    /// Starts the binary without waiting for anything.
    fn spawn(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agent-registry"));
        command
            .args(["--host", "127.0.0.1", "--port"])
            .arg(grpc.port().to_string())
            .arg("--metrics-port")
            .arg(metrics.port().to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for name in SETTING_ENVS {
            command.env_remove(name);
        }
        command.env("RUST_LOG", "info");
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("spawn agent-registry");
        Self {
            pid: child.id(),
            child: Some(child),
            grpc,
            metrics,
            log,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    async fn client(&self) -> ServiceRegistryClient<Channel> {
        ServiceRegistryClient::connect(self.endpoint())
            .await
            .unwrap()
    }

    /// Sends a signal (`-TERM`, `-INT`) with kill(1).
    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.pid);
    }

    /// Waits (bounded) for the process to exit; `None` if it is still running.
    async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("child already reaped");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the process wrote on stderr so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tail(&self) -> String {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn worker(capabilities: &[&str]) -> pb::RegisterRequest {
    register_request(capabilities)
}

fn scout(capabilities: &[&str]) -> pb::RegisterRequest {
    pb::RegisterRequest {
        agent_type: pb::AgentType::Scout as i32,
        ..register_request(capabilities)
    }
}

// ---------------------------------------------------------------------------
// 1. gRPC health and /readyz follow Redis
// ---------------------------------------------------------------------------

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

/// The start-up line shows the effective configuration with the Redis
/// password redacted; the process runs although this Redis never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_line_redacts_the_redis_password() {
    let secret = "s3cretRedisPassw0rd";
    let url = format!("redis://ops:{secret}@127.0.0.1:{}/0", free_port());
    let mut registry = Registry::spawn(&["--store", "redis", "--redis-url", &url], &[]);
    let metrics = registry.metrics;
    wait_until(Duration::from_secs(5), "/healthz 200", || async move {
        http_status(metrics, "/healthz").await == Some(200)
    })
    .await;
    wait_until(Duration::from_secs(5), "start line logged", || {
        let logged = registry.stderr().contains("agent registry started");
        async move { logged }
    })
    .await;
    assert_eq!(http_status(metrics, "/readyz").await, Some(503));
    registry.signal("-TERM");
    let status = registry
        .wait_exit(Duration::from_secs(12))
        .await
        .unwrap_or_else(|| panic!("still running 12 s after SIGTERM\n{}", registry.tail()));
    assert_eq!(status.code(), Some(0), "{}", registry.tail());
    let log = registry.stderr();
    assert!(
        !log.contains(secret),
        "the Redis password is logged:\n{log}"
    );
    let started_line = log
        .lines()
        .find(|l| l.contains("agent registry started"))
        .unwrap();
    assert!(started_line.contains("ops:***@127.0.0.1"), "{started_line}");
}

/// While Redis is down the failure counters move: writes are counted under
/// UNAVAILABLE and as store errors, and the aborted watch is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_store_failures_and_aborted_streams() {
    let mut redis = RedisProcess::start().await;
    let server = TestServer::replica(&redis, &[]).await;
    let addr = server.metrics_addr;
    let mut client = server.client().await;
    let mut watch = client
        .watch_agents(pb::WatchAgentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    wait_gauge(addr, WATCHERS, &[], 1.0, Duration::from_secs(2)).await;
    let before = scrape(addr).await;
    assert_eq!(
        counter(&before, "service_registry_watch_aborted_total", &[]),
        0.0
    );
    assert_eq!(
        counter(&before, "service_registry_store_errors_total", &[]),
        0.0
    );

    redis.kill();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(3), watch.message()).await {
            Err(_) => panic!("watch still open 3 s after Redis died"),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("watch ended without a status"),
            Ok(Err(status)) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Aborted);
    let refused = client.register(worker(&["down"])).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    let after = scrape(addr).await;
    assert!(counter(&after, "service_registry_watch_aborted_total", &[]) >= 1.0);
    assert!(counter(&after, "service_registry_store_errors_total", &[]) >= 1.0);
    assert_eq!(counter(&after, REGISTER, &[("result", "UNAVAILABLE")]), 1.0);
    assert_eq!(counter(&after, REGISTER, OK), 0.0);
    wait_gauge(addr, WATCHERS, &[], 0.0, Duration::from_secs(2)).await;
}

/// Expiry is counted: expired_total, events EXPIRED and STATUS_CHANGED, and
/// the population gauges follow the agent from HEALTHY to UNHEALTHY to gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_expiry() {
    let server = TestServer::start(Backend::Memory).await;
    let addr = server.metrics_addr;
    let mut client = server.client().await;
    client
        .register(pb::RegisterRequest {
            ttl_seconds: 1,
            ..worker(&["short-lived"])
        })
        .await
        .unwrap();
    assert_eq!(
        metric_now(addr, AGENTS, &agents("WORKER", "HEALTHY")).await,
        Some(1.0)
    );
    wait_gauge(
        addr,
        AGENTS,
        &agents("WORKER", "UNHEALTHY"),
        1.0,
        Duration::from_secs(3),
    )
    .await;
    wait_gauge(
        addr,
        "service_registry_expired_total",
        &[],
        1.0,
        Duration::from_secs(3),
    )
    .await;
    let after = scrape(addr).await;
    assert_eq!(
        metric(&after, AGENTS, &agents("WORKER", "UNHEALTHY")),
        Some(0.0)
    );
    assert_eq!(
        metric(&after, AGENTS, &agents("WORKER", "HEALTHY")),
        Some(0.0)
    );
    assert_eq!(counter(&after, EVENTS, &[("event_type", "EXPIRED")]), 1.0);
    assert_eq!(
        counter(&after, EVENTS, &[("event_type", "STATUS_CHANGED")]),
        1.0
    );
}

// ---------------------------------------------------------------------------
// 2. reflection v1 and v1alpha
// ---------------------------------------------------------------------------

mod reflection {
    use super::*;
    use tonic_reflection::pb::{v1, v1alpha};

    async fn ask_v1_raw(
        endpoint: &str,
        request: v1::server_reflection_request::MessageRequest,
    ) -> Result<v1::server_reflection_response::MessageResponse, tonic::Status> {
        let mut client =
            v1::server_reflection_client::ServerReflectionClient::new(channel(endpoint).await);
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await?
            .into_inner();
        let response = tokio::time::timeout(Duration::from_secs(5), responses.message())
            .await
            .expect("v1 reflection answers")?
            .expect("one v1 reflection response");
        Ok(response.message_response.expect("a v1 message_response"))
    }

    async fn ask_v1(
        endpoint: &str,
        request: v1::server_reflection_request::MessageRequest,
    ) -> v1::server_reflection_response::MessageResponse {
        ask_v1_raw(endpoint, request)
            .await
            .expect("v1 reflection stream")
    }

    async fn ask_v1alpha(
        endpoint: &str,
        request: v1alpha::server_reflection_request::MessageRequest,
    ) -> v1alpha::server_reflection_response::MessageResponse {
        let mut client =
            v1alpha::server_reflection_client::ServerReflectionClient::new(channel(endpoint).await);
        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("v1alpha ServerReflectionInfo")
            .into_inner();
        let response = tokio::time::timeout(Duration::from_secs(5), responses.message())
            .await
            .expect("v1alpha reflection answers")
            .expect("v1alpha reflection stream")
            .expect("one v1alpha reflection response");
        response
            .message_response
            .expect("a v1alpha message_response")
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v1_lists_services_and_serves_descriptors() {
        use v1::{
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let server = TestServer::start(Backend::Memory).await;
        let endpoint = server.endpoint();

        let MessageResponse::ListServicesResponse(list) =
            ask_v1(&endpoint, MessageRequest::ListServices(String::new())).await
        else {
            panic!("v1 list_services did not answer a service list");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&REGISTRY_SERVICE), "v1 services: {names:?}");
        assert!(names.contains(&HEALTH_SERVICE), "v1 services: {names:?}");

        for symbol in [REGISTRY_SERVICE, HEALTH_SERVICE] {
            let MessageResponse::FileDescriptorResponse(files) = ask_v1(
                &endpoint,
                MessageRequest::FileContainingSymbol(symbol.into()),
            )
            .await
            else {
                panic!("v1 file_containing_symbol({symbol}) did not answer a descriptor");
            };
            assert!(
                !files.file_descriptor_proto.is_empty(),
                "no descriptor for {symbol}"
            );
            assert!(files.file_descriptor_proto.iter().all(|f| !f.is_empty()));
            let short = symbol.rsplit('.').next().unwrap();
            assert!(
                files
                    .file_descriptor_proto
                    .iter()
                    .any(|f| contains(f, short)),
                "descriptor of {symbol} does not define {short}"
            );
        }
        // A message type of the contract resolves too (grpcurl describe).
        let MessageResponse::FileDescriptorResponse(files) = ask_v1(
            &endpoint,
            MessageRequest::FileContainingSymbol(
                "neural_hive.service_registry.RegisterRequest".into(),
            ),
        )
        .await
        else {
            panic!("v1 file_containing_symbol(RegisterRequest) did not answer a descriptor");
        };
        assert!(
            files
                .file_descriptor_proto
                .iter()
                .any(|f| contains(f, "registration_token"))
        );

        // An unknown symbol is an error response, not a descriptor.
        // (tonic-reflection ends the stream with NOT_FOUND; an ErrorResponse
        // with NOT_FOUND is as good.)
        let unknown = ask_v1_raw(
            &endpoint,
            MessageRequest::FileContainingSymbol("no.such.Thing".into()),
        )
        .await;
        assert!(
            match &unknown {
                Ok(MessageResponse::ErrorResponse(e)) => e.error_code == Code::NotFound as i32,
                Err(status) => status.code() == Code::NotFound,
                Ok(_) => false,
            },
            "unknown symbol answered {unknown:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v1alpha_answers_the_same() {
        use v1alpha::{
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let server = TestServer::start(Backend::Memory).await;
        let endpoint = server.endpoint();

        let MessageResponse::ListServicesResponse(list) =
            ask_v1alpha(&endpoint, MessageRequest::ListServices(String::new())).await
        else {
            panic!("v1alpha list_services did not answer a service list");
        };
        let mut alpha: Vec<String> = list.service.iter().map(|s| s.name.clone()).collect();
        assert!(
            alpha.iter().any(|n| n == REGISTRY_SERVICE),
            "v1alpha services: {alpha:?}"
        );
        assert!(
            alpha.iter().any(|n| n == HEALTH_SERVICE),
            "v1alpha services: {alpha:?}"
        );

        let v1::server_reflection_response::MessageResponse::ListServicesResponse(v1_list) =
            ask_v1(
                &endpoint,
                v1::server_reflection_request::MessageRequest::ListServices(String::new()),
            )
            .await
        else {
            panic!("v1 list_services did not answer a service list");
        };
        let mut one: Vec<String> = v1_list.service.iter().map(|s| s.name.clone()).collect();
        // Each version lists its own reflection service; the rest is equal.
        for names in [&mut alpha, &mut one] {
            names.retain(|n| !n.starts_with("grpc.reflection."));
            names.sort();
        }
        assert_eq!(alpha, one, "v1alpha and v1 list different services");

        let MessageResponse::FileDescriptorResponse(files) = ask_v1alpha(
            &endpoint,
            MessageRequest::FileContainingSymbol(REGISTRY_SERVICE.into()),
        )
        .await
        else {
            panic!("v1alpha file_containing_symbol did not answer a descriptor");
        };
        assert!(!files.file_descriptor_proto.is_empty());
        assert!(
            files
                .file_descriptor_proto
                .iter()
                .any(|f| contains(f, "ServiceRegistry"))
        );
    }
}

// ---------------------------------------------------------------------------
// 3. metrics
// ---------------------------------------------------------------------------

const REGISTER: &str = "service_registry_register_total";
const HEARTBEAT: &str = "service_registry_heartbeat_total";
const DEREGISTER: &str = "service_registry_deregister_total";
const DISCOVER: &str = "service_registry_discover_total";
const NOTIFY: &str = "service_registry_notify_total";
const AGENTS: &str = "service_registry_agents_total";
const EVENTS: &str = "service_registry_events_total";
const WATCHERS: &str = "service_registry_watchers";
const SUBSCRIBERS: &str = "service_registry_subscribers";
const OK: &[(&str, &str)] = &[("result", "ok")];

fn agents(agent_type: &'static str, status: &'static str) -> [(&'static str, &'static str); 2] {
    [("agent_type", agent_type), ("status", status)]
}

async fn metrics_count_calls(backend: Backend) {
    let server = TestServer::start(backend).await;
    let addr = server.metrics_addr;
    let mut client = server.client().await;

    // /metrics answers Prometheus text with the documented families.
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for family in [
        AGENTS,
        WATCHERS,
        SUBSCRIBERS,
        "service_registry_expired_total",
        "service_registry_store_errors_total",
        "service_registry_watch_aborted_total",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "/metrics lacks {family}:\n{body}"
        );
    }
    let before = scrape(addr).await;
    assert_eq!(
        metric(&before, AGENTS, &agents("WORKER", "HEALTHY")),
        Some(0.0)
    );
    let ok_before = counter(&before, REGISTER, OK);
    let invalid = [("result", "INVALID_ARGUMENT")];
    let invalid_before = counter(&before, REGISTER, &invalid);

    // N = 7 successful Registers: 5 workers and 2 scouts.
    let mut workers = Vec::new();
    for i in 0..5 {
        let cap = format!("cap-{i}");
        workers.push(
            client
                .register(worker(&["metrics", &cap]))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    for _ in 0..2 {
        client.register(scout(&["metrics"])).await.unwrap();
    }
    // 3 malformed Registers (agent_type 0).
    for _ in 0..3 {
        let bad = pb::RegisterRequest {
            agent_type: 0,
            ..register_request(&["metrics"])
        };
        let status = client.register(bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let after = scrape(addr).await;
    assert_eq!(
        counter(&after, REGISTER, OK) - ok_before,
        7.0,
        "register_total{{ok}} delta"
    );
    assert_eq!(
        counter(&after, REGISTER, &invalid) - invalid_before,
        3.0,
        "register_total{{INVALID_ARGUMENT}} delta"
    );
    assert_eq!(
        metric(&after, AGENTS, &agents("WORKER", "HEALTHY")),
        Some(5.0)
    );
    assert_eq!(
        metric(&after, AGENTS, &agents("SCOUT", "HEALTHY")),
        Some(2.0)
    );
    assert_eq!(
        metric(&after, AGENTS, &agents("WORKER", "UNHEALTHY")),
        Some(0.0)
    );
    assert_eq!(
        metric(&after, AGENTS, &agents("GUARD", "HEALTHY")),
        Some(0.0)
    );
    assert_eq!(
        counter(&after, EVENTS, &[("event_type", "REGISTERED")]),
        7.0
    );
    let register_count = metric(
        &after,
        "service_registry_latency_seconds_count",
        &[("operation", "register")],
    )
    .expect("latency_seconds_count{operation=register}");
    assert_eq!(register_count, 10.0, "every Register call is timed");
    assert!(
        after
            .iter()
            .any(|s| s.metric == "service_registry_latency_seconds"
                && s.labels.get("operation") == Some("register")
                && matches!(&s.value, prometheus_parse::Value::Histogram(b) if !b.is_empty())),
        "latency_seconds is a histogram with buckets for register"
    );

    // The other counted calls, one ok and one failure each.
    let first = &workers[0];
    let unhealthy = pb::AgentTelemetry {
        success_rate: 0.1,
        total_executions: 10,
        failed_executions: 9,
        ..Default::default()
    };
    client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: first.agent_id.clone(),
            telemetry: Some(unhealthy),
            registration_token: first.registration_token.clone(),
        })
        .await
        .unwrap();
    let missing = client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: "00000000-0000-4000-8000-000000000000".into(),
            registration_token: first.registration_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    client
        .discover_agents(pb::DiscoverRequest {
            capabilities: vec!["metrics".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .notify_agent(pb::NotifyAgentRequest {
            agent_id: first.agent_id.clone(),
            message: "hi".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let wrong = client
        .deregister(pb::DeregisterRequest {
            agent_id: workers[1].agent_id.clone(),
            registration_token: "not-the-token-of-this-agent".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    client
        .deregister(pb::DeregisterRequest {
            agent_id: workers[1].agent_id.clone(),
            registration_token: workers[1].registration_token.clone(),
        })
        .await
        .unwrap();
    let later = scrape(addr).await;
    assert_eq!(
        counter(&later, HEARTBEAT, OK) - counter(&after, HEARTBEAT, OK),
        1.0
    );
    assert_eq!(counter(&later, HEARTBEAT, &[("result", "NOT_FOUND")]), 1.0);
    assert_eq!(
        counter(&later, DISCOVER, OK) - counter(&after, DISCOVER, OK),
        1.0
    );
    assert_eq!(
        counter(&later, NOTIFY, OK) - counter(&after, NOTIFY, OK),
        1.0
    );
    assert_eq!(
        counter(&later, DEREGISTER, OK) - counter(&after, DEREGISTER, OK),
        1.0
    );
    assert_eq!(
        counter(&later, DEREGISTER, &[("result", "PERMISSION_DENIED")]),
        1.0
    );
    assert_eq!(
        counter(&later, REGISTER, OK),
        counter(&after, REGISTER, OK),
        "no extra registers counted"
    );
    // Population follows: one worker UNHEALTHY, one gone.
    assert_eq!(
        metric(&later, AGENTS, &agents("WORKER", "HEALTHY")),
        Some(3.0)
    );
    assert_eq!(
        metric(&later, AGENTS, &agents("WORKER", "UNHEALTHY")),
        Some(1.0)
    );
    assert_eq!(
        counter(&later, EVENTS, &[("event_type", "DEREGISTERED")]),
        1.0
    );
    assert_eq!(counter(&later, EVENTS, &[("event_type", "UPDATED")]), 1.0);
    assert_eq!(
        counter(&later, EVENTS, &[("event_type", "STATUS_CHANGED")]),
        1.0
    );
    for op in ["heartbeat", "deregister", "discover_agents", "notify_agent"] {
        assert!(
            metric(
                &later,
                "service_registry_latency_seconds_count",
                &[("operation", op)]
            )
            .is_some_and(|n| n >= 1.0),
            "latency_seconds_count{{operation={op}}}"
        );
    }
    assert_eq!(
        counter(&later, "service_registry_store_errors_total", &[]),
        0.0
    );

    // Watchers: 3 open WatchAgents streams, then none once dropped.
    assert_eq!(metric(&later, WATCHERS, &[]), Some(0.0));
    let mut watches = Vec::new();
    for _ in 0..3 {
        let stream = client
            .watch_agents(pb::WatchAgentsRequest::default())
            .await
            .unwrap()
            .into_inner();
        watches.push(stream);
    }
    wait_gauge(addr, WATCHERS, &[], 3.0, Duration::from_secs(2)).await;
    drop(watches);
    wait_gauge(addr, WATCHERS, &[], 0.0, Duration::from_secs(2)).await;

    // Subscribers likewise.
    assert_eq!(metric_now(addr, SUBSCRIBERS, &[]).await, Some(0.0));
    let mut subscriptions = Vec::new();
    for agent in [&workers[0], &workers[2], &workers[3]] {
        let stream = client
            .subscribe_notifications(pb::SubscribeNotificationsRequest {
                agent_id: agent.agent_id.clone(),
                registration_token: agent.registration_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        subscriptions.push(stream);
    }
    wait_gauge(addr, SUBSCRIBERS, &[], 3.0, Duration::from_secs(2)).await;
    drop(subscriptions);
    wait_gauge(addr, SUBSCRIBERS, &[], 0.0, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_memory() {
    metrics_count_calls(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_redis() {
    metrics_count_calls(Backend::Redis).await;
}

/// Every replica reports the whole population (read from its view), while
/// call counters are its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_population_is_registry_wide_across_replicas() {
    let redis = RedisProcess::start().await;
    let a = TestServer::replica(&redis, &[]).await;
    let b = TestServer::replica(&redis, &[]).await;
    let mut client = a.client().await;
    let mut registered = Vec::new();
    for _ in 0..4 {
        registered.push(
            client
                .register(worker(&["replicated"]))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    client.register(scout(&["replicated"])).await.unwrap();

    wait_gauge(
        b.metrics_addr,
        AGENTS,
        &agents("WORKER", "HEALTHY"),
        4.0,
        Duration::from_secs(2),
    )
    .await;
    let on_b = scrape(b.metrics_addr).await;
    assert_eq!(
        metric(&on_b, AGENTS, &agents("SCOUT", "HEALTHY")),
        Some(1.0)
    );
    assert_eq!(
        counter(&on_b, REGISTER, OK),
        0.0,
        "B counted calls it did not take"
    );
    assert_eq!(counter(&on_b, EVENTS, &[("event_type", "REGISTERED")]), 5.0);
    assert_eq!(counter(&scrape(a.metrics_addr).await, REGISTER, OK), 5.0);

    // A status change on A shows on B.
    let first = &registered[0];
    client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: first.agent_id.clone(),
            registration_token: first.registration_token.clone(),
            telemetry: Some(pb::AgentTelemetry {
                success_rate: 0.4,
                total_executions: 10,
                failed_executions: 6,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    wait_gauge(
        b.metrics_addr,
        AGENTS,
        &agents("WORKER", "DEGRADED"),
        1.0,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        metric_now(b.metrics_addr, AGENTS, &agents("WORKER", "HEALTHY")).await,
        Some(3.0)
    );

    // A deregistration on B shows on A.
    let mut client_b = b.client().await;
    client_b
        .deregister(pb::DeregisterRequest {
            agent_id: registered[1].agent_id.clone(),
            registration_token: registered[1].registration_token.clone(),
        })
        .await
        .unwrap();
    wait_gauge(
        a.metrics_addr,
        AGENTS,
        &agents("WORKER", "HEALTHY"),
        2.0,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(counter(&scrape(b.metrics_addr).await, DEREGISTER, OK), 1.0);
    assert_eq!(counter(&scrape(a.metrics_addr).await, DEREGISTER, OK), 0.0);
}

// ---------------------------------------------------------------------------
// 4. graceful shutdown of the real binary
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// 5. logs never contain a token; bad configuration exits 2
// ---------------------------------------------------------------------------

async fn token_never_logged(store: &[&str]) {
    let mut args = vec!["--require-token", "true", "--log-format", "json"];
    args.extend_from_slice(store);
    let mut registry =
        Registry::start(&args, &[("RUST_LOG", "debug"), ("LOG_FORMAT", "json")]).await;
    let mut client = registry.client().await;
    let wrong_token = "WrongTokenOfSomeoneElse_0123456789abcdefXYZ";
    let client_token = "ClientChosenTokenForRecreate_9876543210zyxw";

    let registered = client
        .register(pb::RegisterRequest {
            metadata: [("team".to_string(), "ops-log-test".to_string())].into(),
            telemetry: Some(pb::AgentTelemetry {
                success_rate: 0.9,
                avg_duration_ms: 12,
                total_executions: 10,
                failed_executions: 1,
                last_execution_at: 1_700_000_000,
            }),
            ..register_request(&["logging"])
        })
        .await
        .unwrap()
        .into_inner();
    let id = registered.agent_id.clone();
    let token = registered.registration_token.clone();
    assert!(token.len() >= 22);

    // Heartbeat with the token in the field, then in the metadata.
    client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: id.clone(),
            registration_token: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .heartbeat(with_token(
            pb::HeartbeatRequest {
                agent_id: id.clone(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap();
    // Re-register in place with id + token.
    let again = client
        .register(pb::RegisterRequest {
            agent_id: id.clone(),
            registration_token: token.clone(),
            ..register_request(&["logging", "again"])
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.agent_id, id);
    // A wrong token, in the field and in the metadata.
    let denied = client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: id.clone(),
            registration_token: wrong_token.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = client
        .deregister(with_token(
            pb::DeregisterRequest {
                agent_id: id.clone(),
                ..Default::default()
            },
            wrong_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Re-creation under an unknown id keeps the client's token.
    let recreated_id = "7b4d1e1a-3c52-4f7e-9a3b-2d8f6c1e0a55";
    client
        .register(pb::RegisterRequest {
            agent_id: recreated_id.into(),
            registration_token: client_token.into(),
            ..register_request(&["logging"])
        })
        .await
        .unwrap();
    // Subscribe, get a notification, unsubscribe.
    let mut notifications = client
        .subscribe_notifications(with_token(
            pb::SubscribeNotificationsRequest {
                agent_id: id.clone(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    client
        .notify_agent(pb::NotifyAgentRequest {
            agent_id: id.clone(),
            message: "hello".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), notifications.message())
        .await
        .expect("notification in time")
        .unwrap()
        .expect("stream open");
    assert_eq!(got.message, "hello");
    drop(notifications);
    // Deregister both.
    for (agent_id, secret) in [(id.as_str(), token.as_str()), (recreated_id, client_token)] {
        let gone = client
            .deregister(pb::DeregisterRequest {
                agent_id: agent_id.into(),
                registration_token: secret.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(gone.success);
    }
    drop(client);

    registry.signal("-TERM");
    let status = registry
        .wait_exit(Duration::from_secs(12))
        .await
        .unwrap_or_else(|| panic!("still running 12 s after SIGTERM\n{}", registry.tail()));
    assert_eq!(status.code(), Some(0));

    let log = registry.stderr();
    assert!(!log.trim().is_empty(), "nothing logged");
    eprintln!(
        "{} log lines; first call finished line: {:?}",
        log.lines().count(),
        log.lines().find(|l| l.contains("call finished"))
    );
    for (n, line) in log
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line = line.trim();
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "log line {} is not a JSON object: {line}",
            n + 1
        );
    }
    assert!(log.contains(&id), "the agent id is not logged");
    let finished: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("call finished"))
        .collect();
    assert!(
        !finished.is_empty(),
        "no \"call finished\" line at debug level"
    );
    assert!(
        finished
            .iter()
            .all(|l| l.contains("\"code\"") && l.contains("\"rpc\"") && l.contains("duration_ms")),
        "call finished lines lack rpc/code/duration_ms: {finished:#?}"
    );
    assert!(
        finished.iter().any(|l| l.contains("\"Heartbeat\"")
            && l.contains("\"PERMISSION_DENIED\"")
            && l.contains(&id)),
        "no call finished line for the denied heartbeat: {finished:#?}"
    );
    assert!(
        finished
            .iter()
            .any(|l| l.contains("\"Register\"") && l.contains("\"ok\"") && l.contains(&id)),
        "no call finished line for the Register: {finished:#?}"
    );
    for (what, secret) in [
        ("registration token", token.as_str()),
        ("wrong token", wrong_token),
        ("client-chosen token", client_token),
    ] {
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "the {what} is logged:\n{}",
            leaks.join("\n")
        );
    }
    // A fragment of the token (e.g. a truncated field) is not logged either.
    assert!(
        !log.contains(&token[..16]),
        "a prefix of the token is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_tokens_memory() {
    token_never_logged(&["--store", "memory"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_tokens_redis() {
    let redis = RedisProcess::start().await;
    token_never_logged(&["--store", "redis", "--redis-url", &redis.url()]).await;
}

/// Runs the binary with a bad configuration: it must exit 2 (within 5 s)
/// with a first stderr line naming one of `names`.
async fn bad_config_exits_2(args: &[&str], env: &[(&str, &str)], names: &[&str]) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agent-registry"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for name in SETTING_ENVS {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Guard(command.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} {env:?}: still running after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(2),
        "{args:?} {env:?}: {status:?}, stderr:\n{stderr}"
    );
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(
        names.iter().any(|n| first.contains(n)),
        "{args:?} {env:?}: first line {first:?} names none of {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2_naming_the_setting() {
    let ports = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        ports.iter().chain(extra).copied().collect()
    };
    bad_config_exits_2(&["--port", "http"], &[], &["--port"]).await;
    bad_config_exits_2(
        &with(&["--min-ttl", "10", "--max-ttl", "5"]),
        &[],
        &["--min-ttl", "--max-ttl", "MIN_TTL"],
    )
    .await;
    bad_config_exits_2(
        &with(&["--store", "redis"]),
        &[],
        &["--store", "--redis-url", "REDIS_URL", "REGISTRY_STORE"],
    )
    .await;
    bad_config_exits_2(
        &["--host", "127.0.0.1"],
        &[("SERVICE_REGISTRY_PORT", "abc")],
        &["--port", "SERVICE_REGISTRY_PORT"],
    )
    .await;
    bad_config_exits_2(&with(&["--store", "etcd"]), &[], &["--store"]).await;
    bad_config_exits_2(&with(&["--min-ttl", "0"]), &[], &["--min-ttl", "MIN_TTL"]).await;
    bad_config_exits_2(
        &with(&["--heartbeat-timeout", "0"]),
        &[],
        &["--heartbeat-timeout", "HEARTBEAT_TIMEOUT"],
    )
    .await;
    bad_config_exits_2(
        &with(&["--require-token", "maybe"]),
        &[],
        &["--require-token"],
    )
    .await;
    bad_config_exits_2(&with(&["--log-format", "xml"]), &[], &["--log-format"]).await;
    bad_config_exits_2(
        &with(&[]),
        &[("MAX_TTL", "soon")],
        &["--max-ttl", "MAX_TTL"],
    )
    .await;
    bad_config_exits_2(
        &with(&["--store", "redis", "--redis-url", "http://127.0.0.1:6379"]),
        &[],
        &["--redis-url", "REDIS_URL"],
    )
    .await;
}
