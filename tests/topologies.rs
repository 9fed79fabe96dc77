//! BEHAVIOUR.md §8 on real topologies (processes of the test's own on
//! loopback, `common::topology`): a primary + replica + three Sentinels, and
//! a six-node Redis Cluster.
//!
//! - The behaviour suite's core (register, heartbeat, list, discover,
//!   watch, notify) runs on both: a selected subset of `tests/behaviour/`,
//!   because every test starts its own topology (one process per test under
//!   nextest) and the whole suite on six-node clusters would take too long.
//! - Failovers (SENTINEL FAILOVER, SIGKILL of the primary, SIGKILL of the
//!   slot's primary): writes succeed again within 5 s of the promotion with
//!   no registry restart, agents heartbeating throughout stay HEALTHY with
//!   no STATUS_CHANGED/EXPIRED event, and what was written before is there.
//! - `--redis-wait-replicas 1`: no acknowledged registration is lost when the
//!   primary is SIGKILLed right after.
//! - Two registry replicas on a cluster see each other's writes, watch
//!   events and notifications (sharded pub/sub).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "topologies/capacity.rs"]
mod capacity;
mod common;
#[path = "topologies/failover.rs"]
mod failover;

/// Stands in for `common`'s macro in the behaviour files included below:
/// instead of one test per backend, each behaviour becomes callable as
/// `<module>::on::<name>(backend)` for the selected tests of this file.
macro_rules! behaviour_tests {
    ($($name:ident),* $(,)?) => {
        #[allow(dead_code)]
        pub(crate) mod on {
            $(
                pub(crate) async fn $name(backend: $crate::common::Backend) {
                    super::$name(backend).await
                }
            )*
        }
    };
}

#[path = "behaviour/discover.rs"]
mod discover;
#[path = "behaviour/heartbeat.rs"]
mod heartbeat;
#[path = "behaviour/lifecycle.rs"]
mod lifecycle;
#[path = "behaviour/notify.rs"]
mod notify;
#[path = "behaviour/query.rs"]
mod query;
#[path = "behaviour/reregister.rs"]
mod reregister;
#[path = "behaviour/strategies.rs"]
mod strategies;
#[path = "behaviour/support.rs"]
mod support;
#[path = "behaviour/watch.rs"]
mod watch;
#[path = "behaviour/watch_filters.rs"]
mod watch_filters;
#[path = "behaviour/watch_snapshot.rs"]
mod watch_snapshot;

use std::time::{Duration, Instant};

use agent_registry::pb::{
    self, agent_change_event::EventType, service_registry_client::ServiceRegistryClient,
};
use common::{
    Backend, TestServer, register_request,
    topology::{ClusterTopology, SentinelTopology},
    wait_until,
};
use tonic::transport::Channel;

/// Runs the selected behaviour tests on the Sentinel and Cluster backends.
macro_rules! core_suite {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sentinel {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::on::$name(crate::common::Backend::Sentinel).await
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::on::$name(crate::common::Backend::Cluster).await
                }
            )*
        }
    };
}

core_suite! {
    reregister::reregister_with_id_and_token_replaces_the_agent_in_place,
    heartbeat::heartbeat_advances_last_seen_and_expires_at,
    heartbeat::deregister_removes_the_agent,
    query::list_filters_by_agent_type_and_zero_means_any,
    discover::discover_requires_all_requested_capabilities,
    watch::watch_reports_each_change_with_the_full_agent_and_increasing_revisions,
    watch_snapshot::a_snapshot_watch_sends_every_matching_agent_then_synced_then_live_changes,
    notify::a_live_notification_reaches_an_open_subscription,
    notify::notifications_are_numbered_per_agent_and_report_delivery,
}

// === failover scenarios ===

/// An agent of the scenario: id and token.
#[derive(Clone)]
struct Agent {
    id: String,
    token: String,
}

