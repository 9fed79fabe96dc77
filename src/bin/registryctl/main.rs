//! `registryctl`: the command-line client of the agent registry, in the
//! spirit of `etcdctl` and `consul`.
//!
//! ```text
//! registryctl register -c python -c gpu --ttl 30          # prints the id and token
//! registryctl register -c python --keep-alive             # heartbeats until Ctrl-C, then deregisters
//! registryctl list -o json                                # one JSON object per agent per line
//! registryctl discover -c gpu --strategy round-robin --max 3
//! registryctl watch --snapshot                            # streams changes until Ctrl-C
//! registryctl watch --since 1733000000000042 --bookmarks  # resume after a revision
//! registryctl notify <agent-id> --message "drain" --type CONTROL
//! registryctl subscribe <agent-id> --token <token>        # the agent's notifications
//! registryctl health                                      # exit 0 only when SERVING
//! ```
//!
//! Global options, accepted anywhere: `--endpoint` (env `REGISTRY_ENDPOINT`,
//! default `http://127.0.0.1:50051`), `--timeout` seconds per call (default
//! 5) and `-o/--output table|json`. (The agent's own address, on `register`,
//! is `--agent-endpoint`.)
//! TLS: `--tls-ca`, and for mTLS `--tls-cert`/`--tls-key` (env
//! `REGISTRY_TLS_CA`, `REGISTRY_TLS_CERT`, `REGISTRY_TLS_KEY`); a JWT-SVID
//! from `--bearer-token` or `REGISTRY_BEARER_TOKEN` (`health` speaks
//! plaintext only).
//! Tokens come from `--token` or the environment variable `REGISTRY_TOKEN`
//! (a token may start with `-`: `--token -Bx...` takes it as the value).
//!
//! Output: `table` is for people (a header row and aligned columns, times
//! relative to now); `json` is for scripts (one JSON object per line: one
//! per agent for lists, one per event or notification for streams; proto
//! field names, enums by name).
//!
//! Exit status: 0 on success; 1 when the registry refused a call (the
//! message `error: <CODE>: <message>` goes to stderr), when a stream ended
//! with an error, or when `health` is not SERVING; 2 for a usage error.
//!
//! Built on the SDK in `agent_registry::client`:
//! [`RegistryClient`](agent_registry::client::RegistryClient) for the calls
//! and [`AgentSession`](agent_registry::client::AgentSession) for
//! `register --keep-alive`.
//!
//! Layout: [`args`] (the command line), [`commands`] (one function per
//! subcommand), [`output`] (tables and JSON lines).

// The command-line client is the one place of the project whose job is to
// print: its output (stdout) and its errors (stderr) are its interface. The
// library and server never print (they log through `tracing`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod args;
mod commands;
mod output;

use std::{io, process::ExitCode};

use clap::Parser;

use crate::{
    args::Cli,
    commands::{Failure, Settings, normalize_endpoint, run},
    output::Printer,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors exit with status 2 here (clap), `--help` with 0.
    let cli = Cli::parse();
    let out = Printer::new(cli.output);
    let security = match security(&cli) {
        Ok(security) => security,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let tls = security.ca_pem.is_some() || security.identity.is_some();
    let settings = Settings {
        endpoint: normalize_endpoint(&cli.endpoint, tls),
        timeout: cli.timeout,
        security,
    };
    match run(cli.command, &settings, &out).await {
        Ok(code) => code,
        Err(Failure::Call(error)) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
        Err(Failure::Output(error)) if error.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(Failure::Output(error)) => {
            eprintln!("error: cannot write the output: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The TLS and identity options, with the files read.
fn security(cli: &Cli) -> Result<agent_registry::client::ClientSecurity, String> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let identity = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok(agent_registry::client::ClientSecurity {
        ca_pem: cli.tls_ca.as_deref().map(read).transpose()?,
        identity,
        server_name: cli.tls_server_name.clone(),
        bearer: cli.bearer_token.clone(),
    })
}
