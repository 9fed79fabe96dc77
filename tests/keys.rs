//! Key injection on the Redis store: client strings full of Redis key and
//! glob syntax, quotes and unicode round-trip exactly through every read,
//! discovery by them is exact, no client string ever becomes part of a
//! Redis key or channel name, and registries with different
//! `--redis-prefix` on one Redis are isolated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "keys/prefixes.rs"]
mod prefixes;
#[path = "keys/round_trip.rs"]
mod round_trip;
use common::{calls::*, *};

use std::time::Duration;

use agent_registry::pb::{self, agent_change_event::EventType};
use tonic::Streaming;

type Events = Streaming<pb::AgentChangeEvent>;

const WAIT: Duration = Duration::from_secs(5);

async fn get(client: &mut Client, id: &str) -> Result<pb::AgentInfo, tonic::Status> {
    client
        .get_agent(pb::GetAgentRequest {
            agent_id: id.to_string(),
        })
        .await
        .map(|r| r.into_inner().agent.expect("GetAgent carries the agent"))
}

async fn list(client: &mut Client, filters: &[(&str, &str)]) -> Vec<pb::AgentInfo> {
    client
        .list_agents(pb::ListAgentsRequest {
            filters: filters
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("list with {filters:?}: {s:?}"))
        .into_inner()
        .agents
}

async fn discover(
    client: &mut Client,
    capabilities: &[&str],
    filters: &[(&str, &str)],
) -> Vec<pb::AgentInfo> {
    client
        .discover_agents(pb::DiscoverRequest {
            capabilities: capabilities.iter().map(|s| s.to_string()).collect(),
            filters: filters
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            max_results: 100,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("discover {capabilities:?}: {s:?}"))
        .into_inner()
        .agents
}

fn ids(agents: &[pb::AgentInfo]) -> Vec<String> {
    let mut ids: Vec<String> = agents.iter().map(|a| a.agent_id.clone()).collect();
    ids.sort();
    ids
}

async fn watch_synced(client: &mut Client, request: pb::WatchAgentsRequest) -> Events {
    let mut request = request;
    request.send_initial_snapshot = true;
    let mut stream = client
        .watch_agents(request)
        .await
        .expect("watch_agents succeeds")
        .into_inner();
    for _ in 0..10_000 {
        let event = next_event(&mut stream).await;
        if kind(&event) == EventType::Synced {
            return stream;
        }
    }
    panic!("no SYNCED");
}

async fn next_event(stream: &mut Events) -> pb::AgentChangeEvent {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an event in time")
        .expect("watch stream healthy")
        .expect("watch stream open")
}

fn is_canonical_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok_and(|u| u.hyphenated().to_string() == s)
}

/// Whether `key` is one of the registry's own key names under `prefix`.
fn allowed_key(prefix: &str, key: &str) -> bool {
    let Some(rest) = key.strip_prefix(&format!("{{{prefix}}}:")) else {
        return false;
    };
    match rest {
        "due" | "rev" | "agents" | "clock" | "shift" | "history" | "hfloor" | "probers" => true,
        _ => ["agent:", "notify:"]
            .iter()
            .any(|kind| rest.strip_prefix(kind).is_some_and(is_canonical_uuid)),
    }
}

/// Whether `channel` is one of the registry's channel names under `prefix`.
fn allowed_channel(prefix: &str, channel: &str) -> bool {
    let Some(rest) = channel.strip_prefix(&format!("{{{prefix}}}:")) else {
        return false;
    };
    rest == "changes" || rest.strip_prefix("mbox:").is_some_and(is_canonical_uuid)
}

/// Every key in Redis, as text (a key that is not UTF-8 fails the test).
async fn all_keys(redis: &RedisProcess) -> Vec<String> {
    let mut conn = redis.connection().await;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.into_iter()
        .map(|k| String::from_utf8(k).expect("every key is UTF-8"))
        .collect()
}

async fn all_channels(redis: &RedisProcess) -> Vec<String> {
    let mut conn = redis.connection().await;
    let channels: Vec<Vec<u8>> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query_async(&mut conn)
        .await
        .unwrap();
    channels
        .into_iter()
        .map(|k| String::from_utf8(k).expect("every channel is UTF-8"))
        .collect()
}

/// Asserts every key and channel in Redis is one of `prefixes`' own names
/// and contains none of the client strings.
async fn assert_only_registry_names(redis: &RedisProcess, prefixes: &[&str]) -> Vec<String> {
    let keys = all_keys(redis).await;
    assert!(!keys.is_empty(), "the registry keeps keys in Redis");
    for key in &keys {
        assert!(
            prefixes.iter().any(|p| allowed_key(p, key)),
            "unexpected Redis key {key:?} (allowed: {{prefix}}:agent:<uuid>, \
             {{prefix}}:notify:<uuid>, due, rev, agents, clock, shift, history, hfloor, probers)"
        );
    }
    for channel in all_channels(redis).await {
        assert!(
            prefixes.iter().any(|p| allowed_channel(p, &channel)),
            "unexpected Redis channel {channel:?}"
        );
    }
    keys
}

// -------------------------------------------------------------------- tests

/// The name checker itself refuses what it must (so the tests above can
/// fail).
#[test]
fn the_key_name_checker_refuses_client_strings() {
    let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    assert!(allowed_key("registry", &format!("{{registry}}:agent:{id}")));
    assert!(allowed_key(
        "registry",
        &format!("{{registry}}:notify:{id}")
    ));
    assert!(allowed_key("registry", "{registry}:due"));
    assert!(!allowed_key("registry", "{registry}:agent:x"));
    assert!(!allowed_key(
        "registry",
        &format!("{{registry}}:agent:{id}:x")
    ));
    assert!(!allowed_key(
        "registry",
        &format!("{{registry}}:agent:{}", id.to_uppercase())
    ));
    assert!(!allowed_key("registry", "{registry}:cap:gpu"));
    assert!(!allowed_key("registry", "{other}:due"));
    assert!(!allowed_key("registry", "registry:due"));
    assert!(allowed_channel("registry", "{registry}:changes"));
    assert!(!allowed_channel("registry", "{registry}:mbox:ζ"));
}
