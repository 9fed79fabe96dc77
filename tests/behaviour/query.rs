//! ListAgents and DiscoverAgents (BEHAVIOUR.md §4): ordering by
//! (registered_at, agent_id), type/field/metadata filters, paging that
//! survives churn, ALL-capability matching, the HEALTHY default, and the
//! RANKED / ROUND_ROBIN / RANDOM strategies.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use agent_registry::pb::{self, service_registry_client::ServiceRegistryClient};
use tonic::transport::Channel;

use crate::common::*;
use crate::support::*;

type Client = ServiceRegistryClient<Channel>;
/// A filter map written as pairs.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn register(client: &mut Client, request: pb::RegisterRequest) -> pb::RegisterResponse {
    client
        .register(request)
        .await
        .expect("register succeeds")
        .into_inner()
}

async fn register_caps(client: &mut Client, caps: &[&str]) -> String {
    register(client, register_request(caps)).await.agent_id
}

async fn get(client: &mut Client, id: &str) -> pb::AgentInfo {
    client
        .get_agent(pb::GetAgentRequest {
            agent_id: id.to_string(),
        })
        .await
        .expect("get_agent succeeds")
        .into_inner()
        .agent
        .expect("GetAgent carries the agent")
}

async fn list(
    client: &mut Client,
    agent_type: pb::AgentType,
    filters: &[(&str, &str)],
    page_size: i32,
    page_token: &str,
) -> pb::ListAgentsResponse {
    client
        .list_agents(pb::ListAgentsRequest {
            agent_type: agent_type as i32,
            filters: map(filters),
            page_size,
            page_token: page_token.to_string(),
        })
        .await
        .expect("list_agents succeeds")
        .into_inner()
}

