//! A two-second stall of Redis while writes go on.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use agent_registry::pb::{self, agent_change_event::EventType};
use tonic::Code;

use crate::{
    common::{calls::*, *},
    support::*,
};

/// Which Redis stall is available: `DEBUG SLEEP` (often disabled) or
/// `CLIENT PAUSE`.
async fn stall_redis(redis: &RedisProcess, seconds: u64) -> &'static str {
    let mut conn = redis.connection().await;
    let debug: redis::RedisResult<redis::Value> = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(0)
        .query_async(&mut conn)
        .await;
    if debug.is_ok() {
        tokio::spawn(async move {
            let _: redis::RedisResult<redis::Value> = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(seconds)
                .query_async(&mut conn)
                .await;
        });
        "DEBUG SLEEP"
    } else {
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(seconds * 1000)
            .query_async(&mut conn)
            .await
            .expect("CLIENT PAUSE");
        "CLIENT PAUSE"
    }
}

/// One attempted write of the stall test.
#[derive(Clone, Debug)]
struct Attempt {
    tag: String,
    op: &'static str,
    elapsed: Duration,
    code: Option<Code>,
    registered: Option<pb::RegisterResponse>,
    /// For a deregister: whether it answered `success = true`.
    removed: bool,
}

/// A 2 s stall of Redis while writes go on leaves a consistent registry:
/// the replica's view, a fresh replica's view and Redis agree, every
/// acknowledged registration is there, every acknowledged deregistration
/// is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_second_stall_does_not_corrupt_state() {
    count_panics();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let redis = RedisProcess::start().await;
    let server = TestServer::replica(&redis, &[]).await;
    let client = server.client().await;

    let (stream, snapshot) = watch_synced(&mut client.clone()).await;
    assert!(snapshot.is_empty());
    let watch = Collector::spawn(stream);

    let log: Arc<Mutex<Vec<Attempt>>> = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for t in 0..3 {
        let (mut client, log) = (client.clone(), log.clone());
        writers.push(tokio::spawn(async move {
            let mut mine: Vec<(String, pb::RegisterResponse)> = Vec::new();
            for i in 0..50 {
                let tag = format!("att-{t}-{i}");
                let (elapsed, result) =
                    timed(client.register(register_request(&["stall", &tag]))).await;
                let code = code_of(&result);
                let registered = match result {
                    Some(Ok(r)) => Some(r.into_inner()),
                    _ => None,
                };
                if let Some(r) = &registered {
                    mine.push((tag.clone(), r.clone()));
                }
                log.lock().unwrap().push(Attempt {
                    tag: tag.clone(),
                    op: "register",
                    elapsed,
                    code,
                    registered,
                    removed: false,
                });
                if i % 3 == 2 && !mine.is_empty() {
                    let (tag, victim) = mine.remove(0);
                    let (elapsed, result) = timed(client.deregister(pb::DeregisterRequest {
                        agent_id: victim.agent_id.clone(),
                        registration_token: victim.registration_token.clone(),
                    }))
                    .await;
                    let removed = matches!(&result, Some(Ok(r)) if r.get_ref().success);
                    log.lock().unwrap().push(Attempt {
                        tag,
                        op: "deregister",
                        elapsed,
                        code: code_of(&result),
                        registered: Some(victim),
                        removed,
                    });
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let how = stall_redis(&redis, 2).await;
    eprintln!("stalled Redis with {how}");
    for writer in writers {
        writer.await.unwrap();
    }

    // Wait for recovery: a write succeeds and reads are fresh.
    let mut probe = client.clone();
    let mut probes = Vec::new();
    let deadline = Instant::now() + RECOVERY + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(r) = probe.register(register_request(&["stall", "probe"])).await {
            probes.push(r.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(probes.len(), 1, "writes succeed again after the stall");
    wait_until(RECOVERY, "reads are fresh again", || {
        let mut client = client.clone();
        async move { !is_stale(&list(&mut client).await) }
    })
    .await;

    let attempts = log.lock().unwrap().clone();
    let unavailable = attempts
        .iter()
        .filter(|a| a.code == Some(Code::Unavailable))
        .count();
    for a in &attempts {
        assert!(a.code.is_some(), "a {} hung: {a:?}", a.op);
        assert!(
            matches!(a.code, Some(Code::Ok | Code::Unavailable)),
            "a {} answered {:?}",
            a.op,
            a.code
        );
        assert!(a.elapsed < FAIL_FAST, "a {} took {:?}", a.op, a.elapsed);
    }
    assert!(
        unavailable > 0,
        "the stall made some writes fail (else it tested nothing)"
    );

    // What must and must not be there.
    let mut must: BTreeMap<String, String> = BTreeMap::new(); // id -> tag
    let mut maybe_tags: BTreeSet<String> = BTreeSet::new(); // outcome unknown
    let mut must_not: BTreeSet<String> = BTreeSet::new();
    for a in attempts.iter().filter(|a| a.op == "register") {
        match (&a.code, &a.registered) {
            (Some(Code::Ok), Some(r)) => {
                must.insert(r.agent_id.clone(), a.tag.clone());
            }
            _ => {
                maybe_tags.insert(a.tag.clone());
            }
        }
    }
    for a in attempts.iter().filter(|a| a.op == "deregister") {
        let id = &a.registered.as_ref().unwrap().agent_id;
        if a.removed {
            must.remove(id);
            must_not.insert(id.clone());
        } else if a.code != Some(Code::Ok) {
            // A deregister that timed out may have happened.
            must.remove(id);
            maybe_tags.insert(a.tag.clone());
        }
    }
    for p in &probes {
        must.insert(p.agent_id.clone(), "probe".into());
    }

    let mut c = client.clone();
    let listed = list(&mut c).await.into_inner().agents;
    let tag_of = |a: &pb::AgentInfo| {
        a.capabilities
            .iter()
            .find(|c| c.starts_with("att-") || *c == "probe")
            .cloned()
            .unwrap_or_default()
    };
    let mut tags_seen: HashMap<String, usize> = HashMap::new();
    let mut applied_despite_unavailable = Vec::new();
    for agent in &listed {
        let tag = tag_of(agent);
        *tags_seen.entry(tag.clone()).or_default() += 1;
        assert!(
            !must_not.contains(&agent.agent_id),
            "deregistered agent {} ({tag}) is listed",
            agent.agent_id
        );
        if !must.contains_key(&agent.agent_id) {
            assert!(
                maybe_tags.contains(&tag),
                "listed agent {} ({tag}) was never acknowledged nor attempted",
                agent.agent_id
            );
            applied_despite_unavailable.push(tag.clone());
        }
        assert_eq!(agent.capabilities, vec!["stall".to_string(), tag.clone()]);
    }
    for (tag, n) in &tags_seen {
        assert!(
            *n == 1 || tag == "probe",
            "one attempt created {n} agents ({tag})"
        );
    }
    let listed_ids = ids(&listed);
    let missing: Vec<_> = must
        .iter()
        .filter(|(id, _)| !listed_ids.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged registrations missing after the stall: {missing:?}"
    );
    eprintln!(
        "{} writes failed UNAVAILABLE; {} of them were applied anyway: {applied_despite_unavailable:?}",
        unavailable,
        applied_despite_unavailable.len()
    );

    // Every listed agent is gettable; deregistered ones are not.
    for agent in &listed {
        let got = c
            .get_agent(get_request(&agent.agent_id))
            .await
            .unwrap_or_else(|s| panic!("listed {} not gettable: {s:?}", agent.agent_id))
            .into_inner()
            .agent
            .unwrap();
        assert_eq!(&got, agent);
    }
    for id in &must_not {
        let status = c
            .get_agent(get_request(id))
            .await
            .expect_err("deregistered");
        assert_eq!(status.code(), Code::NotFound);
    }

    // The watch opened before the stall either ended ABORTED or carried
    // every change: replaying it gives the final population.
    let replay = |events: &[pb::AgentChangeEvent]| {
        let mut live = BTreeSet::new();
        for e in events {
            match kind(e) {
                EventType::Deregistered | EventType::Expired => {
                    live.remove(&id_of(e));
                }
                _ => {
                    live.insert(id_of(e));
                }
            }
        }
        live
    };
    for pair in watch.events().windows(2) {
        assert!(
            pair[1].revision > pair[0].revision,
            "revisions on the watch strictly increase: {} then {}",
            pair[0].revision,
            pair[1].revision
        );
    }
    match watch.ended() {
        Some(Err(status)) => assert_eq!(status.code(), Code::Aborted, "watch ended {status:?}"),
        Some(Ok(())) => panic!("the watch ended without a status"),
        None => {
            wait_until(
                Duration::from_secs(1),
                "the surviving watch replays to the final population (no silent gap)",
                || {
                    let same = replay(&watch.events()) == listed_ids;
                    async move { same }
                },
            )
            .await;
        }
    }
    eprintln!("watch across the stall ended with {:?}", watch.ended());

    // A fresh replica reading only Redis sees the same registry.
    let fresh = TestServer::replica(&redis, &[]).await;
    let mut fc = fresh.client().await;
    let fresh_listed = list(&mut fc).await.into_inner().agents;
    let by_id = |agents: &[pb::AgentInfo]| -> BTreeMap<String, (u64, i32)> {
        agents
            .iter()
            .map(|a| (a.agent_id.clone(), (a.revision, a.status)))
            .collect()
    };
    assert_eq!(
        by_id(&fresh_listed),
        by_id(&listed),
        "a fresh replica sees the same agents, revisions and statuses"
    );
    // And Redis agrees with both.
    let mut conn = redis.connection().await;
    let members: BTreeSet<String> = redis::cmd("SMEMBERS")
        .arg("{registry}:agents")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, listed_ids, "Redis' agent set equals the view");
    let records: Vec<String> = redis::cmd("KEYS")
        .arg("{registry}:agent:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        records.len(),
        listed_ids.len(),
        "one record per listed agent"
    );

    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        panics_before,
        "the server panicked"
    );
}
