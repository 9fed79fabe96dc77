//! `registryctl` end to end: the real binary against a real in-process
//! registry (memory store) on a free loopback port.
//!
//! One-shot commands run through `assert_cmd` (synchronous, so inside
//! `spawn_blocking`); streaming commands (`watch`, `subscribe`,
//! `register --keep-alive`) run as tokio child processes whose output is read
//! line by line with a deadline, and which are killed on every path
//! (`kill_on_drop`). Every wait is bounded in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "cli/output.rs"]
mod output;
#[path = "cli/streams.rs"]
mod streams;
use common::*;

use std::{process::Stdio, time::Duration};

use assert_cmd::{Command, assert::Assert};
use predicates::prelude::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};

/// Longest a one-shot command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest we wait for one line of a streaming command.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `registryctl args...` against `endpoint` (no `REGISTRY_TOKEN`
/// unless `envs` sets it) and returns its assertion handle.
async fn ctl_with(endpoint: &str, envs: &[(&str, &str)], args: &[&str]) -> Assert {
    let endpoint = endpoint.to_owned();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::cargo_bin("registryctl")
            .expect("cargo builds the registryctl binary for integration tests")
            .env("REGISTRY_ENDPOINT", endpoint)
            .env_remove("REGISTRY_TOKEN")
            .envs(envs)
            .args(args)
            .timeout(COMMAND_TIMEOUT)
            .assert()
    })
    .await
    .unwrap()
}

/// Runs `registryctl args...` against the test server.
async fn ctl(server: &TestServer, args: &[&str]) -> Assert {
    ctl_with(&server.endpoint(), &[], args).await
}

/// The command's stdout as text.
fn stdout(assert: &Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).unwrap()
}

/// Every stdout line parsed as one JSON object.
fn json_lines(assert: &Assert) -> Vec<Value> {
    stdout(assert)
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"));
            assert!(value.is_object(), "not an object: {line}");
            value
        })
        .collect()
}

/// Registers a WORKER with `capabilities` (JSON output) and returns its id
/// and token.
async fn register(server: &TestServer, extra: &[&str]) -> (String, String) {
    let mut args = vec!["-o", "json", "register"];
    args.extend_from_slice(extra);
    let out = ctl(server, &args).await.success();
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "one object: {lines:?}");
    let r = &lines[0];
    (
        r["agent_id"].as_str().unwrap().to_owned(),
        r["registration_token"].as_str().unwrap().to_owned(),
    )
}

