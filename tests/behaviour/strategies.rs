//! DiscoverAgents strategies (BEHAVIOUR.md §4): RANKED by score, duration,
//! last seen and id; ROUND_ROBIN rotation; RANDOM sampling without repeats.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use agent_registry::pb::{self};

use crate::common::*;
use crate::support::*;

use crate::discover::{discover, discover_request, score};
use crate::query::{get, ids_of, position, register, register_caps};

fn avg_duration(agent: &pb::AgentInfo) -> i64 {
    agent.telemetry.as_ref().map_or(0, |t| t.avg_duration_ms)
}

/// The RANKED order of BEHAVIOUR.md §4, computed from the agents' state.
fn ranked_order(mut agents: Vec<pb::AgentInfo>) -> Vec<String> {
    agents.sort_by(|x, y| {
        score(y)
            .partial_cmp(&score(x))
            .expect("finite scores")
            .then(avg_duration(x).cmp(&avg_duration(y)))
            .then(y.last_seen.cmp(&x.last_seen))
            .then(x.agent_id.cmp(&y.agent_id))
    });
    ids_of(&agents)
}

pub async fn ranked_discovery_orders_by_score_then_duration_then_last_seen_then_id(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let reg = |t: Option<pb::AgentTelemetry>| {
        let mut request = register_request(&["rank"]);
        request.telemetry = t;
        request
    };
    let mut ids: HashMap<&str, (String, String)> = HashMap::new();
    for (name, t) in [
        ("a", Some(telemetry(1.0, 30, 10))),  // 1.0
        ("b", Some(telemetry(0.9, 100, 10))), // 0.95, slower
        ("c", Some(telemetry(0.9, 50, 10))),  // 0.95, faster
        ("f", Some(telemetry(0.8, 20, 10))),  // 0.9, seen earlier
        ("g", Some(telemetry(0.8, 20, 10))),  // 0.9, seen later
        ("h", Some(telemetry(0.7, 10, 10))),  // 0.85, tie on everything but id
        ("i", Some(telemetry(0.7, 10, 10))),
        ("d", None),                        // 0.75 (no executions), avg 0
        ("e", Some(telemetry(0.5, 1, 10))), // 0.75, avg 1
        ("z", Some(telemetry(0.0, 5, 0))),  // 0.75 (no executions yet), avg 5
    ] {
        let r = register(&mut client, reg(t)).await;
        ids.insert(name, (r.agent_id, r.registration_token));
    }
    // g heartbeats (same telemetry) in a later second than f's last_seen.
    let f_seen = get(&mut client, &ids["f"].0).await.last_seen;
    wait_until(
        Duration::from_secs(3),
        "the clock passes f's last_seen",
        || async move { unix_now() > f_seen },
    )
    .await;
    client
        .heartbeat(pb::HeartbeatRequest {
            agent_id: ids["g"].0.clone(),
            telemetry: Some(telemetry(0.8, 20, 10)),
            registration_token: ids["g"].1.clone(),
        })
        .await
        .expect("heartbeat g");
    let mut agents = Vec::new();
    for (id, _) in ids.values() {
        agents.push(get(&mut client, id).await);
    }
    assert!(
        agents
            .iter()
            .all(|a| a.status == pb::AgentStatus::Healthy as i32)
    );
    let g = get(&mut client, &ids["g"].0).await;
    assert!(g.last_seen > f_seen, "g was seen after f");
    let expected = ranked_order(agents);
    {
        let p = |name: &str| position(&expected, &ids[name].0);
        // The reference order exercises each rule.
        assert_eq!(p("a"), 0);
        assert!(p("c") < p("b") && p("g") < p("f") && p("d") < p("e") && p("e") < p("z"));
    }

    let mut first: Option<Vec<String>> = None;
    for strategy in [
        pb::DiscoveryStrategy::Ranked as i32,
        0,
        pb::DiscoveryStrategy::Ranked as i32,
    ] {
        let mut request = discover_request(&["rank"], &[], 100, pb::DiscoveryStrategy::Ranked);
        request.strategy = strategy;
        let response = discover(&mut client, request).await;
        assert!(response.ranked, "RANKED discovery says ranked = true");
        let got = ids_of(&response.agents);
        assert_eq!(got, expected, "RANKED order");
        if let Some(first) = &first {
            assert_eq!(&got, first, "RANKED is deterministic");
        }
        first = Some(got);
    }
    // max_results keeps the best ones.
    let response = discover(
        &mut client,
        discover_request(&["rank"], &[], 3, pb::DiscoveryStrategy::Ranked),
    )
    .await;
    assert_eq!(ids_of(&response.agents), expected[..3].to_vec());

    // Within DEGRADED agents: score, then duration.
    let mut degraded = HashMap::new();
    for (name, t) in [
        ("p", telemetry(0.45, 10, 20)), // 0.475
        ("q", telemetry(0.35, 10, 20)), // 0.425
        ("r", telemetry(0.45, 5, 20)),  // 0.475, faster
    ] {
        let mut request = register_request(&["rank"]);
        request.telemetry = Some(t);
        degraded.insert(name, register(&mut client, request).await.agent_id);
    }
    let response = discover(
        &mut client,
        discover_request(
            &["rank"],
            &[("status", "DEGRADED")],
            100,
            pb::DiscoveryStrategy::Ranked,
        ),
    )
    .await;
    assert!(response.ranked);
    assert_eq!(
        ids_of(&response.agents),
        vec![
            degraded["r"].clone(),
            degraded["p"].clone(),
            degraded["q"].clone()
        ],
        "RANKED order among DEGRADED agents"
    );
}