/// Ids of one unpaged ListAgents call, in the server's order.
async fn list_ids(
    client: &mut Client,
    agent_type: pb::AgentType,
    filters: &[(&str, &str)],
) -> Vec<String> {
    let response = list(client, agent_type, filters, 0, "").await;
    assert!(
        response.next_page_token.is_empty(),
        "an unpaged list has no next page"
    );
    response.agents.into_iter().map(|a| a.agent_id).collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn ids_of(agents: &[pb::AgentInfo]) -> Vec<String> {
    agents.iter().map(|a| a.agent_id.clone()).collect()
}

async fn discover(client: &mut Client, request: pb::DiscoverRequest) -> pb::DiscoverResponse {
    client
        .discover_agents(request)
        .await
        .expect("discover_agents succeeds")
        .into_inner()
}

fn discover_request(
    caps: &[&str],
    filters: &[(&str, &str)],
    max_results: i32,
    strategy: pb::DiscoveryStrategy,
) -> pb::DiscoverRequest {
    pb::DiscoverRequest {
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        filters: map(filters),
        max_results,
        agent_type: 0,
        strategy: strategy as i32,
    }
}

/// Ids found for `caps` (RANKED, up to 100), as a sorted list.
async fn discover_set(client: &mut Client, caps: &[&str], filters: &[(&str, &str)]) -> Vec<String> {
    let response = discover(
        client,
        discover_request(caps, filters, 100, pb::DiscoveryStrategy::Ranked),
    )
    .await;
    sorted(ids_of(&response.agents))
}

/// BEHAVIOUR.md §4 RANKED score.
fn score(agent: &pb::AgentInfo) -> f64 {
    let health = match pb::AgentStatus::try_from(agent.status) {
        Ok(pb::AgentStatus::Healthy) => 1.0,
        Ok(pb::AgentStatus::Degraded) => 0.5,
        _ => 0.0,
    };
    let evidence = match &agent.telemetry {
        Some(t) if t.total_executions > 0 => t.success_rate,
        _ => 0.5,
    };
    0.5 * health + 0.5 * evidence
}

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

fn position(list: &[String], id: &str) -> usize {
    list.iter()
        .position(|x| x == id)
        .unwrap_or_else(|| panic!("{id} missing from {list:?}"))
}

// ---------------------------------------------------------------- ListAgents

pub async fn list_is_ordered_by_registration_time_then_agent_id(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let mut registered: Vec<(i64, String)> = Vec::new();
    for _ in 0..4 {
        let r = register(&mut client, register_request(&["order"])).await;
        registered.push((r.registered_at, r.agent_id));
    }
    // A second batch in a later wall-clock second, so both sort keys matter.
    let first_batch_second = registered
        .iter()
        .map(|(t, _)| *t)
        .max()
        .expect("four agents");
    wait_until(
        Duration::from_secs(3),
        "the clock moves to the next second",
        || async move { unix_now() > first_batch_second },
    )
    .await;
    for _ in 0..4 {
        let r = register(&mut client, register_request(&["order"])).await;
        registered.push((r.registered_at, r.agent_id));
    }
    assert!(
        registered[4..].iter().all(|(t, _)| *t > first_batch_second),
        "second batch registered in a later second: {registered:?}"
    );

    let response = list(&mut client, pb::AgentType::Unspecified, &[], 0, "").await;
    let listed: Vec<(i64, String)> = response
        .agents
        .iter()
        .map(|a| (a.registered_at, a.agent_id.clone()))
        .collect();
    assert_eq!(
        listed,
        sorted(registered),
        "ListAgents is ordered by (registered_at, agent_id)"
    );
}

pub async fn list_filters_by_agent_type_and_zero_means_any(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let mut by_type: HashMap<i32, Vec<String>> = HashMap::new();
    for (agent_type, count) in [
        (pb::AgentType::Worker, 3),
        (pb::AgentType::Scout, 2),
        (pb::AgentType::Guard, 1),
    ] {
        for _ in 0..count {
            let mut request = register_request(&["typed"]);
            request.agent_type = agent_type as i32;
            let id = register(&mut client, request).await.agent_id;
            by_type.entry(agent_type as i32).or_default().push(id);
        }
    }

    for agent_type in [
        pb::AgentType::Worker,
        pb::AgentType::Scout,
        pb::AgentType::Guard,
    ] {
        assert_eq!(
            sorted(list_ids(&mut client, agent_type, &[]).await),
            sorted(by_type[&(agent_type as i32)].clone()),
            "ListAgents agent_type {agent_type:?}"
        );
    }
    assert!(
        list_ids(&mut client, pb::AgentType::Analyst, &[])
            .await
            .is_empty(),
        "no ANALYST registered"
    );
    let all: Vec<String> = by_type.values().flatten().cloned().collect();
    assert_eq!(
        sorted(list_ids(&mut client, pb::AgentType::Unspecified, &[]).await),
        sorted(all),
        "agent_type 0 lists every type"
    );
}

pub async fn list_filters_by_namespace_cluster_version_status_and_metadata(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    // plain: all defaults, no metadata
    let plain = register_caps(&mut client, &["f"]).await;
    // blue: namespace/cluster/version set, metadata zone=eu
    let mut request = register_request(&["f"]);
    request.namespace = "blue".into();
    request.cluster = "east".into();
    request.version = "2.0.0".into();
    request.metadata = map(&[("zone", "eu"), ("tier", "gold")]);
    let blue = register(&mut client, request).await.agent_id;
    // zone_us: default namespace, metadata zone=us
    let mut request = register_request(&["f"]);
    request.metadata = map(&[("zone", "us")]);
    let zone_us = register(&mut client, request).await.agent_id;
    // degraded: default fields, telemetry making it DEGRADED, zone=eu
    let mut request = register_request(&["f"]);
    request.telemetry = Some(telemetry(0.4, 10, 10));
    request.metadata = map(&[("zone", "eu")]);
    let degraded = register(&mut client, request).await.agent_id;
    assert_eq!(
        get(&mut client, &degraded).await.status,
        pb::AgentStatus::Degraded as i32,
        "success_rate 0.4 over 10 executions is DEGRADED"
    );

    let any = pb::AgentType::Unspecified;
    let cases: Vec<(Pairs, Vec<&String>)> = vec![
        (vec![], vec![&plain, &blue, &zone_us, &degraded]),
        (vec![("namespace", "blue")], vec![&blue]),
        (
            vec![("namespace", "default")],
            vec![&plain, &zone_us, &degraded],
        ),
        (vec![("cluster", "east")], vec![&blue]),
        (
            vec![("cluster", "local")],
            vec![&plain, &zone_us, &degraded],
        ),
        (vec![("version", "2.0.0")], vec![&blue]),
        (
            vec![("version", "1.0.0")],
            vec![&plain, &zone_us, &degraded],
        ),
        (vec![("status", "DEGRADED")], vec![&degraded]),
        (vec![("status", "degraded")], vec![&degraded]),
        // HEALTHY is the original's "serving": DEGRADED agents too (§4).
        (
            vec![("status", "HEALTHY")],
            vec![&plain, &blue, &zone_us, &degraded],
        ),
        (vec![("status", "UNHEALTHY")], vec![]),
        (vec![("zone", "eu")], vec![&blue, &degraded]),
        (vec![("zone", "us")], vec![&zone_us]),
        (vec![("tier", "gold")], vec![&blue]),
        (vec![("zone", "")], vec![]),
        (vec![("missing-key", "x")], vec![]),
        (
            vec![("zone", "eu"), ("status", "HEALTHY")],
            vec![&blue, &degraded],
        ),
        (
            vec![("zone", "eu"), ("namespace", "default")],
            vec![&degraded],
        ),
        (vec![("namespace", "blue"), ("cluster", "local")], vec![]),
    ];
    for (filters, expected) in cases {
        let got = sorted(list_ids(&mut client, any, &filters).await);
        let expected = sorted(expected.into_iter().cloned().collect::<Vec<_>>());
        assert_eq!(got, expected, "ListAgents filters {filters:?}");
    }
}

pub async fn paging_250_agents_by_40_visits_each_exactly_once_in_7_pages(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let mut ids = HashSet::new();
    for _ in 0..250 {
        ids.insert(register_caps(&mut client, &["paged"]).await);
    }
    assert_eq!(ids.len(), 250);
    let unpaged = list_ids(&mut client, pb::AgentType::Unspecified, &[]).await;

    let mut visited: Vec<String> = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 20, "paging does not terminate");
        let response = list(&mut client, pb::AgentType::Unspecified, &[], 40, &token).await;
        assert!(
            response.agents.len() <= 40,
            "page {pages} has {} agents",
            response.agents.len()
        );
        visited.extend(ids_of(&response.agents));
        if response.next_page_token.is_empty() {
            assert_eq!(
                response.agents.len(),
                10,
                "last page holds the remaining 10"
            );
            break;
        }
        assert_eq!(response.agents.len(), 40, "page {pages} is full");
        token = response.next_page_token;
    }
    assert_eq!(pages, 7, "250 agents in pages of 40 take 7 pages");
    assert_eq!(visited.len(), 250, "each agent visited once");
    assert_eq!(visited.iter().cloned().collect::<HashSet<_>>(), ids);
    assert_eq!(visited, unpaged, "pages concatenate to the unpaged order");
}

