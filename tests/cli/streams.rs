//! Streaming `registryctl` commands: subscribe, watch (with resume and
//! bookmarks) and `register --keep-alive` until SIGTERM or SIGINT.

use crate::common::*;

use std::time::Duration;

use predicates::prelude::*;

use crate::{Streaming, assert_aligned, column_starts, ctl, json_lines, register, registered_at};

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
