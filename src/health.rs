//! `grpc.health.v1.Health` for `""` (the whole server) and
//! `neural_hive.service_registry.ServiceRegistry`, on tonic-health's
//! generated service. One status serves both names: SERVING while the store
//! answers, this replica's view follows it, and the server is not shutting
//! down. Unlike the stock reporter, `Watch` streams end with UNAVAILABLE on
//! shutdown (as every stream of the server does), so they never hold the
//! drain back.
//!
//! Depends on: tonic-health (generated code), pb (service name).

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, server::NamedService};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_check_response::ServingStatus,
    health_server::{Health, HealthServer},
};

use crate::{
    pb::service_registry_server::ServiceRegistryServer,
    service::{ResponseStream, status},
};

/// The names the health service answers for.
fn known(service: &str) -> bool {
    // The name does not depend on the service's type parameter.
    service.is_empty() || service == <ServiceRegistryServer<()> as NamedService>::NAME
}

/// Sets the serving status; cheap to clone.
#[derive(Debug, Clone)]
pub struct HealthStatus(watch::Sender<ServingStatus>);

impl HealthStatus {
    /// Publishes whether the server is serving (watchers see changes).
    pub fn set(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.0.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }
}

/// The health service.
#[derive(Debug)]
pub struct HealthService {
    status: watch::Receiver<ServingStatus>,
    shutdown: CancellationToken,
}

/// A health service (NOT_SERVING until told otherwise) and its status handle.
pub fn health_service(shutdown: CancellationToken) -> (HealthStatus, HealthServer<HealthService>) {
    let (tx, status) = watch::channel(ServingStatus::NotServing);
    (
        HealthStatus(tx),
        HealthServer::new(HealthService { status, shutdown }),
    )
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if !known(&request.get_ref().service) {
            return Err(status::unknown_health_service());
        }
        Ok(Response::new(response(*self.status.borrow())))
    }

    type WatchStream = ResponseStream<HealthCheckResponse>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let known = known(&request.get_ref().service);
        let mut status = self.status.clone();
        let shutdown = self.shutdown.clone();
        Ok(Response::new(Box::pin(async_stream::stream! {
            if !known {
                // The protocol: report SERVICE_UNKNOWN and keep the stream open.
                yield Ok(response(ServingStatus::ServiceUnknown));
                shutdown.cancelled().await;
                yield Err(status::shutting_down());
                return;
            }
            let current = *status.borrow_and_update();
            yield Ok(response(current));
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        // Watchers learn NOT_SERVING first, then the stream ends.
                        yield Ok(response(ServingStatus::NotServing));
                        yield Err(status::shutting_down());
                        return;
                    }
                    changed = status.changed() => {
                        if changed.is_err() {
                            yield Err(status::shutting_down());
                            return;
                        }
                        let current = *status.borrow_and_update();
                        yield Ok(response(current));
                    }
                }
            }
        })))
    }
}