pub async fn page_size_zero_returns_every_agent_in_one_response(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(register_caps(&mut client, &["all"]).await);
    }
    let response = list(&mut client, pb::AgentType::Unspecified, &[], 0, "").await;
    assert_eq!(response.agents.len(), 30);
    assert!(response.next_page_token.is_empty());
    assert_eq!(sorted(ids_of(&response.agents)), sorted(ids));
}

pub async fn paging_during_churn_visits_every_lasting_agent_exactly_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let mut stable = HashSet::new();
    let mut doomed: Vec<(String, String)> = Vec::new();
    for i in 0..150 {
        let r = register(&mut client, register_request(&["churn"])).await;
        if i % 3 == 2 {
            doomed.push((r.agent_id, r.registration_token));
        } else {
            stable.insert(r.agent_id);
        }
    }

    let mut visited: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    let mut token = String::new();
    let mut pages = 0;
    let mut added = 0;
    loop {
        pages += 1;
        assert!(pages <= 80, "paging does not terminate");
        let response = list(&mut client, pb::AgentType::Unspecified, &[], 10, &token).await;
        assert!(response.agents.len() <= 10);
        for agent in &response.agents {
            assert!(
                seen.insert(agent.agent_id.clone()),
                "agent {} visited twice (page {pages})",
                agent.agent_id
            );
            visited.push(agent.agent_id.clone());
        }
        if response.next_page_token.is_empty() {
            break;
        }
        token = response.next_page_token;

        // Churn between pages: remove 3 doomed agents (already visited ones
        // first, which shifts everything before the cursor), add 3 new ones.
        for _ in 0..3 {
            let pick =
                doomed
                    .iter()
                    .position(|(id, _)| seen.contains(id))
                    .or(if doomed.is_empty() {
                        None
                    } else {
                        Some(doomed.len() - 1)
                    });
            if let Some(index) = pick {
                let (agent_id, registration_token) = doomed.remove(index);
                let ok = client
                    .deregister(pb::DeregisterRequest {
                        agent_id,
                        registration_token,
                    })
                    .await
                    .expect("deregister")
                    .into_inner()
                    .success;
                assert!(ok, "deregistering a registered agent succeeds");
            }
        }
        for _ in 0..3 {
            register_caps(&mut client, &["churn"]).await;
            added += 1;
        }
    }
    assert!(added >= 30, "the walk saw churn ({added} added)");
    let missing: Vec<&String> = stable.iter().filter(|id| !seen.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} agents that existed throughout were skipped: {missing:?}",
        missing.len()
    );
}

