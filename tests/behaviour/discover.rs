//! DiscoverAgents filters (BEHAVIOUR.md §4): ALL-capability matching, the
//! HEALTHY default and DEGRADED fallback, type/field/metadata filters, max_results.

use std::collections::HashSet;

use agent_registry::pb::{self};

use crate::common::*;
use crate::support::*;

use crate::query::{Client, Pairs, get, ids_of, list_ids, map, register, register_caps, sorted};

pub(crate) async fn discover(
    client: &mut Client,
    request: pb::DiscoverRequest,
) -> pb::DiscoverResponse {
    client
        .discover_agents(request)
        .await
        .expect("discover_agents succeeds")
        .into_inner()
}

pub(crate) fn discover_request(
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
pub(crate) fn score(agent: &pb::AgentInfo) -> f64 {
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

behaviour_tests! {
    discover_requires_all_requested_capabilities,
    discover_returns_healthy_then_degraded_unless_the_status_filter_names_another,
    discover_falls_back_to_degraded_agents_under_every_strategy,
    filters_by_agent_type_key_and_security_level,
    discover_max_results_zero_means_five,
    discover_filters_by_agent_type_namespace_and_metadata,
}
