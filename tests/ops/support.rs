//! Helpers of several topics: HTTP GETs of the probes and /metrics,
//! Prometheus samples, gRPC health, and the real binary as a child process.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use agent_registry::pb::{self, service_registry_client::ServiceRegistryClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::common::*;

pub const REGISTRY_SERVICE: &str = "neural_hive.service_registry.ServiceRegistry";
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// One HTTP/1.0 GET over a raw TCP stream: `(status, body)`, or `None` when
/// the connection or the exchange failed (or took more than 2 s).
pub async fn try_http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
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
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path)
        .await
        .unwrap_or_else(|| panic!("GET http://{addr}{path} failed"))
}

pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    try_http_get(addr, path).await.map(|(status, _)| status)
}

/// GET /metrics, which must answer 200 and parse as Prometheus text.
pub async fn scrape(addr: SocketAddr) -> Vec<prometheus_parse::Sample> {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics: {body}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines)
        .expect("/metrics parses as Prometheus text")
        .samples
}

/// The value of the scalar sample `metric` whose labels are exactly `labels`.
pub fn metric(
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
pub fn counter(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(samples, name, labels).unwrap_or(0.0)
}

pub async fn metric_now(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric(&scrape(addr).await, name, labels)
}

/// A gauge reaches `want` within `timeout`.
pub async fn wait_gauge(
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

pub async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub async fn health_client(endpoint: &str) -> HealthClient<Channel> {
    HealthClient::new(channel(endpoint).await)
}

/// gRPC health Check of `service`, bounded to 1 s.
pub async fn health_check(
    client: &mut HealthClient<Channel>,
    service: &str,
) -> Result<i32, String> {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match tokio::time::timeout(Duration::from_secs(1), client.check(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner().status),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err("timed out".to_owned()),
    }
}

pub async fn wait_health(
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
pub async fn watch_health_until(
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
pub const SETTING_ENVS: &[&str] = &[
    "SERVICE_REGISTRY_HOST",
    "SERVICE_REGISTRY_PORT",
    "METRICS_PORT",
    "HTTP_PORT",
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
pub struct Registry {
    child: Option<std::process::Child>,
    pid: u32,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts the binary on free loopback ports with `extra` flags and `env`,
    /// and waits until it serves a complete view.
    pub async fn start(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let registry = Self::spawn(extra, env);
        wait_ready(&registry.endpoint()).await;
        registry
    }

    /// Starts the binary without waiting for anything.
    pub fn spawn(extra: &[&str], env: &[(&str, &str)]) -> Self {
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
            .args(["--http-port", "0"])
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

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub async fn client(&self) -> ServiceRegistryClient<Channel> {
        ServiceRegistryClient::connect(self.endpoint())
            .await
            .unwrap()
    }

    /// Sends a signal (`-TERM`, `-INT`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.pid);
    }

    /// Waits (bounded) for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
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
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn tail(&self) -> String {
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

pub fn worker(capabilities: &[&str]) -> pb::RegisterRequest {
    register_request(capabilities)
}

pub fn scout(capabilities: &[&str]) -> pb::RegisterRequest {
    pb::RegisterRequest {
        agent_type: pb::AgentType::Scout as i32,
        ..register_request(capabilities)
    }
}
