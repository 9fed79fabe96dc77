//! The composition root: builds the store named by the settings, this
//! replica's view, mailboxes, feed pump and reaper, and serves gRPC until
//! told to stop. The only file that names a concrete store.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::{
    config::{Settings, StoreSettings},
    domain::clock::{Clock, SystemClock},
    feed,
    mailbox::Mailboxes,
    pb::service_registry_server::ServiceRegistryServer,
    reaper,
    service::{RegistryService, ServiceParts},
    store::{MemoryStore, RedisConfig, RedisStore, Store},
    view::View,
};

/// How long start-up waits for the view's first load from the store.
const INITIAL_SYNC_WAIT: Duration = Duration::from_secs(2);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A setting is unusable (e.g. a Redis URL that does not parse). The
    /// message starts with the setting's name; the binary exits 2.
    #[error("{setting}: {reason}")]
    Config {
        /// The flag and environment variable at fault.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    grpc_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// The bound gRPC address (the real port when 0 was asked for).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops the server: streams end with UNAVAILABLE, in-flight calls finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the server has stopped (after its token was cancelled).
    pub async fn wait(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "server task failed");
        }
    }
}

/// Binds the listeners and starts serving in the background.
///
/// # Errors
/// [`StartError`] when a port cannot be bound or the store is unsupported.
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    let listener = TcpListener::bind(settings.grpc_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: settings.grpc_addr,
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: settings.grpc_addr,
        source,
    })?;
    let shutdown = CancellationToken::new();
    let view = View::new();
    let task = match &settings.store {
        StoreSettings::Memory => {
            let store = Arc::new(MemoryStore::new(settings.ttl.removal_grace));
            tokio::spawn(serve(
                store,
                view.clone(),
                settings.clone(),
                listener,
                shutdown.clone(),
                Vec::new(),
            ))
        }
        StoreSettings::Redis { url, prefix } => {
            let config = RedisConfig {
                url: url.clone(),
                prefix: prefix.clone(),
                removal_grace: settings.ttl.removal_grace,
            };
            let store = RedisStore::new(&config).map_err(|e| StartError::Config {
                setting: "--redis-url (REDIS_URL)",
                reason: e.to_string(),
            })?;
            let pubsub = tokio::spawn(store.run_listener(shutdown.clone()));
            tokio::spawn(serve(
                Arc::new(store),
                view.clone(),
                settings.clone(),
                listener,
                shutdown.clone(),
                vec![pubsub],
            ))
        }
    };
    // Give the view a moment to load, so the first calls see the registry;
    // a store that is down does not hold the start-up back beyond this.
    if !view.wait_synced(INITIAL_SYNC_WAIT).await {
        tracing::warn!("store not reachable yet; serving stale and retrying");
    }
    tracing::info!(grpc = %grpc_addr, store = ?settings.store, settings = ?settings, "agent registry started");
    Ok(Running {
        grpc_addr,
        shutdown,
        task,
    })
}

/// Serves until `shutdown`, then waits for the background tasks (`others`
/// are store-specific ones, already spawned).
async fn serve<S: Store>(
    store: Arc<S>,
    view: Arc<View>,
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
    others: Vec<JoinHandle<()>>,
) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mailboxes = Mailboxes::new();
    let feed_task = tokio::spawn(feed::run(
        store.clone(),
        view.clone(),
        mailboxes.clone(),
        shutdown.clone(),
    ));
    let reaper_task = tokio::spawn(reaper::run(store.clone(), clock.clone(), shutdown.clone()));
    let service = RegistryService::new(ServiceParts {
        store,
        view,
        mailboxes,
        clock,
        ttl: settings.ttl,
        require_token: settings.require_token,
        shutdown: shutdown.clone(),
    });
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(ServiceRegistryServer::new(service))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener)
                // Small responses must not wait for delayed ACKs (Nagle).
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60))),
            shutdown.clone().cancelled_owned(),
        )
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "gRPC server failed");
    }
    shutdown.cancel();
    for task in [feed_task, reaper_task].into_iter().chain(others) {
        if let Err(error) = task.await {
            tracing::error!(%error, "background task failed");
        }
    }
}