// ------------------------------------------------------------ DiscoverAgents

pub async fn discover_requires_all_requested_capabilities(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let ab = register_caps(&mut client, &["cap-a", "cap-b"]).await;
    let a = register_caps(&mut client, &["cap-a"]).await;
    let bc = register_caps(&mut client, &["cap-b", "cap-c"]).await;

    assert_eq!(
        discover_set(&mut client, &["cap-a"], &[]).await,
        sorted(vec![ab.clone(), a.clone()])
    );
    assert_eq!(
        discover_set(&mut client, &["cap-a", "cap-b"], &[]).await,
        vec![ab.clone()]
    );
    assert_eq!(
        discover_set(&mut client, &["cap-b", "cap-a"], &[]).await,
        vec![ab.clone()],
        "requested order does not matter"
    );
    assert!(
        discover_set(&mut client, &["cap-a", "cap-c"], &[])
            .await
            .is_empty(),
        "no agent has both cap-a and cap-c"
    );
    assert!(discover_set(&mut client, &["cap-z"], &[]).await.is_empty());
    assert_eq!(
        discover_set(&mut client, &[], &[]).await,
        sorted(vec![ab, a, bc]),
        "no capability requested matches every agent"
    );
}

pub async fn discover_returns_healthy_then_degraded_unless_the_status_filter_names_another(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let healthy = register_caps(&mut client, &["s"]).await;
    let mut request = register_request(&["s"]);
    request.telemetry = Some(telemetry(0.4, 10, 10));
    let degraded = register(&mut client, request).await.agent_id;
    let mut request = register_request(&["s"]);
    request.telemetry = Some(telemetry(0.1, 10, 10));
    let unhealthy = register(&mut client, request).await.agent_id;
    assert_eq!(
        get(&mut client, &degraded).await.status,
        pb::AgentStatus::Degraded as i32
    );
    assert_eq!(
        get(&mut client, &unhealthy).await.status,
        pb::AgentStatus::Unhealthy as i32
    );

    // Fewer HEALTHY agents than max_results: DEGRADED ones follow (§4).
    let healthy_then_degraded = sorted(vec![healthy.clone(), degraded.clone()]);
    assert_eq!(
        discover_set(&mut client, &["s"], &[]).await,
        healthy_then_degraded
    );
    assert_eq!(
        discover_set(&mut client, &[], &[]).await,
        healthy_then_degraded
    );
    assert_eq!(
        discover_set(&mut client, &["s"], &[("status", "DEGRADED")]).await,
        vec![degraded.clone()]
    );
    assert_eq!(
        discover_set(&mut client, &["s"], &[("status", "UNHEALTHY")]).await,
        vec![unhealthy]
    );
    assert_eq!(
        discover_set(&mut client, &["s"], &[("status", "HEALTHY")]).await,
        healthy_then_degraded
    );
    let first = discover(
        &mut client,
        discover_request(&["s"], &[], 1, pb::DiscoveryStrategy::Ranked),
    )
    .await;
    assert_eq!(ids_of(&first.agents), vec![healthy], "HEALTHY comes first");
}

