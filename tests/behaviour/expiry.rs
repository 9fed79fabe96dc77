//! Expiry (BEHAVIOUR.md §4) on a server with `--removal-grace 1`: an agent
//! whose heartbeats stop turns UNHEALTHY at register + ttl and is removed at
//! register + ttl + grace, each transition on time and exactly once per
//! watcher; a heartbeat in between revives it; a heartbeating agent stays
//! HEALTHY; `expires_at` is `last_seen + ttl`.

use std::time::Duration;

use agent_registry::pb::{
    self, agent_change_event::EventType, service_registry_client::ServiceRegistryClient,
};
use tokio::time::Instant;
use tonic::{Code, transport::Channel};

use crate::common::*;
use crate::support::*;

type Client = ServiceRegistryClient<Channel>;

/// Tolerance for "never early": millisecond rounding between clocks.
const EARLY_SLACK: Duration = Duration::from_millis(10);

/// A watch of every agent, read up to its SYNCED.
async fn watch_synced(client: &mut Client) -> Events {
    let mut stream = client
        .watch_agents(pb::WatchAgentsRequest {
            send_initial_snapshot: true,
            ..Default::default()
        })
        .await
        .expect("watch_agents succeeds")
        .into_inner();
    for _ in 0..1000 {
        if kind(&next_event(&mut stream).await) == EventType::Synced {
            return stream;
        }
    }
    panic!("no SYNCED");
}

async fn register_with_ttl(client: &mut Client, ttl_seconds: i32) -> pb::RegisterResponse {
    let mut request = register_request(&["mortal"]);
    request.ttl_seconds = ttl_seconds;
    client
        .register(request)
        .await
        .expect("register succeeds")
        .into_inner()
}

async fn heartbeat(
    client: &mut Client,
    agent: &pb::RegisterResponse,
) -> Result<pb::HeartbeatResponse, tonic::Status> {
    client
        .heartbeat(with_token(
            pb::HeartbeatRequest {
                agent_id: agent.agent_id.clone(),
                telemetry: None,
                registration_token: String::new(),
            },
            &agent.registration_token,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn get(client: &mut Client, agent_id: &str) -> Result<pb::AgentInfo, tonic::Status> {
    client
        .get_agent(pb::GetAgentRequest {
            agent_id: agent_id.to_string(),
        })
        .await
        .map(|r| r.into_inner().agent.expect("GetAgent carries the agent"))
}

/// Reads `count` events, each with the instant it arrived.
async fn timed_events(stream: &mut Events, count: usize) -> Vec<(pb::AgentChangeEvent, Instant)> {
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        let event = next_event(stream).await;
        events.push((event, Instant::now()));
    }
    events
}

fn assert_within(
    what: &str,
    at: Instant,
    not_before: Instant,
    not_after: Instant,
    origin: Instant,
) {
    assert!(
        at + EARLY_SLACK >= not_before,
        "{what} too early: {:?} after register, expected at least {:?}",
        at - origin,
        not_before - origin
    );
    assert!(
        at <= not_after,
        "{what} too late: {:?} after register, expected at most {:?}",
        at - origin,
        not_after - origin
    );
}

// -------------------------------------------------------------------- tests

pub async fn an_agent_without_heartbeats_turns_unhealthy_then_expires_once_per_watcher(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut w1 = watch_synced(&mut client).await;
    let mut other_client = server.client().await;
    let mut w2 = watch_synced(&mut other_client).await;

    let t0 = Instant::now();
    let a = register_with_ttl(&mut client, 1).await;
    let t1 = Instant::now();
    assert_eq!(a.ttl_seconds, 1, "ttl 1 is granted (min-ttl 1)");
    assert_eq!(a.heartbeat_interval_seconds, 1, "max(1, 1 / 3)");

    let (e1, e2) = tokio::join!(timed_events(&mut w1, 3), timed_events(&mut w2, 3));
    let mut revisions = Vec::new();
    for (watcher, events) in [("watcher 1", &e1), ("watcher 2", &e2)] {
        let kinds: Vec<EventType> = events.iter().map(|(e, _)| kind(e)).collect();
        assert_eq!(
            kinds,
            vec![
                EventType::Registered,
                EventType::StatusChanged,
                EventType::Expired
            ],
            "{watcher}: {events:?}"
        );
        for (event, _) in events {
            assert_eq!(agent_of(event).agent_id, a.agent_id);
            assert_eq!(event.revision, agent_of(event).revision);
        }
        let (changed, unhealthy_at) = &events[1];
        assert_eq!(changed.previous_status, pb::AgentStatus::Healthy as i32);
        assert_eq!(agent_of(changed).status, pb::AgentStatus::Unhealthy as i32);
        assert_within(
            &format!("{watcher}: UNHEALTHY"),
            *unhealthy_at,
            t0 + Duration::from_secs(1),
            t1 + Duration::from_millis(2500),
            t0,
        );
        let (expired, expired_at) = &events[2];
        assert_eq!(
            agent_of(expired).status,
            pb::AgentStatus::Unhealthy as i32,
            "EXPIRED carries the last state"
        );
        assert_eq!(agent_of(expired).capabilities, vec!["mortal".to_string()]);
        assert_within(
            &format!("{watcher}: EXPIRED"),
            *expired_at,
            t0 + Duration::from_secs(2),
            t1 + Duration::from_millis(3500),
            t0,
        );
        let revs: Vec<u64> = events.iter().map(|(e, _)| e.revision).collect();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "{watcher}: revisions {revs:?}"
        );
        revisions.push(revs);
    }
    assert_eq!(
        revisions[0], revisions[1],
        "both watchers see the same changes"
    );

    let status = get(&mut client, &a.agent_id)
        .await
        .expect_err("expired agent is gone");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = heartbeat(&mut client, &a)
        .await
        .expect_err("expired agent cannot heartbeat");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let listed = client
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .expect("list_agents")
        .into_inner()
        .agents;
    assert!(listed.is_empty(), "expired agent not listed: {listed:?}");

    // Exactly one of each: nothing more on either stream.
    tokio::join!(
        expect_quiet(&mut w1, Duration::from_millis(1200)),
        expect_quiet(&mut w2, Duration::from_millis(1200)),
    );
}

pub async fn a_heartbeat_while_unhealthy_revives_the_agent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut stream = watch_synced(&mut client).await;

    // ttl 2: UNHEALTHY at +2 s, removal due at +3 s.
    let t0 = Instant::now();
    let a = register_with_ttl(&mut client, 2).await;
    let t1 = Instant::now();
    assert_eq!(a.ttl_seconds, 2);
    let events = timed_events(&mut stream, 2).await;
    assert_eq!(kind(&events[0].0), EventType::Registered);
    let (changed, unhealthy_at) = &events[1];
    assert_eq!(kind(changed), EventType::StatusChanged, "{changed:?}");
    assert_eq!(agent_of(changed).status, pb::AgentStatus::Unhealthy as i32);
    assert_within(
        "UNHEALTHY",
        *unhealthy_at,
        t0 + Duration::from_secs(2),
        t1 + Duration::from_millis(3000),
        t0,
    );
    let listed = get(&mut client, &a.agent_id)
        .await
        .expect("still listed during grace");
    assert_eq!(listed.status, pb::AgentStatus::Unhealthy as i32);

    let revived_at = Instant::now();
    let response = heartbeat(&mut client, &a)
        .await
        .expect("heartbeat during the grace period succeeds");
    assert_eq!(response.status, pb::AgentStatus::Healthy as i32);
    let back = next_event(&mut stream).await;
    assert_eq!(kind(&back), EventType::StatusChanged, "{back:?}");
    assert_eq!(agent_of(&back).agent_id, a.agent_id);
    assert_eq!(back.previous_status, pb::AgentStatus::Unhealthy as i32);
    assert_eq!(agent_of(&back).status, pb::AgentStatus::Healthy as i32);
    assert!(back.revision > changed.revision);

    // The original removal deadline (+3 s) passes without an event; the next
    // transition is not due before revived_at + 2 s.
    let quiet_until = revived_at + Duration::from_millis(1900);
    expect_quiet(
        &mut stream,
        quiet_until.saturating_duration_since(Instant::now()),
    )
    .await;
    assert!(Instant::now() >= t0 + Duration::from_millis(3500));
    let agent = get(&mut client, &a.agent_id)
        .await
        .expect("revived agent stays");
    assert_eq!(agent.status, pb::AgentStatus::Healthy as i32);
}

