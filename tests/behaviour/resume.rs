//! Watch resume and progress (BEHAVIOUR.md §11): replay after a revision,
//! then live with nothing missed and nothing twice at the seam; leave events
//! replayed for filtered watches; the compaction answer; BOOKMARKs on idle
//! streams and past unselected changes; an ABORTED slow watcher that resumes
//! with nothing missed.

use std::{collections::HashSet, time::Duration};

use agent_registry::pb::{
    self, agent_change_event::EventType, service_registry_client::ServiceRegistryClient,
};
use tonic::{Code, transport::Channel};

use crate::common::*;
use crate::support::*;

type Client = ServiceRegistryClient<Channel>;

async fn register(client: &mut Client, request: pb::RegisterRequest) -> pb::RegisterResponse {
    client.register(request).await.unwrap().into_inner()
}

fn in_namespace(namespace: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        namespace: namespace.into(),
        ..register_request(&["r"])
    }
}

/// The registry's current revision, from a snapshot watch's SYNCED.
async fn current_revision(client: &mut Client) -> u64 {
    let mut stream = client
        .watch_agents(pb::WatchAgentsRequest {
            send_initial_snapshot: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let event = next_event(&mut stream).await;
        if kind(&event) == EventType::Synced {
            return event.revision;
        }
    }
}

async fn resume(client: &mut Client, request: pb::WatchAgentsRequest) -> Events {
    client.watch_agents(request).await.unwrap().into_inner()
}

fn after(revision: u64) -> pb::WatchAgentsRequest {
    pb::WatchAgentsRequest {
        start_revision: revision,
        ..Default::default()
    }
}

/// Reads `n` events, checking revisions strictly increase.
async fn read(stream: &mut Events, n: usize) -> Vec<pb::AgentChangeEvent> {
    let mut out: Vec<pb::AgentChangeEvent> = Vec::with_capacity(n);
    for _ in 0..n {
        let event = next_event(stream).await;
        if let Some(last) = out.last() {
            assert!(event.revision > last.revision, "{last:?} then {event:?}");
        }
        out.push(event);
    }
    out
}

pub async fn resume_replays_every_change_after_the_revision_then_live(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let first = register(&mut client, register_request(&["r"])).await;
    let start = current_revision(&mut client).await;
    let second = register(&mut client, register_request(&["r"])).await;
    client
        .heartbeat(with_token(
            pb::HeartbeatRequest {
                agent_id: first.agent_id.clone(),
                telemetry: Some(telemetry(0.4, 5, 10)),
                ..Default::default()
            },
            &first.registration_token,
        ))
        .await
        .unwrap();
    let mut stream = resume(&mut client, after(start)).await;
    let replayed = read(&mut stream, 3).await;
    let seen: Vec<(EventType, String)> = replayed
        .iter()
        .map(|e| (kind(e), agent_of(e).agent_id.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (EventType::Registered, second.agent_id.clone()),
            (EventType::Updated, first.agent_id.clone()),
            (EventType::StatusChanged, first.agent_id.clone()),
        ]
    );
    assert!(replayed.iter().all(|e| e.revision > start));
    // Then live, after the seam, nothing twice.
    let third = register(&mut client, register_request(&["r"])).await;
    let live = next_event(&mut stream).await;
    assert_eq!(kind(&live), EventType::Registered);
    assert_eq!(agent_of(&live).agent_id, third.agent_id);
    assert!(live.revision > replayed[2].revision);
    expect_quiet(&mut stream, Duration::from_millis(300)).await;

    // Resuming from the last revision seen replays nothing.
    let mut again = resume(&mut client, after(live.revision)).await;
    expect_quiet(&mut again, Duration::from_millis(300)).await;
    let fourth = register(&mut client, register_request(&["r"])).await;
    assert_eq!(
        agent_of(&next_event(&mut again).await).agent_id,
        fourth.agent_id
    );
}

pub async fn resume_replays_agents_leaving_a_filtered_selection(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mover = register(&mut client, in_namespace("blue")).await;
    let _elsewhere = register(&mut client, in_namespace("red")).await;
    let start = current_revision(&mut client).await;
    // The agent re-registers into another namespace: it leaves "blue".
    let mut moved = in_namespace("red");
    moved.agent_id = mover.agent_id.clone();
    moved.registration_token = mover.registration_token.clone();
    register(&mut client, moved).await;
    let _other = register(&mut client, in_namespace("red")).await;
    let stayer = register(&mut client, in_namespace("blue")).await;
    let mut stream = resume(
        &mut client,
        pb::WatchAgentsRequest {
            namespace: "blue".into(),
            start_revision: start,
            ..Default::default()
        },
    )
    .await;
    let events = read(&mut stream, 2).await;
    assert_eq!(kind(&events[0]), EventType::Updated);
    assert_eq!(agent_of(&events[0]).agent_id, mover.agent_id);
    assert_eq!(
        agent_of(&events[0]).namespace,
        "red",
        "its state after leaving"
    );
    assert_eq!(kind(&events[1]), EventType::Registered);
    assert_eq!(agent_of(&events[1]).agent_id, stayer.agent_id);
    expect_quiet(&mut stream, Duration::from_millis(300)).await;
}

pub async fn resume_refuses_a_snapshot_too(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let err = client
        .watch_agents(pb::WatchAgentsRequest {
            start_revision: 1,
            send_initial_snapshot: true,
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("start_revision"),
        "{}",
        err.message()
    );
}

pub async fn resume_past_the_history_is_out_of_range_naming_the_oldest(backend: Backend) {
    let server = TestServer::start_with(backend, &["--watch-history", "5"]).await;
    let mut client = server.client().await;
    register(&mut client, register_request(&["r"])).await;
    let start = current_revision(&mut client).await;
    let mut revisions = Vec::new();
    for _ in 0..8 {
        register(&mut client, register_request(&["r"])).await;
        revisions.push(current_revision(&mut client).await);
    }
    let err = client
        .watch_agents(after(start))
        .await
        .expect_err("compacted");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    // The oldest resumable revision: the newest change trimmed away.
    let oldest = revisions[2];
    assert!(
        err.message().contains(&oldest.to_string()),
        "{} does not name {oldest}",
        err.message()
    );
    // From there it works: the five kept changes.
    let mut stream = resume(&mut client, after(oldest)).await;
    let events = read(&mut stream, 5).await;
    let got: Vec<u64> = events.iter().map(|e| e.revision).collect();
    assert_eq!(got, revisions[3..].to_vec());
}

pub async fn a_future_revision_waits_for_the_registry(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let now = current_revision(&mut client).await;
    let mut stream = resume(&mut client, after(now + 2)).await;
    register(&mut client, register_request(&["r"])).await;
    register(&mut client, register_request(&["r"])).await;
    expect_quiet(&mut stream, Duration::from_millis(300)).await;
    let third = register(&mut client, register_request(&["r"])).await;
    let event = next_event(&mut stream).await;
    assert_eq!(agent_of(&event).agent_id, third.agent_id);
    assert_eq!(event.revision, now + 3);
}

pub async fn bookmarks_arrive_on_idle_streams_and_past_unselected_changes(backend: Backend) {
    let server = TestServer::start_with(backend, &["--bookmark-interval", "1"]).await;
    let mut client = server.client().await;
    let mut stream = resume(
        &mut client,
        pb::WatchAgentsRequest {
            namespace: "watched".into(),
            progress_notify: true,
            ..Default::default()
        },
    )
    .await;
    // Idle: a bookmark anyway.
    let idle = next_event(&mut stream).await;
    assert_eq!(kind(&idle), EventType::Bookmark, "{idle:?}");
    assert!(idle.agent.is_none_or(|a| a.agent_id.is_empty()));
    // Changes the watch does not select still move the bookmark on.
    register(&mut client, in_namespace("other")).await;
    let past = current_revision(&mut client).await;
    let mut bookmark = next_event(&mut stream).await;
    for _ in 0..3 {
        if bookmark.revision >= past {
            break;
        }
        bookmark = next_event(&mut stream).await;
    }
    assert_eq!(kind(&bookmark), EventType::Bookmark);
    assert!(bookmark.revision >= past, "{} < {past}", bookmark.revision);
    // Without progress_notify: no bookmarks.
    let mut plain = resume(&mut client, pb::WatchAgentsRequest::default()).await;
    expect_quiet(&mut plain, Duration::from_millis(1500)).await;
}

/// A watcher that reads too slowly is ended with ABORTED; resuming from the
/// last revision it read gives it everything else, nothing twice.
pub async fn an_aborted_slow_watcher_resumes_with_nothing_missed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    register(&mut client, register_request(&["r"])).await;
    let start = current_revision(&mut client).await;
    let mut slow = resume(&mut client, after(start)).await;
    // Large events, so that they overflow every buffer on the way (HTTP/2
    // windows) and the server's queue of 4096.
    let total = 5_000;
    let padding = "x".repeat(1000);
    let mut expected = HashSet::new();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let mut client = client.clone();
        let padding = padding.clone();
        writers.spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..total / 8 {
                let cap = format!("w{w}");
                let mut request = register_request(&[cap.as_str()]);
                for k in 0..10 {
                    request
                        .metadata
                        .insert(format!("padding{k}"), padding.clone());
                }
                ids.push(register(&mut client, request).await.agent_id);
            }
            ids
        });
    }
    while let Some(ids) = writers.join_next().await {
        expected.extend(ids.unwrap());
    }
    let mut seen = HashSet::new();
    let mut last = start;
    let mut aborted = false;
    for _ in 0..total + 10 {
        match tokio::time::timeout(EVENT_WAIT, slow.message()).await {
            Ok(Ok(Some(event))) => {
                assert!(event.revision > last);
                last = event.revision;
                assert!(seen.insert(agent_of(&event).agent_id.clone()), "twice");
            }
            Ok(Err(status)) => {
                assert_eq!(status.code(), Code::Aborted, "{status:?}");
                aborted = true;
                break;
            }
            other => panic!("the slow watcher was neither fed nor aborted: {other:?}"),
        }
    }
    assert!(aborted, "a watcher {total} changes behind is ended");
    let mut resumed = resume(&mut client, after(last)).await;
    while seen.len() < expected.len() {
        let event = next_event(&mut resumed).await;
        assert!(event.revision > last);
        last = event.revision;
        assert!(seen.insert(agent_of(&event).agent_id.clone()), "twice");
    }
    assert_eq!(seen, expected);
    expect_quiet(&mut resumed, Duration::from_millis(300)).await;
}

behaviour_tests! {
    resume_replays_every_change_after_the_revision_then_live,
    resume_replays_agents_leaving_a_filtered_selection,
    resume_refuses_a_snapshot_too,
    resume_past_the_history_is_out_of_range_naming_the_oldest,
    a_future_revision_waits_for_the_registry,
    bookmarks_arrive_on_idle_streams_and_past_unselected_changes,
    an_aborted_slow_watcher_resumes_with_nothing_missed,
}