async fn register(client: &mut ServiceRegistryClient<Channel>, ttl: i32) -> Agent {
    let mut request = register_request(&["failover"]);
    request.ttl_seconds = ttl;
    let reply = tokio::time::timeout(Duration::from_secs(3), client.register(request))
        .await
        .expect("register answers")
        .expect("register succeeds")
        .into_inner();
    Agent {
        id: reply.agent_id,
        token: reply.registration_token,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_no_acknowledged_registration_is_lost_to_a_sigkill() {
    let mut topology = SentinelTopology::start().await;
    let server = TestServer::on_store(
        Backend::Sentinel,
        &topology.store_args(),
        &["--redis-wait-replicas", "1"],
    )
    .await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(register(&mut client, 600).await.id);
    }
    let old = topology.primary_port().await.unwrap();
    let index = topology.primary_index().await;
    topology.data[index].kill();
    let promoted = topology.wait_promotion(old).await;
    let count: usize = topology.data[promoted]
        .query(redis::cmd("SCARD").arg("{registry}:agents"))
        .await
        .unwrap();
    assert_eq!(count, 200, "acknowledged registrations lost");
    // No replica is left to acknowledge a write now: writes answer
    // UNAVAILABLE (outcome unknown) until one joins; reads follow the new
    // primary (the view reloads from it).
    let refused = client
        .register(register_request(&["no-replica-left"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    for id in &ids {
        wait_until(
            Duration::from_secs(10),
            "registry reads the new primary",
            || {
                let mut client = client.clone();
                let id = id.clone();
                async move {
                    client
                        .get_agent(pb::GetAgentRequest { agent_id: id })
                        .await
                        .is_ok()
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_a_cluster_see_each_others_writes_watch_events_and_notifications() {
    let cluster = ClusterTopology::start().await;
    let a = TestServer::on_store(Backend::Cluster, &cluster.store_args(), &[]).await;
    let b = TestServer::on_store(Backend::Cluster, &cluster.store_args(), &[]).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let (mut watch_b, _) = common::watch_synced(&mut cb).await;

    let agent = register(&mut ca, 60).await;
    let event = tokio::time::timeout(Duration::from_secs(5), watch_b.message())
        .await
        .expect("B's watch sees A's write")
        .unwrap()
        .unwrap();
    assert_eq!(event.event_type, EventType::Registered as i32);
    assert_eq!(event.agent.unwrap().agent_id, agent.id);
    let read = cb
        .get_agent(pb::GetAgentRequest {
            agent_id: agent.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.agent.unwrap().agent_id, agent.id);

    // A subscriber on A, a notification through B.
    let mut request = tonic::Request::new(pb::SubscribeNotificationsRequest {
        agent_id: agent.id.clone(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-registration-token", agent.token.parse().unwrap());
    let mut notifications = ca
        .subscribe_notifications(request)
        .await
        .unwrap()
        .into_inner();
    let mut delivered = false;
    for _ in 0..50 {
        let reply = cb
            .notify_agent(pb::NotifyAgentRequest {
                agent_id: agent.id.clone(),
                notification_type: "task".into(),
                message: "hello".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if reply.delivered {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(delivered, "the subscriber on A never counted as a receiver");
    let got = tokio::time::timeout(Duration::from_secs(5), notifications.message())
        .await
        .expect("A's subscriber gets B's notification")
        .unwrap()
        .unwrap();
    assert_eq!(got.message, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_nodes_that_are_not_a_cluster_are_one_plain_redis() {
    let redis = common::RedisProcess::start().await;
    let store = vec![
        "--store".to_owned(),
        "redis".to_owned(),
        "--redis-cluster-nodes".to_owned(),
        format!("127.0.0.1:{},127.0.0.1:1", redis.port),
    ];
    let server = TestServer::on_store(Backend::Redis, &store, &[]).await;
    let mut client = server.client().await;
    let agent = register(&mut client, 60).await;
    let mut conn = redis.connection().await;
    let count: usize = redis::cmd("SCARD")
        .arg("{registry}:agents")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 1, "the agent {} is in the plain Redis", agent.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_replica_that_is_not_there_is_unavailable_within_two_seconds() {
    let redis = common::RedisProcess::start().await;
    let server = TestServer::replica(&redis, &["--redis-wait-replicas", "1"]).await;
    let mut client = server.client().await;
    let started = Instant::now();
    let refused = client
        .register(register_request(&["unreplicated"]))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(2),
        "WAIT should block about 1 s: {took:?}"
    );
    // The outcome is unknown to the client, but here the write was applied.
    let mut conn = redis.connection().await;
    let count: usize = redis::cmd("SCARD")
        .arg("{registry}:agents")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 1);
}
