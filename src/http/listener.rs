//! The HTTP/JSON port's connections: accepted by the same loop as the gRPC
//! port's ([`crate::auth::listener`]: TLS with the served certificate and
//! its reloads, mTLS, the handshake timeout, the shared `--max-connections`
//! budget), then served by axum (HTTP/1.1, or HTTP/2 by ALPN or prior
//! knowledge) with each connection's [`PeerInfo`] in every request: the
//! identity of its client certificate and the peer address anonymous
//! callers are rate-limited by (BEHAVIOUR.md §9, §12).
//!
//! Depends on: auth::listener, api, metrics, axum.

use std::{io, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::connect_info::Connected,
    serve::{IncomingStream, Listener},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;

use crate::{
    api::Registry,
    auth::{
        Security,
        listener::{self, Accept, Conn, PeerInfo},
    },
    metrics::Metrics,
    store::Store,
};

/// The connections of the HTTP port, past their handshakes.
pub struct Incoming {
    conns: ReceiverStream<io::Result<Conn>>,
    local: SocketAddr,
}

impl Listener for Incoming {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            match self.conns.next().await {
                Some(Ok(conn)) => {
                    let remote = peer_of(&conn).remote;
                    return (conn, remote);
                }
                Some(Err(error)) => tracing::debug!(%error, "HTTP connection failed"),
                // The accept loop stopped (shutdown): nothing more comes,
                // and the server is ending on the same token.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// What a connection of either port says about its peer.
fn peer_of(conn: &Conn) -> PeerInfo {
    tonic::transport::server::Connected::connect_info(conn)
}

impl Connected<IncomingStream<'_, Incoming>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, Incoming>) -> Self {
        peer_of(stream.io())
    }
}

/// Serves every route of §12 (over `registry`, guarded by `security`) on
/// `listener`, bound at `local`, accepting as `accept` says, until
/// `shutdown`. Returns the accept loop's and the server's tasks.
pub fn spawn<S: Store>(
    (listener, local): (TcpListener, SocketAddr),
    accept: Accept,
    registry: Arc<Registry<S>>,
    metrics: Arc<Metrics>,
    security: Arc<Security>,
    shutdown: CancellationToken,
) -> [JoinHandle<()>; 2] {
    let router = super::router(registry, metrics, security);
    let (conns, accept_loop) = listener::incoming(listener, accept, shutdown.clone());
    let incoming = Incoming { conns, local };
    [accept_loop, tokio::spawn(serve(incoming, router, shutdown))]
}

/// Serves `router` until `shutdown`, then lets calls in flight finish for
/// at most [`crate::server::DRAIN_GRACE`] (watch streams end at once: they
/// follow the shutdown token).
async fn serve(incoming: Incoming, router: Router, shutdown: CancellationToken) {
    let app = router.into_make_service_with_connect_info::<PeerInfo>();
    let server = axum::serve(incoming, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    crate::server::drain("HTTP API", server, &shutdown).await;
}
