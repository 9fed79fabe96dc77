//! After Redis comes back: revisions keep increasing, and the first
//! acknowledged writes are readable at once.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use agent_registry::pb::{self, agent_change_event::EventType};

use crate::{
    common::{calls::*, *},
    support::*,
};

/// Redis restarted from an older snapshot (its `SAVE` predates the last
/// changes) must not make revisions go back: a change after the restart has
/// a larger revision than every change watchers saw before it (§4), and the
/// registry shows what the store now holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_keep_increasing_when_redis_restarts_from_an_older_snapshot() {
    let mut redis = RedisProcess::start().await;
    let server = TestServer::replica(&redis, &[]).await;
    let mut client = server.client().await;
    let (stream, _) = watch_synced(&mut client).await;
    let watch = Collector::spawn(stream);

    let kept = register(&mut client, register_request(&["rollback", "kept"])).await;
    let mut conn = redis.connection().await;
    let _: redis::Value = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    drop(conn);
    // Changes after the SAVE: Redis will lose them.
    let mut lost = Vec::new();
    for i in 0..3 {
        let r = register(
            &mut client,
            register_request(&["rollback", &format!("lost{i}")]),
        )
        .await;
        client
            .heartbeat(heartbeat_request(&r, Some(telemetry(0.9, 5))))
            .await
            .expect("heartbeat");
        lost.push(r);
    }
    wait_until(
        Duration::from_secs(1),
        "the watcher saw every change",
        || {
            let n = watch.events().len();
            async move { n >= 7 }
        },
    )
    .await;
    let seen_before = watch.events().iter().map(|e| e.revision).max().unwrap();

    redis.kill();
    redis.restart().await; // loads the dump taken before the lost changes
    let restarted = Instant::now();
    wait_until(RECOVERY, "writes succeed again", || {
        let mut client = client.clone();
        let request = heartbeat_request(&kept, None);
        async move { client.heartbeat(request).await.is_ok() }
    })
    .await;
    let after = register(&mut client, register_request(&["rollback", "after"])).await;
    wait_until(
        RECOVERY.saturating_sub(restarted.elapsed()),
        "reads are fresh again",
        || {
            let mut client = client.clone();
            async move { !is_stale(&list(&mut client).await) }
        },
    )
    .await;

    // The registry shows what the store holds now.
    let listed = ids(&list(&mut client).await.into_inner().agents);
    assert_eq!(
        listed,
        BTreeSet::from([kept.agent_id.clone(), after.agent_id.clone()]),
        "after the rollback the registry holds what Redis holds"
    );
    let info = client
        .get_agent(get_request(&after.agent_id))
        .await
        .expect("the agent registered after the restart")
        .into_inner()
        .agent
        .unwrap();
    assert!(
        info.revision > seen_before,
        "a change after Redis restarted from an older snapshot got revision {} although \
         watchers had already seen revision {seen_before}: revisions went back",
        info.revision
    );
    // A watcher opened now sees a SYNCED revision above everything before.
    let request = pb::WatchAgentsRequest {
        send_initial_snapshot: true,
        ..Default::default()
    };
    let mut stream = client.watch_agents(request).await.unwrap().into_inner();
    let mut synced = None;
    for _ in 0..100 {
        let event = tokio::time::timeout(HANG, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if kind(&event) == EventType::Synced {
            synced = Some(event.revision);
            break;
        }
    }
    let synced = synced.expect("SYNCED");
    assert!(
        synced > seen_before,
        "SYNCED revision {synced} after the rollback is not above {seen_before} seen before"
    );
}

/// Read-your-writes holds from the first write the registry acknowledges
/// after Redis comes back (§5: "the replica that took the write at once"),
/// even while the replica is still reloading its view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_writes_after_recovery_are_readable_at_once() {
    let mut redis = RedisProcess::start().await;
    let server = TestServer::replica(&redis, &[]).await;
    let mut client = server.client().await;
    register(&mut client, register_request(&["before"])).await;

    redis.kill();
    assert_unavailable(
        "Register while Redis is down",
        timed(client.register(register_request(&["down"]))).await,
    );
    redis.restart().await;
    let restarted = Instant::now();

    let mut acknowledged = Vec::new();
    let mut violations = Vec::new();
    while restarted.elapsed() < RECOVERY && acknowledged.len() < 20 {
        let Ok(r) = client.register(register_request(&["after"])).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let r = r.into_inner();
        let at = restarted.elapsed();
        match client.get_agent(get_request(&r.agent_id)).await {
            Ok(_) => {}
            Err(status) => violations.push((at, status.code(), status.message().to_string())),
        }
        acknowledged.push(r);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!acknowledged.is_empty(), "writes succeed after the restart");
    assert!(
        violations.is_empty(),
        "{} of {} writes acknowledged after Redis came back were not readable at once on \
         the replica that took them (ms after restart, code, message): {violations:?}",
        violations.len(),
        acknowledged.len()
    );
}
