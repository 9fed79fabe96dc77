//! The composition root: builds the store named by the settings, this
//! replica's view, mailboxes, feed pump, reaper, health reporting, the
//! metrics HTTP server, the HTTP/JSON API ([`http::spawn`]), and serves
//! gRPC (registry, health, reflection) until told to stop. The only file
//! that names a concrete store.
//!
//! Shutdown, in order: health and `/readyz` turn not serving, the gRPC
//! server stops accepting calls and ends every stream with UNAVAILABLE,
//! in-flight unary calls finish (at most [`DRAIN_GRACE`]), then the
//! background tasks stop.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{self, AdminState, Readiness},
    api::{Policy, Registry},
    auth::{
        Security,
        layer::GuardLayer,
        listener::{self, Accept, Protocol},
        reload::{self, Source},
    },
    config::{RedisTopology, Settings, StoreSettings},
    domain::{
        check::DenyList,
        clock::{Clock, SystemClock},
    },
    feed,
    health::{self, HealthStatus},
    http,
    mailbox::Mailboxes,
    metrics::{Gauges, Metrics},
    pb::{self, service_registry_server::ServiceRegistryServer},
    prober::{self, ProberConfig},
    reaper,
    service::{RegistryService, layer::ObserveLayer},
    store::{
        MemoryStore, RedisConfig, RedisStore, Store,
        redis::{Endpoints, SentinelEndpoints},
    },
    view::View,
};

/// How long start-up waits for the view's first load from the store.
const INITIAL_SYNC_WAIT: Duration = Duration::from_secs(2);
/// How long in-flight calls may take to finish after shutdown begins.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// How often health and readiness are re-evaluated.
const HEALTH_EVERY: Duration = Duration::from_millis(250);

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
    metrics_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// The bound gRPC address (the real port when 0 was asked for).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP (metrics, probes) address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The bound HTTP/JSON API and console address (`None` when off).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// A token that starts the shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops the server and waits until it has.
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

/// Everything `serve` runs that does not depend on the store.
struct Common {
    view: Arc<View>,
    mailboxes: Arc<Mailboxes>,
    metrics: Arc<Metrics>,
    settings: Settings,
    grpc: TcpListener,
    admin: TcpListener,
    /// The HTTP/JSON API's listener and its address, when it is on.
    http: Option<(TcpListener, SocketAddr)>,
    shutdown: CancellationToken,
    /// Stops the background tasks once the server has drained.
    background: CancellationToken,
    /// Identity, policy and limits.
    security: Arc<Security>,
    /// Credential and policy files to reload when they change.
    reload: Vec<Source>,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// Binds the listeners and starts serving in the background.
///
/// # Errors
/// [`StartError`] when a port cannot be bound or a setting is unusable.
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    let (grpc, grpc_addr) = bind(settings.grpc_addr).await?;
    let (admin, metrics_addr) = bind(settings.metrics_addr).await?;
    let http = match settings.http_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let http_addr = http.as_ref().map(|(_, bound)| *bound);
    let metrics = Arc::new(Metrics::new().expect("metric names are distinct constants"));
    let (security, reload) =
        Security::load(&settings.security, metrics.clone()).map_err(|e| StartError::Config {
            setting: e.setting,
            reason: e.reason,
        })?;
    let shutdown = CancellationToken::new();
    let background = CancellationToken::new();
    let view = View::new();
    let mailboxes = Mailboxes::new();
    let common = Common {
        view: view.clone(),
        mailboxes,
        metrics,
        settings: settings.clone(),
        grpc,
        admin,
        http,
        shutdown: shutdown.clone(),
        background: background.clone(),
        security: Arc::new(security),
        reload,
    };
    let task = match &settings.store {
        StoreSettings::Memory => {
            let store =
                MemoryStore::with_history(settings.ttl.removal_grace, settings.watch_history);
            tokio::spawn(serve(Arc::new(store), common, Vec::new()))
        }
        StoreSettings::Redis {
            topology,
            prefix,
            wait_replicas,
        } => {
            let (endpoints, setting) = redis_endpoints(topology);
            let config = RedisConfig {
                endpoints,
                prefix: prefix.clone(),
                removal_grace: settings.ttl.removal_grace,
                history: settings.watch_history,
                wait_replicas: *wait_replicas,
            };
            let store = RedisStore::new(&config).map_err(|e| StartError::Config {
                setting,
                reason: e.to_string(),
            })?;
            let pubsub = tokio::spawn(store.run_listener(background));
            tokio::spawn(serve(Arc::new(store), common, vec![pubsub]))
        }
    };
    // Give the view a moment to load, so the first calls see the registry;
    // a store that is down does not hold the start-up back beyond this.
    if !view.wait_synced(INITIAL_SYNC_WAIT).await {
        tracing::warn!("store not reachable yet; not serving until it is");
    }
    settings.legacy.log();
    tracing::info!(
        grpc = %grpc_addr,
        metrics = %metrics_addr,
        http = %http_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        settings = ?settings,
        "agent registry started"
    );
    Ok(Running {
        grpc_addr,
        metrics_addr,
        http_addr,
        shutdown,
        task,
    })
}

