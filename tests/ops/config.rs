//! A bad configuration exits 2, naming the setting.

use std::{
    io::Read,
    process::Stdio,
    time::{Duration, Instant},
};

use crate::support::SETTING_ENVS;

/// Runs the binary with a bad configuration: it must exit 2 (within 5 s)
/// with a first stderr line naming one of `names`.
async fn bad_config_exits_2(args: &[&str], env: &[(&str, &str)], names: &[&str]) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agent-registry"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for name in SETTING_ENVS {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Guard(command.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} {env:?}: still running after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(2),
        "{args:?} {env:?}: {status:?}, stderr:\n{stderr}"
    );
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(
        names.iter().any(|n| first.contains(n)),
        "{args:?} {env:?}: first line {first:?} names none of {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2_naming_the_setting() {
    let ports = [
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--http-port",
        "0",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        ports.iter().chain(extra).copied().collect()
    };
    bad_config_exits_2(&["--port", "http"], &[], &["--port"]).await;
    bad_config_exits_2(
        &with(&["--min-ttl", "10", "--max-ttl", "5"]),
        &[],
        &["--min-ttl", "--max-ttl", "MIN_TTL"],
    )
    .await;
    bad_config_exits_2(
        &with(&["--store", "redis"]),
        &[],
        &["--store", "--redis-url", "REDIS_URL", "REGISTRY_STORE"],
    )
    .await;
    bad_config_exits_2(
        &["--host", "127.0.0.1"],
        &[("SERVICE_REGISTRY_PORT", "abc")],
        &["--port", "SERVICE_REGISTRY_PORT"],
    )
    .await;
    bad_config_exits_2(&with(&["--store", "etcd"]), &[], &["--store"]).await;
    bad_config_exits_2(&with(&["--min-ttl", "0"]), &[], &["--min-ttl", "MIN_TTL"]).await;
    bad_config_exits_2(
        &with(&["--heartbeat-timeout", "0"]),
        &[],
        &["--heartbeat-timeout", "HEARTBEAT_TIMEOUT"],
    )
    .await;
    bad_config_exits_2(
        &with(&["--require-token", "maybe"]),
        &[],
        &["--require-token"],
    )
    .await;
    bad_config_exits_2(&with(&["--log-format", "xml"]), &[], &["--log-format"]).await;
    bad_config_exits_2(
        &with(&[]),
        &[("MAX_TTL", "soon")],
        &["--max-ttl", "MAX_TTL"],
    )
    .await;
    bad_config_exits_2(
        &with(&["--store", "redis", "--redis-url", "http://127.0.0.1:6379"]),
        &[],
        &["--redis-url", "REDIS_URL"],
    )
    .await;
}
