//! `rediss://`: the registry talks TLS to a TLS-only `redis-server`, trusting
//! a CA of the test's own through `SSL_CERT_FILE` (how a private CA is
//! configured in production too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, process::Command, time::Duration};

use agent_registry::pb;
use common::*;

/// Makes a CA and a server certificate for 127.0.0.1 in `dir`.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl must be installed");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_speaks_tls_to_redis() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let tls_port = free_port();
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let _redis = Child(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--tls-port",
                &tls_port.to_string(),
                "--tls-cert-file",
                &path("server.pem"),
                "--tls-key-file",
                &path("server.key"),
                "--tls-ca-cert-file",
                &path("ca.pem"),
                "--tls-auth-clients",
                "no",
                "--dir",
                dir.path().to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    let port = free_port();
    let _registry = Child(
        Command::new(env!("CARGO_BIN_EXE_agent-registry"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--metrics-port",
                "0",
                "--http-port",
                "0",
                "--store",
                "redis",
                "--redis-url",
                &format!("rediss://127.0.0.1:{tls_port}"),
            ])
            .env("SSL_CERT_FILE", path("ca.pem"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_ready(&endpoint).await;
    let mut client =
        agent_registry::pb::service_registry_client::ServiceRegistryClient::connect(endpoint)
            .await
            .unwrap();
    let registered = client
        .register(register_request(&["tls"]))
        .await
        .expect("register over TLS-backed Redis")
        .into_inner();
    let found = client
        .discover_agents(pb::DiscoverRequest {
            capabilities: vec!["tls".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.agents.len(), 1);
    assert_eq!(found.agents[0].agent_id, registered.agent_id);
    let beat = tokio::time::timeout(
        Duration::from_secs(2),
        client.heartbeat(with_token(
            pb::HeartbeatRequest {
                agent_id: registered.agent_id,
                ..Default::default()
            },
            &registered.registration_token,
        )),
    )
    .await
    .unwrap();
    assert!(beat.is_ok());
}
