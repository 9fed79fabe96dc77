//! The ceiling: the same tonic service, storing nothing. Register answers a
//! fresh id and token, Heartbeat succeeds, DiscoverAgents answers a
//! prebuilt reply of `max_results` agents and ListAgents a fixed page;
//! WatchAgents fans the changes of Register, Heartbeat (with telemetry) and
//! Deregister out naively, through a tokio broadcast channel, each watcher
//! cloning and encoding its own copy. What the registry costs is its ratio
//! to this.
//!
//! Served by this binary re-executed with [`crate::procs::CEILING_ENV`]; it
//! exits when its parent's end of stdin closes.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use agent_registry::pb::{
    self,
    service_registry_server::{ServiceRegistry, ServiceRegistryServer},
};
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Response, Status};

use crate::population::Population;

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::AgentChangeEvent, Status>> + Send>>;
type NotificationStream = Pin<Box<dyn Stream<Item = Result<pb::AgentNotification, Status>> + Send>>;

/// Agents in the prebuilt replies.
const PAGE: usize = 100;

struct Ceiling {
    events: broadcast::Sender<pb::AgentChangeEvent>,
    revision: AtomicU64,
    /// Agents shaped like the bench's, for replies and events.
    templates: Vec<pb::AgentInfo>,
    discover: pb::DiscoverResponse,
    page: pb::ListAgentsResponse,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn info_from(id: String, r: pb::RegisterRequest, revision: u64) -> pb::AgentInfo {
    let at = now();
    pb::AgentInfo {
        agent_id: id,
        agent_type: r.agent_type,
        capabilities: r.capabilities,
        metadata: r.metadata,
        telemetry: r.telemetry,
        status: pb::AgentStatus::Healthy as i32,
        registered_at: at,
        last_seen: at,
        namespace: r.namespace,
        cluster: r.cluster,
        version: r.version,
        schema_version: 1,
        endpoint: r.endpoint,
        expires_at: at + i64::from(r.ttl_seconds),
        revision,
        health_check: None,
        health_output: String::new(),
    }
}

impl Ceiling {
    fn new() -> Self {
        let population = Population::generate(PAGE, 7);
        let templates: Vec<pb::AgentInfo> = (0..PAGE)
            .map(|i| {
                info_from(
                    uuid::Uuid::new_v4().to_string(),
                    population.register_request(i),
                    i as u64 + 1,
                )
            })
            .collect();
        let (events, _) = broadcast::channel(4096);
        Self {
            events,
            revision: AtomicU64::new(0),
            discover: pb::DiscoverResponse {
                agents: templates[..5].to_vec(),
                ranked: true,
            },
            page: pb::ListAgentsResponse {
                agents: templates.clone(),
                next_page_token: String::new(),
            },
            templates,
        }
    }

    /// Broadcasts a change of `agent` (when anyone watches).
    fn publish(
        &self,
        kind: pb::agent_change_event::EventType,
        agent: impl FnOnce(u64) -> pb::AgentInfo,
    ) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let revision = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.events.send(pb::AgentChangeEvent {
            event_type: kind as i32,
            agent: Some(agent(revision)),
            timestamp: now(),
            revision,
            previous_status: 0,
        });
    }

    fn template(&self, id: String, revision: u64) -> pb::AgentInfo {
        let mut agent = self.templates[revision as usize % PAGE].clone();
        agent.agent_id = id;
        agent.revision = revision;
        agent
    }
}

#[tonic::async_trait]
impl ServiceRegistry for Ceiling {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        let id = uuid::Uuid::new_v4().to_string();
        let ttl = request.ttl_seconds;
        self.publish(pb::agent_change_event::EventType::Registered, |revision| {
            info_from(id.clone(), request, revision)
        });
        Ok(Response::new(pb::RegisterResponse {
            agent_id: id,
            registration_token: uuid::Uuid::new_v4().simple().to_string(),
            registered_at: now(),
            ttl_seconds: ttl,
            heartbeat_interval_seconds: (ttl / 3).max(1),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        if let Some(telemetry) = request.telemetry {
            self.publish(pb::agent_change_event::EventType::Updated, |revision| {
                let mut agent = self.template(request.agent_id, revision);
                agent.telemetry = Some(telemetry);
                agent
            });
        }
        let at = now();
        Ok(Response::new(pb::HeartbeatResponse {
            status: pb::AgentStatus::Healthy as i32,
            last_seen: at,
            expires_at: at + 3600,
        }))
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        let id = request.into_inner().agent_id;
        self.publish(
            pb::agent_change_event::EventType::Deregistered,
            |revision| self.template(id, revision),
        );
        Ok(Response::new(pb::DeregisterResponse { success: true }))
    }

    async fn discover_agents(
        &self,
        request: Request<pb::DiscoverRequest>,
    ) -> Result<Response<pb::DiscoverResponse>, Status> {
        let wanted = match request.get_ref().max_results {
            0 => 5,
            n => n.clamp(1, 1000) as usize,
        };
        if wanted == self.discover.agents.len() {
            return Ok(Response::new(self.discover.clone()));
        }
        Ok(Response::new(pb::DiscoverResponse {
            agents: (0..wanted)
                .map(|i| self.templates[i % PAGE].clone())
                .collect(),
            ranked: true,
        }))
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::GetAgentResponse>, Status> {
        let mut agent = self.templates[0].clone();
        agent.agent_id = request.into_inner().agent_id;
        Ok(Response::new(pb::GetAgentResponse { agent: Some(agent) }))
    }

    async fn list_agents(
        &self,
        _request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        Ok(Response::new(self.page.clone()))
    }

    type WatchAgentsStream = EventStream;

    async fn watch_agents(
        &self,
        request: Request<pb::WatchAgentsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let live = BroadcastStream::new(self.events.subscribe()).filter_map(|e| e.ok().map(Ok));
        if request.get_ref().send_initial_snapshot {
            let synced = pb::AgentChangeEvent {
                event_type: pb::agent_change_event::EventType::Synced as i32,
                timestamp: now(),
                revision: self.revision.load(Ordering::Relaxed),
                ..Default::default()
            };
            return Ok(Response::new(Box::pin(
                tokio_stream::once(Ok(synced)).chain(live),
            )));
        }
        Ok(Response::new(Box::pin(live)))
    }

    async fn notify_agent(
        &self,
        _request: Request<pb::NotifyAgentRequest>,
    ) -> Result<Response<pb::NotifyAgentResponse>, Status> {
        Ok(Response::new(pb::NotifyAgentResponse {
            success: true,
            error: String::new(),
            notification_id: "1".into(),
            delivered: false,
        }))
    }

    type SubscribeNotificationsStream = NotificationStream;

    async fn subscribe_notifications(
        &self,
        _request: Request<pb::SubscribeNotificationsRequest>,
    ) -> Result<Response<NotificationStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::pending())))
    }
}

/// Serves the ceiling at `addr` until stdin closes (the bench is gone).
pub fn main(addr: &str) -> std::process::ExitCode {
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("ceiling: bad address {addr:?}");
        return std::process::ExitCode::from(2);
    };
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ceiling: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(
        tonic::transport::Server::builder()
            .max_concurrent_streams(256)
            .add_service(ServiceRegistryServer::new(Ceiling::new()))
            .serve(addr),
    );
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ceiling: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
