//! Registers an agent, discovers it by capability, heartbeats and
//! deregisters it. Run `make run` in one terminal, then
//! `cargo run --example quickstart` in another.

use agent_registry::pb::{
    self, DeregisterRequest, DiscoverRequest, HeartbeatRequest, RegisterRequest,
    service_registry_client::ServiceRegistryClient,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint =
        std::env::var("REGISTRY_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let mut client = ServiceRegistryClient::connect(endpoint).await?;

    let registered = client
        .register(RegisterRequest {
            agent_type: pb::AgentType::Worker as i32,
            capabilities: vec!["python".into(), "gpu".into()],
            endpoint: "127.0.0.1:7000".into(),
            ttl_seconds: 30,
            ..Default::default()
        })
        .await?
        .into_inner();
    eprintln!(
        "registered {} (heartbeat every {} s)",
        registered.agent_id, registered.heartbeat_interval_seconds
    );

    let found = client
        .discover_agents(DiscoverRequest {
            capabilities: vec!["gpu".into()],
            ..Default::default()
        })
        .await?
        .into_inner();
    for agent in &found.agents {
        eprintln!("discovered {} at {}", agent.agent_id, agent.endpoint);
    }

    let beat = client
        .heartbeat(HeartbeatRequest {
            agent_id: registered.agent_id.clone(),
            registration_token: registered.registration_token.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    eprintln!(
        "heartbeat: status {:?}, expires at {}",
        beat.status(),
        beat.expires_at
    );

    client
        .deregister(DeregisterRequest {
            agent_id: registered.agent_id,
            registration_token: registered.registration_token,
        })
        .await?;
    eprintln!("deregistered");
    Ok(())
}
