//! Shared fixture of the integration tests: a real registry server on a free
//! loopback port, backed by the store a [`Backend`] names, and a tonic client.
//!
//! The behaviour suite is written once against [`TestServer`]; running it on
//! another store is a matter of adding a [`Backend`] variant here.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod topology;

use std::{future::Future, net::SocketAddr, time::Duration};

use agent_registry::{
    config::{Config, Settings},
    pb::{self, service_registry_client::ServiceRegistryClient},
    server::{self, Running},
};
use clap::Parser;
use tonic::transport::Channel;

pub mod calls;
mod redis_server;

pub use redis_server::RedisProcess;

/// The store a test server runs on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded in-memory store.
    Memory,
    /// A `redis-server` process of the test's own.
    Redis,
    /// A primary, a replica and three Sentinels of the test's own
    /// ([`topology::SentinelTopology`]).
    Sentinel,
    /// A six-node Redis Cluster of the test's own
    /// ([`topology::ClusterTopology`]).
    Cluster,
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A registry server running inside the test process.
pub struct TestServer {
    /// Where its gRPC endpoint listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    /// Where its HTTP endpoint (/metrics, /healthz, /readyz) listens.
    pub metrics_addr: SocketAddr,
    /// Where its HTTP/JSON API and console listen (`--http-port 0`).
    pub http_addr: SocketAddr,
    /// The backend it runs on.
    pub backend: Backend,
    /// The Redis it owns (Backend::Redis started with [`TestServer::start`]).
    pub redis: Option<RedisProcess>,
    /// The Sentinel topology it owns (Backend::Sentinel).
    pub sentinel: Option<topology::SentinelTopology>,
    /// The cluster it owns (Backend::Cluster).
    pub cluster: Option<topology::ClusterTopology>,
    running: Option<Running>,
}

impl TestServer {
    /// Starts a server with test-friendly timings: `--removal-grace 1`,
    /// `--min-ttl 1`, default TTL 60 s.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// Starts a server with extra command-line flags (they override the
    /// defaults above), e.g. `&["--require-token", "false"]`.
    pub async fn start_with(backend: Backend, extra: &[&str]) -> Self {
        match backend {
            Backend::Sentinel => {
                let sentinel = topology::SentinelTopology::start().await;
                let mut server = Self::on_store(backend, &sentinel.store_args(), extra).await;
                server.sentinel = Some(sentinel);
                return server;
            }
            Backend::Cluster => {
                let cluster = topology::ClusterTopology::start().await;
                let mut server = Self::on_store(backend, &cluster.store_args(), extra).await;
                server.cluster = Some(cluster);
                return server;
            }
            Backend::Memory | Backend::Redis => {}
        }
        let redis = match backend {
            Backend::Redis => Some(RedisProcess::start().await),
            _ => None,
        };
        let url = redis.as_ref().map(RedisProcess::url);
        let mut server = Self::launch(backend, url.as_deref(), extra).await;
        server.redis = redis;
        server
    }

    /// A server (a replica) on a Redis the test owns; several replicas on one
    /// Redis behave as one registry.
    pub async fn replica(redis: &RedisProcess, extra: &[&str]) -> Self {
        Self::launch(Backend::Redis, Some(&redis.url()), extra).await
    }

    async fn launch(backend: Backend, redis_url: Option<&str>, extra: &[&str]) -> Self {
        let store: Vec<String> = match redis_url {
            None => vec!["--store".into(), "memory".into()],
            Some(url) => vec![
                "--store".into(),
                "redis".into(),
                "--redis-url".into(),
                url.into(),
            ],
        };
        Self::on_store(backend, &store, extra).await
    }

