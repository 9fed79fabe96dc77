//! Probe targets the tests run on loopback: an HTTP server whose status the
//! test sets (and which counts the probes it answers), a TCP listener the
//! test closes, and a gRPC health service the test flips.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU16, AtomicUsize, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio::{net::TcpListener, task::JoinHandle};
use tonic_health::{ServingStatus, server::HealthReporter};

/// The gRPC service name the health target reports on.
pub const GRPC_SERVICE: &str = "probe.Target";

#[derive(Default)]
struct HttpState {
    status: AtomicU16,
    fail_next: AtomicUsize,
    hits: AtomicUsize,
}

/// An HTTP server answering `GET /health` with the status the test set.
pub struct HttpTarget {
    pub addr: SocketAddr,
    state: Arc<HttpState>,
    task: JoinHandle<()>,
}

async fn health(State(state): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let failing_once = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let code = if failing_once {
        503
    } else {
        state.status.load(Ordering::SeqCst)
    };
    // A body the registry must never store or show.
    (
        StatusCode::from_u16(code).unwrap(),
        "secret body the registry must not keep",
    )
}

impl HttpTarget {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HttpState {
            status: AtomicU16::new(200),
            ..HttpState::default()
        });
        let app = Router::new()
            .route("/health", get(health))
            .route(
                "/moved",
                get(|| async { (StatusCode::FOUND, [("location", "/health")]) }),
            )
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    /// The status every following probe gets.
    pub fn set_status(&self, code: u16) {
        self.state.status.store(code, Ordering::SeqCst);
    }

    /// The next `n` probes get 503, whatever the status.
    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Probes answered so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP listener accepting (and dropping) connections until closed.
pub struct TcpTarget {
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl TcpTarget {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                if listener.accept().await.is_err() {
                    return;
                }
            }
        });
        Self {
            addr,
            task: Some(task),
        }
    }

    /// Stops listening: connections are refused from now on.
    pub async fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TcpTarget {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A gRPC server with the standard health service.
pub struct GrpcTarget {
    pub addr: SocketAddr,
    reporter: HealthReporter,
    task: JoinHandle<()>,
}

impl GrpcTarget {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(GRPC_SERVICE, ServingStatus::Serving)
            .await;
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Self {
            addr,
            reporter,
            task,
        }
    }

    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(GRPC_SERVICE, status).await;
    }
}

impl Drop for GrpcTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}
