//! How many active health check probes per second one replica runs: an
//! in-process registry (memory store, default `--health-check-concurrency`)
//! with N agents whose checks (interval 1 s) target a TCP listener or an
//! HTTP server in the same process, on loopback. Prints the probes counted by
//! `service_registry_health_checks_total` over 10 s.
//!
//! `cargo run --release --example probe_capacity -- tcp 4000`

use std::{net::SocketAddr, time::Duration};

use agent_registry::{
    client::{self, RegistryClient},
    config::Config,
    pb::{self, health_check::Kind},
    server,
};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn probes(metrics: SocketAddr) -> f64 {
    let mut stream = tokio::net::TcpStream::connect(metrics)
        .await
        .expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("response");
    text.lines()
        .filter(|l| l.starts_with("service_registry_health_checks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn target(kind: Kind) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    if kind == Kind::Http {
        let app = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
    } else {
        tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    }
    addr
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = match args.get(1).map(String::as_str) {
        Some("http") => Kind::Http,
        _ => Kind::Tcp,
    };
    let agents: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(2000);
    let addr = target(kind).await;
    let settings = Config::try_parse_from([
        "agent-registry",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--store",
        "memory",
    ])
    .expect("flags")
    .settings()
    .expect("settings");
    let running = server::start(settings).await.expect("server");
    let registry = RegistryClient::connect(format!("http://{}", running.grpc_addr()))
        .await
        .expect("connect");
    for chunk in (0..agents).collect::<Vec<_>>().chunks(64) {
        let calls = chunk.iter().map(|_| {
            let registry = registry.clone();
            let mut check = client::health_check(kind, addr.to_string());
            check.interval_seconds = 1;
            async move {
                registry
                    .register(pb::RegisterRequest {
                        agent_type: pb::AgentType::Worker as i32,
                        capabilities: vec!["probed".into()],
                        ttl_seconds: 60,
                        health_check: Some(check),
                        ..Default::default()
                    })
                    .await
                    .expect("register")
            }
        });
        for call in calls {
            call.await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = probes(running.metrics_addr()).await;
    let start = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = probes(running.metrics_addr()).await;
    let rate = (after - before) / start.elapsed().as_secs_f64();
    eprintln!(
        "{kind:?}: {agents} agents at 1 probe/s each: {rate:.0} probes/s ({:.0} % of demand)",
        100.0 * rate / agents as f64
    );
    running.shutdown().await;
}