    /// A server (a replica) with `store` flags naming its store (e.g. a
    /// topology's [`topology::SentinelTopology::store_args`]) and `extra`
    /// flags; waits until ready unless the store is memory.
    pub async fn on_store(backend: Backend, store: &[String], extra: &[&str]) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            // Debug aid: TEST_LOG=1 cargo nextest run ... shows server logs.
            let _ = tracing_subscriber::fmt()
                .with_env_filter("agent_registry=debug")
                .with_test_writer()
                .try_init();
        }
        let settings = store_settings(store, extra);
        let running = server::start(settings).await.unwrap();
        let server = Self {
            addr: running.grpc_addr(),
            metrics_addr: running.metrics_addr(),
            http_addr: running.http_addr().expect("test servers run the HTTP API"),
            backend,
            redis: None,
            sentinel: None,
            cluster: None,
            running: Some(running),
        };
        if backend != Backend::Memory {
            server.wait_ready().await;
        }
        server
    }

    /// Waits until the server's view is loaded from the store.
    pub async fn wait_ready(&self) {
        wait_ready(&self.endpoint()).await;
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A fresh client connection to this server.
    pub async fn client(&self) -> ServiceRegistryClient<Channel> {
        ServiceRegistryClient::connect(self.endpoint())
            .await
            .unwrap()
    }

    /// Cancels the server's shutdown token (SIGTERM's effect) without
    /// waiting; see [`TestServer::stop`] to wait.
    pub fn begin_shutdown(&self) {
        if let Some(running) = &self.running {
            running.shutdown_token().cancel();
        }
    }

    /// Stops the server gracefully and waits for it (its own Redis, if
    /// any, is killed when dropped).
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// The settings of an in-process test server: test-friendly timings
/// (`--removal-grace 1`, `--min-ttl 1`, default TTL 60 s) on ports 0 (gRPC,
/// metrics and the HTTP API), the
/// memory store or the Redis at `redis_url`, then `extra` flags (they
/// override the defaults).
pub fn test_settings(redis_url: Option<&str>, extra: &[&str]) -> Settings {
    let mut args: Vec<String> = [
        "agent-registry",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--http-port",
        "0",
        "--removal-grace",
        "1",
        "--min-ttl",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match redis_url {
        None => args.extend(["--store".into(), "memory".into()]),
        Some(url) => args.extend([
            "--store".into(),
            "redis".into(),
            "--redis-url".into(),
            url.into(),
        ]),
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::try_parse_from(&args).unwrap().settings().unwrap()
}

/// [`test_settings`] with `store` flags naming the store (any topology).
pub fn store_settings(store: &[String], extra: &[&str]) -> Settings {
    let mut args: Vec<&str> = store.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    test_settings(None, &args)
}

/// Opens a snapshot watch of everything and reads it up to SYNCED (each
/// step within 5 s): the live stream and the SNAPSHOT events.
///
/// # Panics
/// When the watch fails, or an event other than SNAPSHOT comes first.
pub async fn watch_synced(
    client: &mut ServiceRegistryClient<Channel>,
) -> (
    tonic::Streaming<pb::AgentChangeEvent>,
    Vec<pb::AgentChangeEvent>,
) {
    try_watch_synced(client)
        .await
        .unwrap_or_else(|e| panic!("snapshot watch: {e}"))
}

/// [`watch_synced`] that reports failure instead of panicking.
pub async fn try_watch_synced(
    client: &mut ServiceRegistryClient<Channel>,
) -> Result<
    (
        tonic::Streaming<pb::AgentChangeEvent>,
        Vec<pb::AgentChangeEvent>,
    ),
    String,
> {
    const STEP: Duration = Duration::from_secs(5);
    let request = pb::WatchAgentsRequest {
        send_initial_snapshot: true,
        ..Default::default()
    };
    let mut stream = tokio::time::timeout(STEP, client.watch_agents(request))
        .await
        .map_err(|_| "watch_agents did not answer in time".to_owned())?
        .map_err(|s| format!("watch_agents failed: {s:?}"))?
        .into_inner();
    let mut snapshot = Vec::new();
    for _ in 0..1_000_000 {
        let event = tokio::time::timeout(STEP, stream.message())
            .await
            .map_err(|_| "no snapshot event in time".to_owned())?
            .map_err(|s| format!("watch stream failed: {s:?}"))?
            .ok_or("watch stream ended")?;
        match pb::agent_change_event::EventType::try_from(event.event_type) {
            Ok(pb::agent_change_event::EventType::Snapshot) => snapshot.push(event),
            Ok(pb::agent_change_event::EventType::Synced) => return Ok((stream, snapshot)),
            other => return Err(format!("{other:?} before SYNCED: {event:?}")),
        }
    }
    Err("no SYNCED after 1000000 snapshot events".into())
}

/// Waits (at most 10 s) until the registry at `endpoint` serves a complete
/// view: a snapshot watch answers SYNCED (refused while the view is not
/// loaded from the store).
pub async fn wait_ready(endpoint: &str) {
    wait_until(Duration::from_secs(10), "server ready", || {
        let endpoint = endpoint.to_owned();
        async move {
            match ServiceRegistryClient::connect(endpoint).await {
                Ok(mut client) => try_watch_synced(&mut client).await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
}

/// A registry replica as a child process of the real `agent-registry`
/// binary on a Redis the test owns: tests can SIGKILL it and start it again
/// on the same port.
pub struct ReplicaProcess {
    /// Its gRPC address (127.0.0.1, a port that was free).
    pub addr: SocketAddr,
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl ReplicaProcess {
    /// Starts a replica on `redis` with extra flags and waits until ready.
    pub async fn start(redis: &RedisProcess, extra: &[&str]) -> Self {
        let replica = Self::spawn(redis, extra);
        wait_ready(&replica.endpoint()).await;
        replica
    }

    /// Starts a replica without waiting for it to be ready (e.g. while its
    /// Redis is down).
    pub fn spawn(redis: &RedisProcess, extra: &[&str]) -> Self {
        let port = free_port();
        let mut args: Vec<String> = [
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--metrics-port",
            "0",
            "--http-port",
            "0",
            "--removal-grace",
            "1",
            "--min-ttl",
            "1",
            "--store",
            "redis",
            "--redis-url",
            &redis.url(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut replica = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            args,
            child: None,
        };
        replica.launch();
        replica
    }

    /// Starts the (killed) replica again with the same flags and port.
    pub async fn start_again(&mut self) {
        self.launch();
        wait_ready(&self.endpoint()).await;
    }

    /// Whether the process is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn launch(&mut self) {
        self.kill();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_agent-registry"))
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILLs the replica and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A fresh client connection.
    pub async fn client(&self) -> ServiceRegistryClient<Channel> {
        ServiceRegistryClient::connect(self.endpoint())
            .await
            .unwrap()
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `cond` every 20 ms until it returns true; panics with `what` after
/// `timeout`. Bounded in time; never a bare sleep-and-hope.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal valid Register request: a WORKER with the given capabilities.
pub fn register_request(capabilities: &[&str]) -> pb::RegisterRequest {
    pb::RegisterRequest {
        agent_type: pb::AgentType::Worker as i32,
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    }
}

/// Attaches `x-registration-token` metadata to a request.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-registration-token", token.parse().unwrap());
    request
}

/// Declares behaviour tests once and runs each on every [`Backend`].
///
/// Each listed name must be an `async fn name(backend: Backend)` in the
/// invoking module; the macro adds one `#[tokio::test]` per backend
/// (`memory::name`, ...), so a new store is one more arm here.
#[macro_export]
macro_rules! behaviour_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Memory).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Redis).await
                }
            )*
        }
    };
}