/// §4: every matching HEALTHY agent comes before any DEGRADED one, whatever
/// the strategy; DEGRADED agents appear only when fewer than `max_results`
/// HEALTHY ones match, and the strategy orders each group.
pub async fn discover_falls_back_to_degraded_agents_under_every_strategy(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut healthy = Vec::new();
    for rate in [0.6, 0.9, 0.75] {
        let mut request = register_request(&["fb"]);
        request.telemetry = Some(telemetry(rate, 10, 10));
        healthy.push(register(&mut client, request).await.agent_id);
    }
    let mut degraded = Vec::new();
    for rate in [0.35, 0.45] {
        let mut request = register_request(&["fb"]);
        request.telemetry = Some(telemetry(rate, 10, 10));
        degraded.push(register(&mut client, request).await.agent_id);
    }
    let healthy_set = sorted(healthy.clone());
    let degraded_set = sorted(degraded.clone());
    for strategy in [
        pb::DiscoveryStrategy::Ranked,
        pb::DiscoveryStrategy::RoundRobin,
        pb::DiscoveryStrategy::Random,
    ] {
        for round in 0..4 {
            let all = discover(&mut client, discover_request(&["fb"], &[], 5, strategy)).await;
            let ids = ids_of(&all.agents);
            assert_eq!(ids.len(), 5, "{strategy:?}");
            assert_eq!(
                sorted(ids[..3].to_vec()),
                healthy_set,
                "{strategy:?} round {round}: HEALTHY first"
            );
            assert_eq!(
                sorted(ids[3..].to_vec()),
                degraded_set,
                "{strategy:?} round {round}: then DEGRADED"
            );
            let three = discover(&mut client, discover_request(&["fb"], &[], 3, strategy)).await;
            assert_eq!(
                sorted(ids_of(&three.agents)),
                healthy_set,
                "{strategy:?}: no DEGRADED agent while HEALTHY ones fill max_results"
            );
            let four = discover(&mut client, discover_request(&["fb"], &[], 4, strategy)).await;
            let four = ids_of(&four.agents);
            assert_eq!(sorted(four[..3].to_vec()), healthy_set, "{strategy:?}");
            assert!(degraded.contains(&four[3]), "{strategy:?}: {four:?}");
        }
    }
    // RANKED orders the DEGRADED group by score too: 0.45 before 0.35.
    let ranked = discover(
        &mut client,
        discover_request(&["fb"], &[], 5, pb::DiscoveryStrategy::Ranked),
    )
    .await;
    let ids = ids_of(&ranked.agents);
    assert_eq!(
        ids[..3],
        [healthy[1].clone(), healthy[2].clone(), healthy[0].clone()]
    );
    assert_eq!(ids[3..], [degraded[1].clone(), degraded[0].clone()]);
}

