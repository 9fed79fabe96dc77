//! An agent built on the SDK: registers, heartbeats in the background,
//! reports telemetry, prints its notifications, and deregisters on Ctrl-C.
//!
//! `make run` in one terminal, then `cargo run --example agent` (try
//! `registryctl notify <id> --message hello` from a third one).

use std::time::Duration;

use agent_registry::{
    client::{AgentSession, RegistryClient},
    pb,
};
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint =
        std::env::var("REGISTRY_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    // Lazy: the agent starts even while the registry is down and retries.
    let client = RegistryClient::connect_lazy(endpoint)?;
    let mut session = AgentSession::start(
        client,
        pb::RegisterRequest {
            agent_type: pb::AgentType::Worker as i32,
            capabilities: vec!["python".into(), "gpu".into()],
            endpoint: "127.0.0.1:7000".into(),
            ttl_seconds: 15,
            ..Default::default()
        },
    )
    .await?;
    eprintln!("registered as {}", session.agent_id());

    let mut notifications = session.notifications().ok_or("notifications taken")?;
    let telemetry = session.telemetry();
    let mut state = session.state();
    let mut work = tokio::time::interval(Duration::from_secs(2));
    let (mut total, mut failed) = (0i64, 0i64);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            Some(n) = notifications.next() => {
                eprintln!("notification {} [{}]: {}", n.notification_id, n.notification_type, n.message);
            }
            Ok(()) = state.changed() => {
                let s = state.borrow().clone();
                eprintln!("session: status {:?}, connected {}, registrations {}", s.status, s.connected, s.registrations);
            }
            _ = work.tick() => {
                // Pretend to work: one execution in ten fails.
                total += 1;
                if total % 10 == 0 {
                    failed += 1;
                }
                telemetry.set(pb::AgentTelemetry {
                    success_rate: (total - failed) as f64 / total as f64,
                    total_executions: total,
                    failed_executions: failed,
                    avg_duration_ms: 120,
                    ..Default::default()
                });
            }
        }
    }
    session.shutdown().await?;
    eprintln!("deregistered");
    Ok(())
}
