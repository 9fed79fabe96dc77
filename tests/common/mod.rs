//! Shared fixture of the integration tests: a real registry server on a free
//! loopback port, backed by the store a [`Backend`] names, and a tonic client.
//!
//! The behaviour suite is written once against [`TestServer`]; running it on
//! another store is a matter of adding a [`Backend`] variant here.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::{future::Future, net::SocketAddr, time::Duration};

use agent_registry::{
    config::Config,
    pb::{self, service_registry_client::ServiceRegistryClient},
    server::{self, Running},
};
use clap::Parser;
use tonic::transport::Channel;

/// The store a test server runs on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded in-memory store.
    Memory,
}

/// A registry server running inside the test process.
pub struct TestServer {
    /// Where its gRPC endpoint listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    /// The backend it runs on.
    pub backend: Backend,
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
        let mut args: Vec<String> = [
            "agent-registry",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--removal-grace",
            "1",
            "--min-ttl",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match backend {
            Backend::Memory => args.extend(["--store".into(), "memory".into()]),
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let settings = Config::try_parse_from(&args).unwrap().settings().unwrap();
        let running = server::start(settings).await.unwrap();
        Self {
            addr: running.grpc_addr(),
            backend,
            running: Some(running),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A fresh client connection to this server.
    pub async fn client(&self) -> ServiceRegistryClient<Channel> {
        ServiceRegistryClient::connect(self.endpoint()).await.unwrap()
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
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
    };
}