/// §4: `filters["agent_type"]` by name (any case) or number, agreeing with
/// the field; `security_level` counts an agent without one as INTERNAL.
pub async fn filters_by_agent_type_key_and_security_level(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let worker = register_caps(&mut client, &["t"]).await;
    let mut request = register_request(&["t"]);
    request.agent_type = pb::AgentType::Guard as i32;
    request.metadata = map(&[("security_level", "CONFIDENTIAL")]);
    let guard = register(&mut client, request).await.agent_id;
    let mut request = register_request(&["t"]);
    request.metadata = map(&[("security_level", "INTERNAL")]);
    let internal_worker = register(&mut client, request).await.agent_id;

    let any = pb::AgentType::Unspecified;
    let workers = sorted(vec![worker.clone(), internal_worker.clone()]);
    let cases: Vec<(Pairs, Vec<String>)> = vec![
        (vec![("agent_type", "WORKER")], workers.clone()),
        (vec![("agent_type", "worker")], workers.clone()),
        (vec![("agent_type", "1")], workers.clone()),
        (vec![("agent_type", "GUARD")], vec![guard.clone()]),
        (vec![("agent_type", "SCOUT")], vec![]),
        (vec![("security_level", "INTERNAL")], workers.clone()),
        (
            vec![("security_level", "CONFIDENTIAL")],
            vec![guard.clone()],
        ),
        (
            vec![("security_level", "INTERNAL"), ("agent_type", "WORKER")],
            workers.clone(),
        ),
    ];
    for (filters, expected) in cases {
        assert_eq!(
            sorted(list_ids(&mut client, any, &filters).await),
            sorted(expected.clone()),
            "ListAgents {filters:?}"
        );
        assert_eq!(
            discover_set(&mut client, &["t"], &filters).await,
            sorted(expected),
            "DiscoverAgents {filters:?}"
        );
    }
    // The field and the key together must agree.
    assert_eq!(
        sorted(
            list_ids(
                &mut client,
                pb::AgentType::Worker,
                &[("agent_type", "WORKER")]
            )
            .await
        ),
        workers
    );
    for (field, filters) in [
        (pb::AgentType::Guard, vec![("agent_type", "WORKER")]),
        (any, vec![("agent_type", "ROBOT")]),
        (any, vec![("agent_type", "9")]),
        (any, vec![("agent_type", "")]),
    ] {
        let err = client
            .list_agents(pb::ListAgentsRequest {
                agent_type: field as i32,
                filters: map(&filters),
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{filters:?}");
        assert!(err.message().contains("agent_type"), "{}", err.message());
    }
}

pub async fn discover_max_results_zero_means_five(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let mut ids = HashSet::new();
    for _ in 0..8 {
        ids.insert(register_caps(&mut client, &["many"]).await);
    }
    for (max_results, expected) in [(0, 5), (3, 3), (1, 1), (8, 8), (100, 8)] {
        for strategy in [
            pb::DiscoveryStrategy::Ranked,
            pb::DiscoveryStrategy::RoundRobin,
            pb::DiscoveryStrategy::Random,
        ] {
            let response = discover(
                &mut client,
                discover_request(&["many"], &[], max_results, strategy),
            )
            .await;
            assert_eq!(
                response.agents.len(),
                expected,
                "max_results {max_results} with {strategy:?}"
            );
            assert!(response.agents.iter().all(|a| ids.contains(&a.agent_id)));
        }
    }
}

pub async fn discover_filters_by_agent_type_namespace_and_metadata(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let reg = |agent_type: pb::AgentType, namespace: &str, metadata: &[(&str, &str)]| {
        let mut request = register_request(&["d"]);
        request.agent_type = agent_type as i32;
        request.namespace = namespace.to_string();
        request.metadata = map(metadata);
        request
    };
    let worker_eu = register(
        &mut client,
        reg(pb::AgentType::Worker, "", &[("zone", "eu")]),
    )
    .await
    .agent_id;
    let scout_eu = register(
        &mut client,
        reg(pb::AgentType::Scout, "", &[("zone", "eu")]),
    )
    .await
    .agent_id;
    let scout_us = register(
        &mut client,
        reg(pb::AgentType::Scout, "", &[("zone", "us")]),
    )
    .await
    .agent_id;
    let scout_none = register(&mut client, reg(pb::AgentType::Scout, "", &[]))
        .await
        .agent_id;
    let guard_blue = register(
        &mut client,
        reg(pb::AgentType::Guard, "blue", &[("zone", "eu")]),
    )
    .await
    .agent_id;

    let query = |agent_type: pb::AgentType, filters: &[(&str, &str)]| {
        let mut request = discover_request(&["d"], filters, 100, pb::DiscoveryStrategy::Ranked);
        request.agent_type = agent_type as i32;
        request
    };
    let cases: Vec<(pb::AgentType, Pairs, Vec<&String>)> = vec![
        (
            pb::AgentType::Scout,
            vec![],
            vec![&scout_eu, &scout_us, &scout_none],
        ),
        (pb::AgentType::Scout, vec![("zone", "eu")], vec![&scout_eu]),
        (
            pb::AgentType::Unspecified,
            vec![("zone", "eu")],
            vec![&worker_eu, &scout_eu, &guard_blue],
        ),
        (pb::AgentType::Worker, vec![("zone", "us")], vec![]),
        (pb::AgentType::Analyst, vec![], vec![]),
        (
            pb::AgentType::Unspecified,
            vec![("namespace", "blue")],
            vec![&guard_blue],
        ),
        (
            pb::AgentType::Unspecified,
            vec![("namespace", "default"), ("zone", "eu")],
            vec![&worker_eu, &scout_eu],
        ),
        (pb::AgentType::Unspecified, vec![("zone", "")], vec![]),
    ];
    for (agent_type, filters, expected) in cases {
        let response = discover(&mut client, query(agent_type, &filters)).await;
        assert_eq!(
            sorted(ids_of(&response.agents)),
            sorted(expected.into_iter().cloned().collect::<Vec<_>>()),
            "DiscoverAgents agent_type {agent_type:?} filters {filters:?}"
        );
    }
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
    list_is_ordered_by_registration_time_then_agent_id,
    list_filters_by_agent_type_and_zero_means_any,
    list_filters_by_namespace_cluster_version_status_and_metadata,
    paging_250_agents_by_40_visits_each_exactly_once_in_7_pages,
    page_size_zero_returns_every_agent_in_one_response,
    paging_during_churn_visits_every_lasting_agent_exactly_once,
    discover_requires_all_requested_capabilities,
    discover_returns_healthy_then_degraded_unless_the_status_filter_names_another,
    discover_falls_back_to_degraded_agents_under_every_strategy,
    filters_by_agent_type_key_and_security_level,
    discover_max_results_zero_means_five,
    discover_filters_by_agent_type_namespace_and_metadata,
    ranked_discovery_orders_by_score_then_duration_then_last_seen_then_id,
    round_robin_discovery_rotates_over_every_matching_agent,
    random_discovery_samples_matching_agents_without_repeats,
}
