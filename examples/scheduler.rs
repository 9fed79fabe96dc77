//! A scheduler built on the SDK: keeps a local, watch-fed view of the agents
//! and picks one per task without calling the registry each time.
//!
//! `make run`, `cargo run --example agent` (one or more), then
//! `cargo run --example scheduler`.

use std::time::Duration;

use agent_registry::{
    client::{DiscoveryCache, RegistryClient},
    pb,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint =
        std::env::var("REGISTRY_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let client = RegistryClient::connect_lazy(endpoint)?;
    let cache = DiscoveryCache::start(
        client,
        pb::WatchAgentsRequest {
            capabilities: vec!["python".into()],
            ..Default::default()
        },
    );
    if !cache.wait_synced(Duration::from_secs(10)).await {
        eprintln!("registry not reachable yet; picking from whatever arrives");
    }
    let mut tasks = tokio::time::interval(Duration::from_secs(1));
    for task in 0u64.. {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tasks.tick() => {}
        }
        match cache.pick(&["python"], pb::DiscoveryStrategy::RoundRobin) {
            Some(agent) => eprintln!(
                "task {task} → {} at {} ({} agents cached, revision {})",
                agent.agent_id,
                agent.endpoint,
                cache.agents().len(),
                cache.revision()
            ),
            None => eprintln!("task {task}: no healthy python agent"),
        }
    }
    cache.stop().await;
    Ok(())
}