/// The store's view of a Redis topology, and the setting that named it.
fn redis_endpoints(topology: &RedisTopology) -> (Endpoints, &'static str) {
    match topology {
        RedisTopology::Url(url) => (Endpoints::Url(url.clone()), "--redis-url (REDIS_URL)"),
        RedisTopology::Sentinel {
            sentinels,
            master,
            username,
            password,
            tls,
        } => (
            Endpoints::Sentinel(SentinelEndpoints {
                sentinels: sentinels.clone(),
                master: master.clone(),
                username: username.clone(),
                password: password.clone(),
                tls: *tls,
            }),
            "--redis-sentinels (REDIS_SENTINELS)",
        ),
        RedisTopology::Cluster(nodes) => (
            Endpoints::Cluster(nodes.clone()),
            "--redis-cluster-nodes (REDIS_CLUSTER_NODES)",
        ),
    }
}

/// Serves until shutdown; `others` are store-specific tasks, already
/// spawned, that stop with the background token.
async fn serve<S: Store>(store: Arc<S>, common: Common, others: Vec<JoinHandle<()>>) {
    let Common {
        view,
        mailboxes,
        metrics,
        settings,
        grpc,
        admin,
        http,
        shutdown,
        background,
        security,
        reload,
    } = common;
    let limits = settings.security.limits.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let readiness = Arc::new(Readiness::default());
    let (health, health_service) = health::health_service(shutdown.clone());
    let mut tasks = others;
    tasks.push(tokio::spawn(feed::run(
        store.clone(),
        view.clone(),
        mailboxes.clone(),
        metrics.clone(),
        background.clone(),
    )));
    tasks.push(tokio::spawn(reaper::run(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        background.clone(),
    )));
    tasks.push(tokio::spawn(report_health(
        store.clone(),
        view.clone(),
        health,
        readiness.clone(),
        shutdown.clone(),
        background.clone(),
    )));
    tasks.push(tokio::spawn(reload::watch(
        reload,
        metrics.reload_errors.clone(),
        background.clone(),
    )));
    // Both ports accept alike: the same TLS, handshake timeout and
    // connection budget.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let accept = |protocol| Accept {
        tls: security.tls.clone(),
        slots: slots.clone(),
        handshake_timeout: limits.handshake_timeout,
        limited: metrics.limited.clone(),
        protocol,
    };
    let (incoming, accept_loop) =
        listener::incoming(grpc, accept(Protocol::Grpc), shutdown.clone());
    tasks.push(accept_loop);
    tasks.push(tokio::spawn(admin::serve(
        admin,
        AdminState {
            metrics: metrics.clone(),
            gauges: gauges(view.clone(), mailboxes.clone()),
            readiness,
        },
        background.clone(),
    )));
    let deny = Arc::new(DenyList(settings.health_check_deny.clone()));
    tasks.push(tokio::spawn(prober::run(
        store.clone(),
        view.clone(),
        clock.clone(),
        metrics.clone(),
        ProberConfig {
            concurrency: settings.health_check_concurrency,
            deny: deny.clone(),
        },
        background.clone(),
    )));
    let policy = Policy {
        ttl: settings.ttl,
        require_token: settings.require_token,
        bookmark_interval: settings.bookmark_interval,
        max_agents: limits.max_agents,
        deny,
    };
    let registry = Arc::new(Registry {
        store,
        view,
        mailboxes,
        clock,
        policy,
        shutdown: shutdown.clone(),
    });
    if let Some(bound) = http {
        tasks.extend(http::spawn(
            bound,
            accept(Protocol::Http),
            registry.clone(),
            metrics.clone(),
            security.clone(),
            shutdown.clone(),
        ));
    }
    let service =
        RegistryService::new(registry, &metrics).with_max_response_bytes(limits.max_response_bytes);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the embedded descriptor sets decode");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the embedded descriptor sets decode");
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(limits.max_concurrent_streams);
    if let Some(age) = limits.max_connection_age {
        // GOAWAY at the age; calls in flight finish. No
        // `max_connection_age_grace`: with one, tonic 0.14 skips the
        // graceful GOAWAY and closes the connection at age + grace.
        builder = builder.max_connection_age(age);
    }
    let server = builder
        .layer(ObserveLayer::new(metrics))
        .layer(GuardLayer::new(security))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            ServiceRegistryServer::new(service).max_decoding_message_size(limits.max_message_bytes),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    drain("gRPC", server, &shutdown).await;
    shutdown.cancel();
    background.cancel();
    for task in tasks {
        if let Err(error) = task.await {
            tracing::error!(%error, "background task failed");
        }
    }
}

