//! The real binary started with nothing but the original service's
//! environment (plus a free metrics port and the loopback address, which a
//! shared test machine needs): a deployment that only swaps the image.

use std::{
    io::Read,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use agent_registry::pb;
use tonic::Code;

use super::{AgentType, LegacyClient, legacy};
use crate::common::{RedisProcess, free_port, register_request, wait_ready, wait_until};

/// A registry child process with exactly `vars` as its environment.
struct Registry {
    addr: SocketAddr,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Registry {
    fn spawn(port: u16, vars: &[(&str, String)]) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_agent-registry"))
            .env_clear()
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .env("SERVICE_REGISTRY_HOST", "127.0.0.1")
            .env("METRICS_PORT", "0")
            .env("HTTP_PORT", "0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            log,
        }
    }

    async fn start(port: u16, vars: &[(&str, String)]) -> Self {
        let registry = Self::spawn(port, vars);
        wait_ready(&registry.endpoint()).await;
        registry
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn legacy_client(&self) -> LegacyClient {
        legacy::service_registry_client::ServiceRegistryClient::connect(self.endpoint())
            .await
            .unwrap()
    }

    fn log(&self) -> String {
        let mut text = String::new();
        self.log
            .reopen()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The original's variables for a registry on `port` using `redis`.
fn original_env(redis: &RedisProcess, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("GRPC_PORT", port.to_string()),
        ("HEARTBEAT_TIMEOUT_SECONDS", "30".to_string()),
        ("ETCD_ENDPOINTS", format!(r#"["127.0.0.1:{}"]"#, redis.port)),
        ("ETCD_PREFIX", "neural-hive-registry".to_string()),
    ]
}

async fn heartbeat(client: &mut LegacyClient, id: &str) -> Result<(), tonic::Status> {
    client
        .heartbeat(legacy::HeartbeatRequest {
            agent_id: id.to_string(),
            telemetry: None,
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_with_the_originals_environment_share_one_registry() {
    let redis = RedisProcess::start().await;
    let (port_a, port_b) = (free_port(), free_port());
    let a = Registry::start(port_a, &original_env(&redis, port_a)).await;
    let b = Registry::start(port_b, &original_env(&redis, port_b)).await;
    assert_eq!(a.addr.port(), port_a, "GRPC_PORT is the port");

    let mut on_a = a.legacy_client().await;
    let mut on_b = b.legacy_client().await;
    let id = super::register(&mut on_a, AgentType::Worker, &["exec"]).await;
    // No token, on either replica: the original's callers send none.
    heartbeat(&mut on_a, &id).await.expect("heartbeat on A");
    wait_until(Duration::from_secs(2), "B sees A's agent", || {
        let mut on_b = on_b.clone();
        let id = id.clone();
        async move { heartbeat(&mut on_b, &id).await.is_ok() }
    })
    .await;
    assert_eq!(super::get(&mut on_b, &id).await.agent_id, id);

    // HEARTBEAT_TIMEOUT_SECONDS is the default TTL.
    let mut modern = pb::service_registry_client::ServiceRegistryClient::connect(b.endpoint())
        .await
        .unwrap();
    let granted = modern
        .register(register_request(&["x"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.ttl_seconds, 30);

    // ETCD_PREFIX names the keys in Redis.
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k.starts_with("{neural-hive-registry}")),
        "{keys:?}"
    );

    let log = a.log();
    let warned = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("original"))
        .unwrap_or_else(|| panic!("no warn line about the environment in:\n{log}"));
    for name in [
        "GRPC_PORT",
        "HEARTBEAT_TIMEOUT_SECONDS",
        "ETCD_ENDPOINTS",
        "ETCD_PREFIX",
    ] {
        assert!(warned.contains(name), "{name} not named in {warned}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("NOT required")),
        "no warn line about tokens in:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_registration_token_true_still_requires_tokens() {
    let redis = RedisProcess::start().await;
    let port = free_port();
    let mut vars = original_env(&redis, port);
    vars.push(("REQUIRE_REGISTRATION_TOKEN", "true".to_string()));
    let registry = Registry::start(port, &vars).await;
    let mut client = registry.legacy_client().await;
    let id = super::register(&mut client, AgentType::Worker, &["exec"]).await;
    let err = heartbeat(&mut client, &id)
        .await
        .expect_err("token required");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(!registry.log().contains("NOT required"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_registry_port_beats_grpc_port() {
    let redis = RedisProcess::start().await;
    let (ours, theirs) = (free_port(), free_port());
    let mut vars = original_env(&redis, theirs);
    vars.push(("SERVICE_REGISTRY_PORT", ours.to_string()));
    let registry = Registry::start(ours, &vars).await;
    let mut client = registry.legacy_client().await;
    super::register(&mut client, AgentType::Worker, &["exec"]).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", theirs))
            .await
            .is_err(),
        "nothing listens on GRPC_PORT when SERVICE_REGISTRY_PORT is set"
    );
}

/// Callers register once at start, without retrying: a Register that
/// reaches a replica while it is still loading its view waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_register_after_start_succeeds() {
    let redis = RedisProcess::start().await;
    // A population large enough that loading it takes a while.
    let port = free_port();
    let filler = Registry::start(port, &original_env(&redis, port)).await;
    let client = filler.legacy_client().await;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let mut client = client.clone();
        tasks.spawn(async move {
            for i in 0..250 {
                let cap = format!("c{}", (worker * 250 + i) % 50);
                super::register(&mut client, AgentType::Worker, &[cap.as_str()]).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    drop(filler);

    for round in 0..3 {
        let port = free_port();
        let registry = Registry::spawn(port, &original_env(&redis, port));
        // Connect the moment the port opens, and register at once.
        let started = Instant::now();
        let mut client = loop {
            if let Ok(client) =
                legacy::service_registry_client::ServiceRegistryClient::connect(registry.endpoint())
                    .await
            {
                break client;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the port never opened"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let answer = client
            .register(legacy::RegisterRequest {
                agent_type: AgentType::Worker as i32,
                capabilities: vec!["first".into()],
                ..Default::default()
            })
            .await;
        assert!(
            answer.is_ok(),
            "round {round}: the first Register failed: {answer:?}"
        );
    }
}
