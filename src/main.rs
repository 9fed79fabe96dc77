//! `agent-registry`: the server binary. Parses the configuration (exit 2 on
//! a bad value), installs logging, serves until SIGTERM or SIGINT.

use std::process::ExitCode;

use agent_registry::{
    config::{Config, LogFormat},
    server, signal,
};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc's allocator: under the view's churn of small
/// records glibc spent up to half of a ListAgents call in `_int_malloc` and
/// `malloc_consolidate` (README, Benchmarks).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let settings = match config.settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    install_logging(settings.log_format);
    // rediss:// uses rustls; name its crypto provider once for the process.
    // An error means one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let running = match server::start(settings).await {
        Ok(running) => running,
        Err(error @ server::StartError::Config { .. }) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
        Err(error) => {
            tracing::error!(%error, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let token = running.shutdown_token();
    tokio::spawn(async move {
        signal::shutdown_requested().await;
        tracing::info!("shutdown requested");
        token.cancel();
    });
    running.wait().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn install_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
