//! The accept loop of the gRPC port and of the HTTP/JSON port (BEHAVIOUR.md
//! §9, §12): bounds the open connections (`--max-connections`, one budget
//! for both ports: beyond, a new connection is closed at once), gives each
//! new one [`crate::config::Limits::handshake_timeout`] to complete its TLS
//! handshake (when TLS is on, with the configuration current at that
//! moment) and to send its first bytes (the HTTP/2 connection preface on
//! the gRPC port, the start of a request on the HTTP port), and hands the
//! server only connections that did. A connection that sends nothing
//! therefore holds a slot for the handshake timeout at most.
//!
//! Each connection carries its [`PeerInfo`] (peer address, and the identity
//! of a verified client certificate) into every request's extensions.
//!
//! Depends on: auth::tls, domain (Identity), tonic's `Connected`.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use prometheus::IntCounterVec;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinSet,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::{
    auth::{reload::Reloadable, tls::certificate_identity},
    domain::Identity,
};

/// The HTTP/2 client connection preface (RFC 9113 §3.4): the most any
/// port waits for before handing a connection over.
const PREFACE_LEN: usize = 24;

/// Connections handed over but not yet taken by the server.
const HANDOFF_QUEUE: usize = 64;

/// Idle time before TCP keepalive probes start.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a request knows about its connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// What its client certificate says, when it presented one.
    pub certificate: PeerCertificate,
}

/// The client certificate of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerCertificate {
    /// None was asked for or presented.
    None,
    /// Verified, naming this identity.
    Named(Identity),
    /// Verified, but with neither a `spiffe://` URI SAN nor a usable CN.
    Unnamed,
}

/// A byte stream of either kind.
trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// What a port speaks, hence what its handshake waits for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2 only (ALPN `h2`), the whole connection preface.
    Grpc,
    /// The HTTP/JSON API: HTTP/1.1 or HTTP/2 (ALPN `h2`, `http/1.1`), the
    /// first byte of a request.
    Http,
}

impl Protocol {
    /// Bytes a connection must send within the handshake timeout.
    fn preface_len(self) -> usize {
        match self {
            Self::Grpc => PREFACE_LEN,
            Self::Http => 1,
        }
    }

    /// The TLS configuration of this port, from the served one (gRPC's).
    fn tls_config(self, served: Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
        match self {
            Self::Grpc => served,
            Self::Http => {
                let mut config = (*served).clone();
                config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                Arc::new(config)
            }
        }
    }
}

/// One accepted connection, past its handshakes.
pub struct Conn {
    /// The first bytes already read, replayed before the rest of the stream.
    preface: [u8; PREFACE_LEN],
    /// How many bytes of `preface` were read.
    read: usize,
    /// How much of `preface` has been replayed.
    replayed: usize,
    io: Box<dyn ByteStream>,
    info: PeerInfo,
    /// Holds one of the `--max-connections` slots while the connection is
    /// open.
    _slot: OwnedSemaphorePermit,
}

/// How [`incoming`] accepts.
pub struct Accept {
    /// TLS configuration, swapped on reload; `None` = plaintext.
    pub tls: Option<Arc<Reloadable<rustls::ServerConfig>>>,
    /// The `--max-connections` slots, shared by every port.
    pub slots: Arc<Semaphore>,
    /// Time allowed for the TLS handshake and the first bytes.
    pub handshake_timeout: Duration,
    /// What the port speaks.
    pub protocol: Protocol,
    /// Counts refused connections (`limit="max_connections"` and
    /// `limit="handshake"`).
    pub limited: IntCounterVec,
}

/// The connections of `listener`, past their handshakes, until `stop`.
pub fn incoming(
    listener: TcpListener,
    accept: Accept,
    stop: CancellationToken,
) -> (
    ReceiverStream<io::Result<Conn>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(HANDOFF_QUEUE);
    let task = tokio::spawn(accept_loop(listener, accept, tx, stop));
    (ReceiverStream::new(rx), task)
}

async fn accept_loop(
    listener: TcpListener,
    accept: Accept,
    tx: mpsc::Sender<io::Result<Conn>>,
    stop: CancellationToken,
) {
    // The port's TLS configuration, derived again when a reload swaps the
    // served one: (served, derived).
    let mut tls_cache: Option<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)> = None;
    // Handshakes in progress; finished ones are reaped as we go, the rest
    // are aborted when the loop ends.
    let mut handshakes = JoinSet::new();
    loop {
        while handshakes.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = accept.slots.clone().try_acquire_owned() else {
            accept.limited.with_label_values(&["max_connections"]).inc();
            tracing::debug!(%remote, "connection refused: --max-connections reached");
            drop(stream);
            continue;
        };
        // Small responses must not wait for delayed ACKs (Nagle); dead
        // peers are noticed by TCP keepalive too, not only HTTP/2 pings.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        if let Err(error) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%error, "cannot set TCP keepalive");
        }
        let tls = accept.tls.as_ref().map(|tls| {
            let served = tls.get();
            match &tls_cache {
                Some((seen, derived)) if Arc::ptr_eq(seen, &served) => derived.clone(),
                _ => {
                    let derived = accept.protocol.tls_config(served.clone());
                    tls_cache = Some((served, derived.clone()));
                    derived
                }
            }
        });
        let preface_len = accept.protocol.preface_len();
        let timeout = accept.handshake_timeout;
        let limited = accept.limited.clone();
        let tx = tx.clone();
        handshakes.spawn(async move {
            let handshake = handshake(stream, remote, tls, preface_len, slot);
            match tokio::time::timeout(timeout, handshake).await {
                Ok(Ok(conn)) => {
                    // The server stopped taking connections: nothing to do.
                    let _ = tx.send(Ok(conn)).await;
                }
                Ok(Err(error)) => tracing::debug!(%remote, %error, "handshake failed"),
                Err(_) => {
                    limited.with_label_values(&["handshake"]).inc();
                    tracing::debug!(%remote, "handshake timed out; connection closed");
                }
            }
        });
    }
}

/// TLS (when configured), then the first `preface_len` bytes.
async fn handshake(
    stream: TcpStream,
    remote: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    preface_len: usize,
    slot: OwnedSemaphorePermit,
) -> io::Result<Conn> {
    let (mut io, certificate): (Box<dyn ByteStream>, _) = match tls {
        None => (Box::new(stream), PeerCertificate::None),
        Some(config) => {
            let tls = tokio_rustls::TlsAcceptor::from(config)
                .accept(stream)
                .await?;
            let certificate = match tls.get_ref().1.peer_certificates() {
                Some([leaf, ..]) => match certificate_identity(leaf) {
                    Some(identity) => PeerCertificate::Named(identity),
                    None => PeerCertificate::Unnamed,
                },
                _ => PeerCertificate::None,
            };
            (Box::new(tls), certificate)
        }
    };
    let mut preface = [0u8; PREFACE_LEN];
    let read = preface_len.min(PREFACE_LEN);
    io.read_exact(&mut preface[..read]).await?;
    Ok(Conn {
        preface,
        read,
        replayed: 0,
        io,
        info: PeerInfo {
            remote,
            certificate,
        },
        _slot: slot,
    })
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replayed < this.read {
            let rest = &this.preface[this.replayed..this.read];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