/// A streaming `registryctl` child: killed when dropped, stdout read line
/// by line with a deadline.
struct Streaming {
    child: tokio::process::Child,
    lines: Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Streaming {
    fn spawn(server: &TestServer, args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_registryctl"))
            .env("REGISTRY_ENDPOINT", server.endpoint())
            .env_remove("REGISTRY_TOKEN")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    /// The next stdout line (panics after [`LINE_TIMEOUT`] or at the end).
    async fn line(&mut self) -> String {
        match tokio::time::timeout(LINE_TIMEOUT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!("stdout ended early"),
            Ok(Err(e)) => panic!("reading stdout: {e}"),
            Err(_) => panic!("no line within {LINE_TIMEOUT:?}"),
        }
    }

    /// The next stdout line as a JSON object.
    async fn json(&mut self) -> Value {
        let line = self.line().await;
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    }

    /// Reads JSON lines until one satisfies `want` (bounded by the line
    /// timeout and `max` lines).
    async fn json_until(&mut self, max: usize, want: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..max {
            let value = self.json().await;
            if want(&value) {
                return value;
            }
        }
        panic!("no matching line among {max}");
    }

    /// Sends SIGTERM (as `kill -TERM <pid>` would).
    fn terminate(&self) {
        let pid = self.child.id().expect("the child is still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits (bounded) for the child to exit and returns its status.
    async fn exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the child exits within 10 s")
            .unwrap()
    }
}

/// Char offsets at which each header name starts.
fn column_starts(header: &str, names: &[&str]) -> Vec<usize> {
    names
        .iter()
        .map(|name| {
            let byte = header
                .find(name)
                .unwrap_or_else(|| panic!("{name} in {header:?}"));
            header[..byte].chars().count()
        })
        .collect()
}

/// Asserts that in `row` a cell starts exactly at each column start.
fn assert_aligned(row: &str, starts: &[usize]) {
    let chars: Vec<char> = row.chars().collect();
    for &start in starts {
        assert!(
            start < chars.len(),
            "row too short for column {start}: {row:?}"
        );
        assert!(
            !chars[start].is_whitespace() && (start == 0 || chars[start - 1] == ' '),
            "no cell starts at column {start}: {row:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_needs_the_token() {
    let server = TestServer::start(Backend::Memory).await;
    let (id, token) = register(&server, &["-c", "hb"]).await;

    ctl(&server, &["heartbeat", &id])
        .await
        .code(1)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::starts_with("error: UNAUTHENTICATED: "));
    ctl(&server, &["heartbeat", &id, "--token", "wrong"])
        .await
        .code(1)
        .stderr(predicate::str::contains("PERMISSION_DENIED"));

    let out = ctl(&server, &["heartbeat", &id, "--token", &token])
        .await
        .success();
    let text = stdout(&out);
    assert!(text.starts_with("ID "), "{text}");
    assert!(text.contains("HEALTHY"), "{text}");

    // Telemetry changes the status; the token may come from the environment.
    let out = ctl_with(
        &server.endpoint(),
        &[("REGISTRY_TOKEN", token.as_str())],
        &[
            "-o",
            "json",
            "heartbeat",
            &id,
            "--success-rate",
            "0.4",
            "--total",
            "10",
            "--failed",
            "6",
            "--avg-ms",
            "12",
        ],
    )
    .await
    .success();
    let response = &json_lines(&out)[0];
    assert_eq!(response["status"], "DEGRADED");
    assert!(response["expires_at"].as_i64().unwrap() >= response["last_seen"].as_i64().unwrap());
    let out = ctl(&server, &["-o", "json", "get", &id]).await.success();
    let agent = &json_lines(&out)[0];
    assert_eq!(agent["status"], "DEGRADED");
    assert_eq!(agent["telemetry"]["total_executions"], 10);
    assert_eq!(agent["telemetry"]["avg_duration_ms"], 12);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_removes_the_agent() {
    let server = TestServer::start(Backend::Memory).await;
    let (id, token) = register(&server, &["-c", "gone"]).await;

    ctl(&server, &["deregister", &id])
        .await
        .code(1)
        .stderr(predicate::str::contains("UNAUTHENTICATED"));
    ctl(&server, &["deregister", &id, "--token", &token])
        .await
        .success()
        .stdout(predicate::str::contains(format!("deregistered {id}")));
    ctl(&server, &["get", &id])
        .await
        .code(1)
        .stderr(predicate::str::contains("NOT_FOUND"));
    ctl(&server, &["list"])
        .await
        .success()
        .stdout(predicate::str::contains(id.as_str()).not());
    server.stop().await;
}

/// The agent's `registered_at`.
async fn registered_at(server: &TestServer, id: &str) -> i64 {
    let out = ctl(server, &["-o", "json", "get", id]).await.success();
    json_lines(&out)[0]["registered_at"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_and_fails_on_a_closed_port() {
    let server = TestServer::start(Backend::Memory).await;
    ctl(&server, &["health"])
        .await
        .success()
        .stdout(predicate::str::diff("SERVING\n"));
    let closed = format!("http://127.0.0.1:{}", free_port());
    ctl_with(&closed, &[], &["health", "--timeout", "2"])
        .await
        .code(1)
        .stderr(predicate::str::starts_with("error: UNAVAILABLE"));
    ctl_with(&closed, &[], &["list"])
        .await
        .code(1)
        .stderr(predicate::str::contains("UNAVAILABLE"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_exits_1_with_its_code() {
    let server = TestServer::start(Backend::Memory).await;
    ctl(&server, &["get", "00000000-0000-4000-8000-000000000000"])
        .await
        .code(1)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::starts_with("error: NOT_FOUND: "));
    ctl(&server, &["get", "not-a-uuid"])
        .await
        .code(1)
        .stderr(predicate::str::starts_with("error: INVALID_ARGUMENT: "));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let server = TestServer::start(Backend::Memory).await;
    for args in [
        &["frobnicate"][..],
        &["register"],
        &["register", "-c", "x", "-m", "novalue"],
        &["register", "-c", "x", "-m", "=v"],
        &["register", "-c", "x", "--type", "robot"],
        &["list", "--filter", "bad"],
        &["discover"],
        &["discover", "-c", "x", "--strategy", "best"],
        &["heartbeat"],
        &["notify", "00000000-0000-4000-8000-000000000000"],
        &["list", "-o", "yaml"],
        &["list", "--timeout", "0"],
        &[],
    ] {
        ctl(&server, args)
            .await
            .code(2)
            .stdout(predicate::str::is_empty())
            .stderr(predicate::str::is_empty().not());
    }
    ctl(&server, &["--help"]).await.success();
    server.stop().await;
}
