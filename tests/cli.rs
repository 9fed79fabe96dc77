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
async fn register_then_get_list_and_discover_show_the_agent() {
    let server = TestServer::start(Backend::Memory).await;

    // Table: the id and the token, labelled.
    let out = ctl(
        &server,
        &[
            "register",
            "-c",
            "python",
            "-c",
            "gpu",
            "--type",
            "scout",
            "-m",
            "team=core",
            "--namespace",
            "lab",
            "--agent-endpoint",
            "10.1.2.3:8080",
            "--ttl",
            "30",
        ],
    )
    .await
    .success();
    let text = stdout(&out);
    let field = |label: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{label} in {text}"))
            .split_whitespace()
            .last()
            .unwrap()
            .to_owned()
    };
    let id = field("AGENT ID");
    let token = field("TOKEN");
    assert_eq!(id.len(), 36, "{text}");
    assert!(!token.is_empty());
    assert_eq!(field("TTL"), "30s");
    assert_eq!(field("HEARTBEAT EVERY"), "10s");

    // get: a table row with the agent, and its metadata.
    let out = ctl(&server, &["get", &id]).await.success();
    let text = stdout(&out);
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("ID "), "{text}");
    let row = lines.next().unwrap();
    for cell in [
        id.as_str(),
        "SCOUT",
        "HEALTHY",
        "python,gpu",
        "lab",
        "10.1.2.3:8080",
    ] {
        assert!(row.contains(cell), "{cell} in {row:?}");
    }
    // Expires in the TTL, relative to now (a second may have passed).
    assert!(
        ["in 30s", "in 29s", "in 28s"]
            .iter()
            .any(|e| row.contains(e)),
        "{row}"
    );
    assert!(text.contains("team=core"), "{text}");

    // get -o json: the proto field names, enums by name.
    let out = ctl(&server, &["get", &id, "-o", "json"]).await.success();
    let agent = &json_lines(&out)[0];
    assert_eq!(agent["agent_id"], id.as_str());
    assert_eq!(agent["agent_type"], "SCOUT");
    assert_eq!(agent["status"], "HEALTHY");
    assert_eq!(agent["capabilities"], serde_json::json!(["python", "gpu"]));
    assert_eq!(agent["metadata"]["team"], "core");
    assert_eq!(agent["namespace"], "lab");
    assert_eq!(agent["endpoint"], "10.1.2.3:8080");
    assert_eq!(
        agent["expires_at"].as_i64().unwrap() - agent["last_seen"].as_i64().unwrap(),
        30
    );

    // list and discover show it.
    ctl(&server, &["list"])
        .await
        .success()
        .stdout(predicate::str::contains(id.as_str()));
    ctl(
        &server,
        &["list", "--type", "scout", "--filter", "namespace=lab"],
    )
    .await
    .success()
    .stdout(predicate::str::contains(id.as_str()));
    ctl(&server, &["list", "--type", "worker"])
        .await
        .success()
        .stdout(predicate::str::contains(id.as_str()).not());
    ctl(
        &server,
        &["discover", "-c", "gpu", "--strategy", "round-robin"],
    )
    .await
    .success()
    .stdout(predicate::str::contains(id.as_str()));
    ctl(&server, &["discover", "-c", "gpu", "-c", "rust"])
        .await
        .success()
        .stdout(predicate::str::contains(id.as_str()).not());

    // Re-register under the same id with the token (from the environment).
    let out = ctl_with(
        &server.endpoint(),
        &[("REGISTRY_TOKEN", token.as_str())],
        &[
            "-o",
            "json",
            "register",
            "-c",
            "rust",
            "--agent-id",
            &id,
            "--ttl",
            "20",
        ],
    )
    .await
    .success();
    let again = &json_lines(&out)[0];
    assert_eq!(again["agent_id"], id.as_str());
    assert_eq!(again["ttl_seconds"], 20);
    ctl(&server, &["discover", "-c", "rust"])
        .await
        .success()
        .stdout(predicate::str::contains(id.as_str()));
    // A fresh registration ignores REGISTRY_TOKEN.
    ctl_with(
        &server.endpoint(),
        &[("REGISTRY_TOKEN", token.as_str())],
        &["register", "-c", "fresh"],
    )
    .await
    .success();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_output_has_a_header_and_aligned_columns() {
    let server = TestServer::start(Backend::Memory).await;
    register(&server, &["-c", "a"]).await;
    register(
        &server,
        &[
            "-c",
            "a",
            "-c",
            "a-much-longer-capability",
            "--type",
            "analyst",
            "--agent-endpoint",
            "host.example:9",
        ],
    )
    .await;
    register(&server, &["-c", "a", "--namespace", "a-long-namespace"]).await;

    let out = ctl(&server, &["list"]).await.success();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three rows: {text}");
    let names = [
        "ID",
        "TYPE",
        "STATUS",
        "CAPABILITIES",
        "NAMESPACE",
        "ENDPOINT",
        "LAST SEEN",
        "EXPIRES",
    ];
    assert!(lines[0].starts_with("ID "), "{text}");
    let starts = column_starts(lines[0], &names);
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{text}");
    for row in &lines[1..] {
        assert_aligned(row, &starts);
        assert!(row.contains("HEALTHY"), "{row}");
        // Relative times: seen "now"/"Ns ago", expiring "in ...".
        assert!(row.contains("now") || row.contains(" ago"), "{row}");
        assert!(row.contains("in "), "{row}");
    }
    assert!(text.contains("ANALYST") && text.contains("host.example:9"));

    // discover uses the same table.
    let out = ctl(&server, &["discover", "-c", "a", "--max", "2"])
        .await
        .success();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows: {text}");
    let starts = column_starts(lines[0], &names);
    for row in &lines[1..] {
        assert_aligned(row, &starts);
    }

    // An empty result still has its header.
    ctl(&server, &["list", "--type", "guard"])
        .await
        .success()
        .stdout(predicate::str::starts_with("ID ").and(predicate::str::contains("WORKER").not()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_one_object_per_line() {
    let server = TestServer::start(Backend::Memory).await;
    let mut ids = Vec::new();
    for cap in ["x", "y", "z"] {
        ids.push(
            register(&server, &["-c", "shared", "-c", cap, "-m", "k=v=w"])
                .await
                .0,
        );
    }

    let out = ctl(&server, &["list", "-o", "json"]).await.success();
    let agents = json_lines(&out);
    assert_eq!(agents.len(), 3);
    let listed: Vec<&str> = agents
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    let mut sorted_ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    sorted_ids.sort_unstable();
    let mut sorted_listed = listed.clone();
    sorted_listed.sort_unstable();
    assert_eq!(sorted_listed, sorted_ids);
    for agent in &agents {
        assert_eq!(agent["agent_type"], "WORKER");
        assert_eq!(agent["status"], "HEALTHY");
        assert_eq!(agent["metadata"]["k"], "v=w");
        assert_eq!(agent["namespace"], "default");
        assert_eq!(agent["schema_version"], 1);
        for field in [
            "registered_at",
            "last_seen",
            "expires_at",
            "revision",
            "cluster",
            "version",
        ] {
            assert!(!agent[field].is_null(), "{field} in {agent}");
        }
    }

    // One page at a time: the next page's token goes to stderr.
    let out = ctl(&server, &["-o", "json", "list", "--page-size", "2"])
        .await
        .success()
        .stderr(predicate::str::contains("--page-token"));
    let first: Vec<Value> = json_lines(&out);
    assert_eq!(first.len(), 2);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    let page_token = stderr.split_whitespace().last().unwrap().to_owned();
    let out = ctl(
        &server,
        &[
            "-o",
            "json",
            "list",
            "--page-size",
            "2",
            "--page-token",
            &page_token,
        ],
    )
    .await
    .success();
    let rest = json_lines(&out);
    assert_eq!(rest.len(), 1);
    // The pages together are the whole list, in list order.
    let paged: Vec<&str> = first
        .iter()
        .chain(&rest)
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(paged, listed);

    let out = ctl(&server, &["discover", "-c", "shared", "-o", "json"])
        .await
        .success();
    assert_eq!(json_lines(&out).len(), 3);
    let out = ctl(
        &server,
        &[
            "discover", "-c", "shared", "-c", "y", "--max", "1", "-o", "json",
        ],
    )
    .await
    .success();
    let found = json_lines(&out);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["agent_id"], ids[1].as_str());

    ctl(&server, &["-o", "json", "health"])
        .await
        .success()
        .stdout(predicate::str::contains(r#""status":"SERVING""#));
    server.stop().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_then_subscribe_after_prints_the_notifications() {
    let server = TestServer::start(Backend::Memory).await;
    let (id, token) = register(&server, &["-c", "inbox"]).await;

    for message in ["one", "two", "three"] {
        ctl(&server, &["notify", &id, "--message", message])
            .await
            .success()
            .stdout(predicate::str::contains("NOTIFICATION ID"));
    }
    let out = ctl(
        &server,
        &[
            "-o",
            "json",
            "notify",
            &id,
            "--message",
            "four",
            "--type",
            "CONTROL",
            "-m",
            "drain=true",
        ],
    )
    .await
    .success();
    let sent = &json_lines(&out)[0];
    assert_eq!(sent["success"], true);
    assert_eq!(sent["notification_id"], "4");
    assert_eq!(sent["delivered"], false, "nobody subscribed yet");

    let mut sub = Streaming::spawn(
        &server,
        &[
            "-o",
            "json",
            "subscribe",
            &id,
            "--token",
            &token,
            "--after",
            "2",
        ],
    );
    let third = sub.json().await;
    assert_eq!(third["notification_id"], "3");
    assert_eq!(third["message"], "three");
    assert_eq!(third["notification_type"], "INFO");
    assert_eq!(third["agent_id"], id.as_str());
    let fourth = sub.json().await;
    assert_eq!(fourth["notification_id"], "4");
    assert_eq!(fourth["notification_type"], "CONTROL");
    assert_eq!(fourth["metadata"]["drain"], "true");

    // A live one reaches the running subscriber.
    let out = ctl(&server, &["-o", "json", "notify", &id, "--message", "live"])
        .await
        .success();
    assert_eq!(json_lines(&out)[0]["delivered"], true);
    let live = sub.json().await;
    assert_eq!(live["notification_id"], "5");
    assert_eq!(live["message"], "live");
    drop(sub); // killed

    // Table output: a header, then a row per notification.
    let mut sub = Streaming::spawn(
        &server,
        &["subscribe", &id, "--token", &token, "--after", "4"],
    );
    let header = sub.line().await;
    assert!(
        header.starts_with("ID ") && header.contains("MESSAGE"),
        "{header}"
    );
    let row = sub.line().await;
    assert!(row.starts_with("5 ") && row.contains("live"), "{row}");
    drop(sub);

    // Without the token the stream is refused.
    ctl(&server, &["subscribe", &id])
        .await
        .code(1)
        .stderr(predicate::str::contains("UNAUTHENTICATED"));
    // Notifying an unknown agent is refused.
    ctl(
        &server,
        &[
            "notify",
            "00000000-0000-4000-8000-000000000000",
            "--message",
            "x",
        ],
    )
    .await
    .code(1)
    .stderr(predicate::str::contains("NOT_FOUND"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_ends_with_not_found_when_the_agent_goes() {
    let server = TestServer::start(Backend::Memory).await;
    let (id, token) = register(&server, &["-c", "bye"]).await;
    let mut sub = Streaming::spawn(
        &server,
        &["-o", "json", "subscribe", &id, "--token", &token],
    );
    ctl(&server, &["notify", &id, "--message", "hi"])
        .await
        .success();
    assert_eq!(sub.json().await["message"], "hi");
    ctl(&server, &["deregister", &id, "--token", &token])
        .await
        .success();
    let status = sub.exit().await;
    assert_eq!(status.code(), Some(1), "a stream error exits 1");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(sub.child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(stderr.starts_with("error: NOT_FOUND"), "{stderr}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_registered_for_an_agent_registered_meanwhile() {
    let server = TestServer::start(Backend::Memory).await;
    let (before, _) = register(&server, &["-c", "old"]).await;

    // JSON with a snapshot: the existing agent, SYNCED, then live events.
    let mut watch = Streaming::spawn(&server, &["-o", "json", "watch", "--snapshot"]);
    let snapshot = watch.json().await;
    assert_eq!(snapshot["event_type"], "SNAPSHOT");
    assert_eq!(snapshot["agent"]["agent_id"], before.as_str());
    let synced = watch.json().await;
    assert_eq!(synced["event_type"], "SYNCED");
    assert!(synced["agent"].is_null());

    let (id, token) = register(&server, &["-c", "new", "--type", "guard"]).await;
    let event = watch
        .json_until(10, |e| e["agent"]["agent_id"] == id.as_str())
        .await;
    assert_eq!(event["event_type"], "REGISTERED");
    assert_eq!(event["agent"]["agent_type"], "GUARD");
    assert_eq!(event["agent"]["status"], "HEALTHY");
    assert!(event["revision"].as_u64().unwrap() > synced["revision"].as_u64().unwrap());

    ctl(&server, &["deregister", &id, "--token", &token])
        .await
        .success();
    let event = watch
        .json_until(10, |e| e["agent"]["agent_id"] == id.as_str())
        .await;
    assert_eq!(event["event_type"], "DEREGISTERED");

    // SIGTERM ends the watch cleanly.
    watch.terminate();
    assert!(watch.exit().await.success());

    // Table, filtered by capability: a header, then only matching agents.
    let mut watch = Streaming::spawn(&server, &["watch", "-c", "wanted", "--type", "worker"]);
    let header = watch.line().await;
    assert!(
        header.starts_with("EVENT ") && header.contains("ID"),
        "{header}"
    );
    register(&server, &["-c", "unwanted"]).await;
    let (id, _) = register(&server, &["-c", "wanted"]).await;
    let row = watch.line().await;
    assert!(row.starts_with("REGISTERED ") && row.contains(&id), "{row}");
    let starts = column_starts(&header, &["EVENT", "ID", "TYPE", "STATUS"]);
    assert_aligned(&row, &starts);
    drop(watch);
    server.stop().await;
}

/// `watch --since REV` replays what came after REV, then live changes;
/// `--bookmarks` prints BOOKMARKs while nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_since_a_revision_replays_and_bookmarks_show_progress() {
    let server = TestServer::start_with(Backend::Memory, &["--bookmark-interval", "1"]).await;
    let (first, _) = register(&server, &["-c", "a"]).await;
    let mut watch = Streaming::spawn(&server, &["-o", "json", "watch", "--snapshot"]);
    let snapshot = watch.json().await;
    assert_eq!(snapshot["agent"]["agent_id"], first.as_str());
    let since = watch.json().await["revision"].as_u64().unwrap();
    watch.terminate();
    let (second, _) = register(&server, &["-c", "b"]).await;

    let since = since.to_string();
    let mut resumed = Streaming::spawn(
        &server,
        &["-o", "json", "watch", "--since", &since, "--bookmarks"],
    );
    let replayed = resumed.json().await;
    assert_eq!(replayed["event_type"], "REGISTERED");
    assert_eq!(replayed["agent"]["agent_id"], second.as_str());
    let bookmark = resumed
        .json_until(5, |e| e["event_type"] == "BOOKMARK")
        .await;
    assert!(bookmark["revision"].as_u64().unwrap() >= replayed["revision"].as_u64().unwrap());
    resumed.terminate();
    assert!(resumed.exit().await.success());

    ctl(&server, &["watch", "--since", "5", "--snapshot"])
        .await
        .code(2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_keep_alive_heartbeats_then_deregisters_on_sigterm() {
    let server = TestServer::start(Backend::Memory).await;
    let mut agent = Streaming::spawn(
        &server,
        &[
            "-o",
            "json",
            "register",
            "-c",
            "alive",
            "--ttl",
            "2",
            "--keep-alive",
        ],
    );
    let registered = agent.json().await;
    let id = registered["agent_id"].as_str().unwrap().to_owned();
    assert!(
        !registered["registration_token"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(registered["ttl_seconds"], 2);
    assert_eq!(registered["heartbeat_interval_seconds"], 1);
    let state = agent.json().await;
    assert_eq!(state["status"], "HEALTHY");
    assert_eq!(state["connected"], true);

    ctl(&server, &["list"])
        .await
        .success()
        .stdout(predicate::str::contains(id.as_str()));

    // A notification reaches the running agent and is printed.
    ctl(
        &server,
        &[
            "notify",
            &id,
            "--message",
            "drain please",
            "--type",
            "CONTROL",
        ],
    )
    .await
    .success();
    let notified = agent
        .json_until(10, |v| v.get("notification_id").is_some())
        .await;
    assert_eq!(notified["message"], "drain please");
    assert_eq!(notified["notification_type"], "CONTROL");

    // Past its TTL it is still HEALTHY: the session heartbeats.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let out = ctl(&server, &["-o", "json", "get", &id]).await.success();
    let agent_info = &json_lines(&out)[0];
    assert_eq!(agent_info["status"], "HEALTHY");
    assert!(
        agent_info["last_seen"].as_i64().unwrap() > registered_at(&server, &id).await,
        "heartbeats moved last_seen: {agent_info}"
    );

    agent.terminate();
    let status = agent.exit().await;
    assert!(status.success(), "exit status {status:?}");
    let last = agent.json_until(10, |v| v.get("success").is_some()).await;
    assert_eq!(last["success"], true);
    ctl(&server, &["get", &id])
        .await
        .code(1)
        .stderr(predicate::str::contains("NOT_FOUND"));
    server.stop().await;
}

/// The agent's `registered_at`.
async fn registered_at(server: &TestServer, id: &str) -> i64 {
    let out = ctl(server, &["-o", "json", "get", id]).await.success();
    json_lines(&out)[0]["registered_at"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_table_output_and_sigint() {
    let server = TestServer::start(Backend::Memory).await;
    let mut agent = Streaming::spawn(&server, &["register", "-c", "int", "--keep-alive"]);
    let first = agent.line().await;
    assert!(first.starts_with("AGENT ID"), "{first}");
    let id = first.split_whitespace().last().unwrap().to_owned();
    assert!(agent.line().await.starts_with("TOKEN"));
    let pid = agent.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(agent.exit().await.success());
    ctl(&server, &["get", &id]).await.code(1);
    server.stop().await;
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