pub async fn an_agent_heartbeating_every_300ms_with_ttl_1_stays_healthy(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut stream = watch_synced(&mut client).await;

    let a = register_with_ttl(&mut client, 1).await;
    let event = next_event(&mut stream).await;
    assert_eq!(kind(&event), EventType::Registered);

    let mut beat_client = server.client().await;
    let beating = a.clone();
    let beats = tokio::spawn(async move {
        let mut statuses = Vec::new();
        let mut interval = tokio::time::interval(Duration::from_millis(300));
        for _ in 0..11 {
            interval.tick().await;
            statuses.push(
                heartbeat(&mut beat_client, &beating)
                    .await
                    .map(|r| r.status),
            );
        }
        statuses
    });
    expect_quiet(&mut stream, Duration::from_secs(3)).await;
    let statuses = beats.await.expect("heartbeat task");
    for (i, status) in statuses.into_iter().enumerate() {
        assert_eq!(
            status.expect("heartbeat succeeds"),
            pb::AgentStatus::Healthy as i32,
            "heartbeat {i}"
        );
    }
    let agent = get(&mut client, &a.agent_id)
        .await
        .expect("agent still registered");
    assert_eq!(agent.status, pb::AgentStatus::Healthy as i32);
}

pub async fn expires_at_is_last_seen_plus_the_granted_ttl(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    for (asked, granted, interval) in [(5, 5, 1), (9, 9, 3), (0, 60, 20), (1, 1, 1)] {
        let a = register_with_ttl(&mut client, asked).await;
        assert_eq!(a.ttl_seconds, granted, "ttl asked {asked}");
        assert_eq!(a.heartbeat_interval_seconds, interval, "ttl asked {asked}");
        let agent = get(&mut client, &a.agent_id).await.expect("registered");
        assert_eq!(agent.registered_at, a.registered_at);
        assert!(
            (agent.last_seen - agent.registered_at).abs() <= 1,
            "last_seen is the registration time: {agent:?}"
        );
        let delta = agent.expires_at - (agent.last_seen + i64::from(granted));
        assert!(delta.abs() <= 1, "expires_at = last_seen + ttl: {agent:?}");

        let beat = heartbeat(&mut client, &a).await.expect("heartbeat");
        let delta = beat.expires_at - (beat.last_seen + i64::from(granted));
        assert!(
            delta.abs() <= 1,
            "heartbeat: expires_at = last_seen + ttl: {beat:?}"
        );
        let agent = get(&mut client, &a.agent_id).await.expect("registered");
        assert_eq!(agent.last_seen, beat.last_seen);
        assert_eq!(agent.expires_at, beat.expires_at);
    }
}

behaviour_tests! {
    an_agent_without_heartbeats_turns_unhealthy_then_expires_once_per_watcher,
    a_heartbeat_while_unhealthy_revives_the_agent,
    an_agent_heartbeating_every_300ms_with_ttl_1_stays_healthy,
    expires_at_is_last_seen_plus_the_granted_ttl,
}
