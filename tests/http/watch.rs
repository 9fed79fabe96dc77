//! `GET /v1/watch` as Server-Sent Events, and what the HTTP API does while
//! the store is down (stale reads, refused writes and watches).

use std::time::Duration;

use serde_json::json;

use super::support::Api;
use crate::common::{Backend, TestServer, wait_until};

behaviour_tests!(
    watch_streams_the_snapshot_then_live_events,
    watch_filters_by_capability_type_and_namespace,
    watch_resumes_after_a_revision,
    watch_ends_with_an_error_event_on_shutdown,
    a_closed_event_stream_frees_its_watcher,
);

async fn watch_streams_the_snapshot_then_live_events(backend: Backend) {
    let api = Api::start(backend).await;
    let (first, _) = api.register(&["a"], json!({})).await;
    let mut events = api.events("/v1/watch?snapshot=true").await;
    let snapshot = events.next().await.unwrap();
    assert_eq!(snapshot.name, "message");
    assert_eq!(snapshot.data["eventType"], "SNAPSHOT");
    assert_eq!(snapshot.data["agent"]["agentId"], first);
    let synced = events.next().await.unwrap();
    assert_eq!(synced.data["eventType"], "SYNCED");
    let synced_at: u64 = synced.data["revision"].as_str().unwrap().parse().unwrap();

    let (second, token) = api.register(&["b"], json!({})).await;
    let registered = events.next().await.unwrap();
    assert_eq!(registered.data["eventType"], "REGISTERED");
    assert_eq!(registered.data["agent"]["agentId"], second);
    let revision: u64 = registered.data["revision"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(revision > synced_at);
    assert_eq!(
        registered.data["agent"]["revision"],
        registered.data["revision"]
    );

    let sick = json!({ "telemetry": { "successRate": 0.1, "totalExecutions": "4" } });
    api.post(
        &format!("/v1/agents/{second}/heartbeat"),
        sick,
        Some(&token),
    )
    .await
    .ok();
    let updated = events.next().await.unwrap();
    assert_eq!(updated.data["eventType"], "UPDATED");
    let changed = events.next().await.unwrap();
    assert_eq!(changed.data["eventType"], "STATUS_CHANGED");
    assert_eq!(changed.data["previousStatus"], "HEALTHY");
    assert_eq!(changed.data["agent"]["status"], "UNHEALTHY");

    api.send(
        reqwest::Method::DELETE,
        &format!("/v1/agents/{second}"),
        None,
        Some(&token),
    )
    .await
    .ok();
    let removed = events.next().await.unwrap();
    assert_eq!(removed.data["eventType"], "DEREGISTERED");
    assert_eq!(removed.data["agent"]["agentId"], second);
}

async fn watch_filters_by_capability_type_and_namespace(backend: Backend) {
    let api = Api::start(backend).await;
    let mut events = api
        .events("/v1/watch?capability=x&capability=y&agent_type=WORKER&namespace=ns1")
        .await;
    api.register(&["x"], json!({ "namespace": "ns1" })).await;
    api.register(&["x", "y"], json!({ "namespace": "ns2" }))
        .await;
    let (wanted, _) = api
        .register(&["y", "x"], json!({ "namespace": "ns1" }))
        .await;
    let event = events.next().await.unwrap();
    assert_eq!(event.data["eventType"], "REGISTERED");
    assert_eq!(event.data["agent"]["agentId"], wanted);
}

/// `start_revision` resumes over SSE as over gRPC (BEHAVIOUR.md §11).
async fn watch_resumes_after_a_revision(backend: Backend) {
    let api = Api::start(backend).await;
    api.register(&["a"], json!({})).await;
    let mut events = api.events("/v1/watch?snapshot=true").await;
    events.next().await.unwrap();
    let synced = events.next().await.unwrap();
    assert_eq!(synced.data["eventType"], "SYNCED");
    let since = synced.data["revision"].as_str().unwrap().to_owned();
    drop(events);
    let (missed, _) = api.register(&["b"], json!({})).await;
    let mut resumed = api
        .events(&format!("/v1/watch?start_revision={since}"))
        .await;
    let replayed = resumed.next().await.unwrap();
    assert_eq!(replayed.data["eventType"], "REGISTERED");
    assert_eq!(replayed.data["agent"]["agentId"], missed);
    let (live, _) = api.register(&["c"], json!({})).await;
    assert_eq!(resumed.next().await.unwrap().data["agent"]["agentId"], live);
    // Far behind a fresh history: answered at once, naming the oldest.
    let message = api
        .get("/v1/watch?start_revision=1")
        .await
        .error(400, "OUT_OF_RANGE");
    assert!(message.contains("start_revision"), "{message}");
}

async fn watch_ends_with_an_error_event_on_shutdown(backend: Backend) {
    let api = Api::start(backend).await;
    let mut events = api.events("/v1/watch?snapshot=true").await;
    assert_eq!(events.next().await.unwrap().data["eventType"], "SYNCED");
    api.server.begin_shutdown();
    let end = events.next().await.unwrap();
    assert_eq!(end.name, "error");
    assert_eq!(end.data["code"], "UNAVAILABLE");
    assert!(end.data["message"].is_string());
    assert!(events.next().await.is_none(), "the stream closes");
}

async fn a_closed_event_stream_frees_its_watcher(backend: Backend) {
    let api = Api::start(backend).await;
    let watchers = |api: &Api| {
        let url = format!("http://{}/metrics", api.server.metrics_addr);
        async move {
            let text = reqwest::get(url).await.unwrap().text().await.unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("service_registry_watchers "))
                .map(|v| v.trim().to_owned())
        }
    };
    let mut events = api.events("/v1/watch?snapshot=true").await;
    assert_eq!(events.next().await.unwrap().data["eventType"], "SYNCED");
    assert_eq!(watchers(&api).await.as_deref(), Some("1"));
    drop(events);
    wait_until(Duration::from_secs(5), "the watcher is gone", || async {
        watchers(&api).await.as_deref() == Some("0")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_marked_stale_and_writes_refused_while_redis_is_down() {
    let mut server = Api::with(TestServer::start(Backend::Redis).await);
    let (id, token) = server.register(&["a"], json!({})).await;
    server.server.redis.as_mut().unwrap().kill();
    let path = format!("/v1/agents/{id}");
    wait_until(Duration::from_secs(10), "stale reads", || {
        let server = &server;
        let path = path.clone();
        async move {
            let got = server.get(&path).await;
            got.headers.get("x-registry-stale").map(|v| v.as_bytes()) == Some(b"true")
        }
    })
    .await;
    let got = server.get(&path).await;
    assert_eq!(got.ok()["agent"]["agentId"], id);
    let listed = server.get("/v1/agents").await;
    assert_eq!(listed.headers["x-registry-stale"], "true");
    assert_eq!(
        server.get("/v1/capabilities").await.headers["x-registry-stale"],
        "true"
    );
    let beat = server
        .send(
            reqwest::Method::POST,
            &format!("{path}/heartbeat"),
            None,
            Some(&token),
        )
        .await;
    beat.error(503, "UNAVAILABLE");
    let watch = server.get("/v1/watch").await;
    watch.error(503, "UNAVAILABLE");
}