/// The gauges of `/metrics`, read from this replica's view and mailboxes
/// at scrape time.
fn gauges(view: Arc<View>, mailboxes: Arc<Mailboxes>) -> admin::GaugeSource {
    Arc::new(move || Gauges {
        population: view.population(),
        watchers: view.hub().len(),
        subscribers: mailboxes.total(),
    })
}

/// Runs `server` (which stops taking calls on `shutdown`) until it ends,
/// or until [`DRAIN_GRACE`] after `shutdown` while calls are still running.
pub(crate) async fn drain<E: std::fmt::Display>(
    what: &str,
    server: impl Future<Output = Result<(), E>>,
    shutdown: &CancellationToken,
) {
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_GRACE).await;
    };
    tokio::select! {
        result = server => {
            if let Err(error) = result {
                tracing::error!(%error, "{what} server failed");
            }
        }
        _ = drain_deadline => {
            tracing::warn!(grace = ?DRAIN_GRACE, "{what} calls still running after the drain grace; stopping anyway");
        }
    }
}

/// Keeps gRPC health and `/readyz` in step with whether this replica can
/// serve: store reachable, view current, not shutting down.
async fn report_health<S: Store>(
    store: Arc<S>,
    view: Arc<View>,
    health: HealthStatus,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    let mut last = None;
    let mut tick = tokio::time::interval(HEALTH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => {}
        }
        if shutdown.is_cancelled() {
            readiness.set(false);
            health.set(false);
            tracing::info!("not serving: shutting down");
            return;
        }
        let serving = store.is_available() && view.is_synced();
        if last == Some(serving) {
            continue;
        }
        last = Some(serving);
        readiness.set(serving);
        health.set(serving);
        if serving {
            tracing::info!("serving");
        } else {
            tracing::warn!("not serving: store unreachable or view reloading");
        }
    }
}
