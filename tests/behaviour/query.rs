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

pub(crate) type Client = ServiceRegistryClient<Channel>;
/// A filter map written as pairs.
pub(crate) type Pairs<'a> = Vec<(&'a str, &'a str)>;

pub(crate) fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) async fn register(
    client: &mut Client,
    request: pb::RegisterRequest,
) -> pb::RegisterResponse {
    client
        .register(request)
        .await
        .expect("register succeeds")
        .into_inner()
}

pub(crate) async fn register_caps(client: &mut Client, caps: &[&str]) -> String {
    register(client, register_request(caps)).await.agent_id
}

pub(crate) async fn get(client: &mut Client, id: &str) -> pb::AgentInfo {
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
pub(crate) async fn list_ids(
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

pub(crate) fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

pub(crate) fn ids_of(agents: &[pb::AgentInfo]) -> Vec<String> {
    agents.iter().map(|a| a.agent_id.clone()).collect()
}

pub(crate) fn position(list: &[String], id: &str) -> usize {
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

behaviour_tests! {
    list_is_ordered_by_registration_time_then_agent_id,
    list_filters_by_agent_type_and_zero_means_any,
    list_filters_by_namespace_cluster_version_status_and_metadata,
    paging_250_agents_by_40_visits_each_exactly_once_in_7_pages,
    page_size_zero_returns_every_agent_in_one_response,
    paging_during_churn_visits_every_lasting_agent_exactly_once,
}
