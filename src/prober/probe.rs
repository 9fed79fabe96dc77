//! One probe of an active health check (BEHAVIOUR.md §10): resolve the
//! target (refusing denied addresses), then a TCP connect, an HTTP GET or a
//! gRPC health Check, all within the check's timeout. Nothing of a
//! response body is read beyond what the protocol needs, and the output
//! only names the result.

use std::{
    future::Ready,
    io,
    net::SocketAddr,
    task::{Context, Poll},
    time::Duration,
};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::domain::check::{CheckKind, DenyList, HealthCheck};

/// Longest output kept, in bytes.
const MAX_OUTPUT: usize = 128;

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether it passed.
    pub passed: bool,
    /// What it found (`HTTP 503`, `SERVING`, `connection refused`).
    pub output: String,
}

impl Outcome {
    fn pass(output: impl Into<String>) -> Self {
        Self {
            passed: true,
            output: output.into(),
        }
    }

    fn fail(output: impl Into<String>) -> Self {
        let mut output: String = output.into();
        if output.len() > MAX_OUTPUT {
            let cut = (0..=MAX_OUTPUT)
                .rev()
                .find(|i| output.is_char_boundary(*i))
                .unwrap_or(0);
            output.truncate(cut);
        }
        Self {
            passed: false,
            output,
        }
    }
}

/// Probes `check` once, within its timeout.
pub async fn probe(check: &HealthCheck, deny: &DenyList) -> Outcome {
    let timeout = Duration::from_secs(u64::from(check.timeout_secs));
    match tokio::time::timeout(timeout, attempt(check, deny)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::fail("timeout"),
    }
}

async fn attempt(check: &HealthCheck, deny: &DenyList) -> Outcome {
    let addrs = match resolve(&check.target, deny).await {
        Ok(addrs) => addrs,
        Err(outcome) => return outcome,
    };
    let stream = match connect(&addrs).await {
        Ok(stream) => stream,
        Err(error) => return Outcome::fail(describe(&error)),
    };
    match check.kind {
        CheckKind::Tcp => Outcome::pass("connected"),
        CheckKind::Http => http(stream, check).await,
        CheckKind::Grpc => grpc(stream, check).await,
    }
}

/// The target's addresses; every one must be allowed (a name with one
/// denied address is refused whole, so rebinding tricks gain nothing). The
/// probe then connects to these addresses, never resolving again.
async fn resolve(target: &str, deny: &DenyList) -> Result<Vec<SocketAddr>, Outcome> {
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(target).await {
        Ok(addrs) => addrs.collect(),
        Err(_) => return Err(Outcome::fail("cannot resolve target")),
    };
    if addrs.is_empty() {
        return Err(Outcome::fail("cannot resolve target"));
    }
    if addrs.iter().any(|a| deny.denies(a.ip())) {
        return Err(Outcome::fail("target denied"));
    }
    Ok(addrs)
}

async fn connect(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Best effort: a probe is a few small writes.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) => last = error,
        }
    }
    Err(last)
}

fn describe(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::TimedOut => "timeout".to_owned(),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            "unreachable".to_owned()
        }
        _ => error.to_string(),
    }
}

async fn http(stream: TcpStream, check: &HealthCheck) -> Outcome {
    let (mut sender, conn) = match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
        TokioIo::new(stream),
    )
    .await
    {
        Ok(pair) => pair,
        Err(error) => return Outcome::fail(format!("HTTP error: {error}")),
    };
    // The connection task ends with this probe (dropped or aborted below).
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = http::Request::get(check.path.as_str())
        .header(http::header::HOST, check.target.as_str())
        .header(http::header::USER_AGENT, "agent-registry-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new());
    let outcome = match request {
        Err(_) => Outcome::fail("bad request path"),
        Ok(request) => match sender.send_request(request).await {
            // Only the status line counts; the body is never read.
            Ok(response) => {
                let status = response.status();
                let output = format!("HTTP {}", status.as_u16());
                if status.is_success() {
                    Outcome::pass(output)
                } else {
                    Outcome::fail(output)
                }
            }
            Err(error) => Outcome::fail(format!("HTTP error: {error}")),
        },
    };
    conn.abort();
    outcome
}

/// Hands tonic the one connection the probe opened (to the address already
/// checked against the deny list).
struct OneConnection(Option<TcpStream>);

impl tower_service::Service<http::Uri> for OneConnection {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Ready<io::Result<TokioIo<TcpStream>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        std::future::ready(
            self.0
                .take()
                .map(TokioIo::new)
                .ok_or_else(|| io::Error::other("probe connection already used")),
        )
    }
}

async fn grpc(stream: TcpStream, check: &HealthCheck) -> Outcome {
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{}", check.target))
    {
        Ok(endpoint) => endpoint,
        Err(_) => return Outcome::fail("bad target"),
    };
    let channel = match endpoint
        .connect_with_connector(OneConnection(Some(stream)))
        .await
    {
        Ok(channel) => channel,
        Err(error) => return Outcome::fail(format!("gRPC error: {error}")),
    };
    let request = HealthCheckRequest {
        service: check.path.clone(),
    };
    match HealthClient::new(channel).check(request).await {
        Ok(response) => {
            let status = response.into_inner().status;
            let name = ServingStatus::try_from(status)
                .map(|s| s.as_str_name().to_owned())
                .unwrap_or_else(|_| format!("status {status}"));
            if status == ServingStatus::Serving as i32 {
                Outcome::pass(name)
            } else {
                Outcome::fail(name)
            }
        }
        Err(status) => Outcome::fail(format!("gRPC {}", crate::convert::code_name(status.code()))),
    }
}