pub async fn round_robin_discovery_rotates_over_every_matching_agent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let mut matching = HashSet::new();
    for _ in 0..4 {
        matching.insert(register_caps(&mut client, &["rr", "extra"]).await);
    }
    register_caps(&mut client, &["other"]).await;
    let mut request = register_request(&["rr"]);
    request.telemetry = Some(telemetry(0.4, 10, 10)); // DEGRADED: not matching
    register(&mut client, request).await;

    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..8 {
        let response = discover(
            &mut client,
            discover_request(&["rr"], &[], 1, pb::DiscoveryStrategy::RoundRobin),
        )
        .await;
        assert!(!response.ranked, "ROUND_ROBIN says ranked = false");
        assert_eq!(response.agents.len(), 1);
        let id = response.agents[0].agent_id.clone();
        assert!(matching.contains(&id), "{id} does not match");
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(
        counts.len(),
        4,
        "8 calls over 4 agents reach each: {counts:?}"
    );
    assert!(
        counts.values().all(|&n| n == 2),
        "each agent twice: {counts:?}"
    );

    let mut previous: Option<Vec<String>> = None;
    let mut firsts = HashSet::new();
    for call in 0..4 {
        let response = discover(
            &mut client,
            discover_request(&["rr"], &[], 4, pb::DiscoveryStrategy::RoundRobin),
        )
        .await;
        assert!(!response.ranked);
        let got = ids_of(&response.agents);
        assert_eq!(
            got.iter().cloned().collect::<HashSet<_>>(),
            matching,
            "call {call} returns all 4 matching agents"
        );
        assert_eq!(got.len(), 4);
        firsts.insert(got[0].clone());
        if let Some(previous) = &previous {
            let mut rotated = previous.clone();
            rotated.rotate_left(1);
            assert_eq!(got, rotated, "each call starts one agent later");
        }
        previous = Some(got);
    }
    assert_eq!(firsts.len(), 4, "4 calls start at 4 different agents");
}

pub async fn random_discovery_samples_matching_agents_without_repeats(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let mut matching = HashSet::new();
    for _ in 0..4 {
        matching.insert(register_caps(&mut client, &["rnd"]).await);
    }
    register_caps(&mut client, &["not-rnd"]).await;

    for max_results in [4, 2, 10] {
        for _ in 0..5 {
            let response = discover(
                &mut client,
                discover_request(&["rnd"], &[], max_results, pb::DiscoveryStrategy::Random),
            )
            .await;
            assert!(!response.ranked, "RANDOM says ranked = false");
            let got = ids_of(&response.agents);
            assert_eq!(got.len(), (max_results as usize).min(4));
            let unique: HashSet<String> = got.iter().cloned().collect();
            assert_eq!(unique.len(), got.len(), "no repeats: {got:?}");
            assert!(unique.is_subset(&matching), "only matching agents: {got:?}");
        }
    }

    let mut seen = HashSet::new();
    for _ in 0..50 {
        let response = discover(
            &mut client,
            discover_request(&["rnd"], &[], 1, pb::DiscoveryStrategy::Random),
        )
        .await;
        assert_eq!(response.agents.len(), 1);
        seen.insert(response.agents[0].agent_id.clone());
    }
    assert!(
        seen.len() > 1,
        "50 random picks out of 4 agents always gave the same one"
    );
}

behaviour_tests! {
    ranked_discovery_orders_by_score_then_duration_then_last_seen_then_id,
    round_robin_discovery_rotates_over_every_matching_agent,
    random_discovery_samples_matching_agents_without_repeats,
}
