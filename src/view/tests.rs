//! Unit tests of the parent module.

use super::*;
use crate::domain::{AgentType, ChangeKind, Telemetry, agent::Registration};

fn agent(i: usize) -> Agent {
    let telemetry = Telemetry {
        success_rate: (i % 100) as f64 / 100.0,
        total_executions: if i.is_multiple_of(7) { 0 } else { 10 },
        avg_duration_ms: (i % 13) as i64,
        ..Telemetry::default()
    };
    let mut caps = vec![format!("c{}", i % 10), "all".to_owned()];
    if i.is_multiple_of(400) {
        caps.push("rare".to_owned());
    }
    let reg = Registration {
        agent_type: AgentType::ALL[i % 4],
        capabilities: caps.into_iter().map(Into::into).collect(),
        metadata: crate::domain::Labels::from([("zone".to_owned(), format!("z{}", i % 3))]),
        namespace: format!("ns{}", i % 4).into(),
        cluster: "local".into(),
        version: "1.0.0".into(),
        endpoint: Default::default(),
        telemetry: Some(telemetry),
        ttl_secs: 60,
        health_check: None,
    };
    Agent::create(AgentId::new_v4(), reg, 1_000 * (i as i64 % 5))
}

fn brute_force(agents: &[Arc<Agent>], q: &DiscoverQuery) -> Vec<AgentId> {
    let matching: Vec<&Arc<Agent>> = agents
        .iter()
        .filter(|a| a.has_all(&q.capabilities) && q.filter.matches(a))
        .collect();
    order_discovered(matching, Strategy::Ranked, q.max_results, 0)
        .iter()
        .map(|a| a.id)
        .collect()
}

#[test]
fn ranked_discover_equals_brute_force_ranking() {
    let agents: Vec<Arc<Agent>> = (0..3000).map(|i| Arc::new(agent(i))).collect();
    let view = View::new();
    view.reset(Snapshot {
        revision: 1,
        agents: agents.clone(),
    });
    let caps_cases: [&[&str]; 5] = [&[], &["all"], &["c3"], &["rare"], &["c3", "all"]];
    for caps in caps_cases {
        for status in Status::ALL.map(Some).into_iter().chain([None]) {
            for max_results in [1, 5, 50, 1000] {
                for (zone, namespace) in [
                    (None, None),
                    (Some("z1"), None),
                    (None, Some("ns1")),
                    (Some("z1"), Some("ns2")),
                    (None, Some("nowhere")),
                ] {
                    let mut filter = AgentFilter {
                        status,
                        namespace: namespace.map(str::to_owned),
                        ..AgentFilter::default()
                    };
                    if let Some(zone) = zone {
                        filter.metadata.insert("zone".into(), zone.into());
                    }
                    let q = DiscoverQuery {
                        capabilities: caps.iter().map(|c| c.to_string()).collect(),
                        filter,
                        max_results,
                        strategy: Strategy::Ranked,
                    };
                    let got: Vec<AgentId> = view.discover(&q).iter().map(|a| a.id).collect();
                    assert_eq!(
                        got,
                        brute_force(&agents, &q),
                        "{caps:?} {status:?} {max_results} {zone:?} {namespace:?}"
                    );
                }
            }
        }
    }
}

/// Candidates too many to rank whole but all at the bottom of the rank
/// order (and a filter that rejects most of them): the rank walk gives up
/// after its budget and every candidate is ranked instead, with the same
/// answer.
#[test]
fn a_rank_walk_over_budget_falls_back_to_ranking_every_candidate() {
    let agents: Vec<Arc<Agent>> = (0..12_000)
        .map(|i| {
            let mut a = agent(i);
            // The lowest HEALTHY success rates, with executions.
            if (50..57).contains(&(i % 100)) && !i.is_multiple_of(7) {
                a.capabilities.push("tail".into());
            }
            Arc::new(a)
        })
        .collect();
    let tail = agents
        .iter()
        .filter(|a| a.has_all(&["tail".to_owned()]) && a.status == Status::Healthy)
        .count();
    assert!(tail > 512, "{tail} candidates: the walk must be tried");
    let view = View::new();
    view.reset(Snapshot {
        revision: 1,
        agents: agents.clone(),
    });
    for zone in [None, Some("z1")] {
        for max_results in [1, 5, 700] {
            let mut filter = AgentFilter {
                status: Some(Status::Healthy),
                ..AgentFilter::default()
            };
            if let Some(zone) = zone {
                filter.metadata.insert("zone".into(), zone.into());
            }
            let q = DiscoverQuery {
                capabilities: vec!["tail".into()],
                filter,
                max_results,
                strategy: Strategy::Ranked,
            };
            let got: Vec<AgentId> = view.discover(&q).iter().map(|a| a.id).collect();
            assert!(!got.is_empty());
            assert_eq!(got, brute_force(&agents, &q), "{zone:?} {max_results}");
        }
    }
}

#[test]
fn changes_move_agents_between_rank_partitions() {
    let view = View::new();
    let a = agent(99);
    assert_eq!(a.status, Status::Healthy);
    view.apply(&Change {
        revision: 1,
        kind: ChangeKind::Registered,
        agent: Arc::new(a.clone()),
        at: 0,
    });
    let (overdue, _) = a.mark_overdue();
    view.apply(&Change {
        revision: 2,
        kind: ChangeKind::StatusChanged { previous: a.status },
        agent: Arc::new(overdue),
        at: 0,
    });
    let query = |status| DiscoverQuery {
        capabilities: vec![],
        filter: AgentFilter {
            status: Some(status),
            ..AgentFilter::default()
        },
        max_results: 5,
        strategy: Strategy::Ranked,
    };
    assert!(view.discover(&query(a.status)).is_empty());
    assert_eq!(view.discover(&query(Status::Unhealthy)).len(), 1);
    view.apply(&Change {
        revision: 3,
        kind: ChangeKind::Deregistered,
        agent: Arc::new(a),
        at: 0,
    });
    assert!(view.discover(&query(Status::Unhealthy)).is_empty());
    assert_eq!(view.len(), 0);
}

#[test]
fn keep_alives_and_reports_keep_every_index_exact() {
    let mut agents: Vec<Arc<Agent>> = (0..2000).map(|i| Arc::new(agent(i))).collect();
    let view = View::new();
    view.reset(Snapshot {
        revision: 1,
        agents: agents.clone(),
    });
    // Keep-alives move last_seen (and so the rank); reports move the score;
    // some change status (another partition).
    for (n, slot) in agents.iter_mut().enumerate().filter(|(n, _)| n % 3 == 0) {
        let mut next = (**slot).clone();
        next.last_seen_ms += 5_000;
        if n % 2 == 0 {
            next.telemetry.success_rate = ((n * 7) % 100) as f64 / 100.0;
            next.telemetry.total_executions = 20;
            next.status = next.telemetry.status();
        }
        *slot = Arc::new(next);
        view.apply(&Change {
            revision: 2 + n as u64,
            kind: ChangeKind::Touched,
            agent: slot.clone(),
            at: 0,
        });
    }
    for caps in [&[][..], &["all"][..], &["c3"][..]] {
        for status in Status::ALL {
            let q = DiscoverQuery {
                capabilities: caps.iter().map(|c| c.to_string()).collect(),
                filter: AgentFilter {
                    status: Some(status),
                    ..AgentFilter::default()
                },
                max_results: 50,
                strategy: Strategy::Ranked,
            };
            let got: Vec<AgentId> = view.discover(&q).iter().map(|a| a.id).collect();
            assert_eq!(got, brute_force(&agents, &q), "{caps:?} {status:?}");
        }
    }
    let (listed, _) = view.list(&AgentFilter::default(), None, None);
    assert_eq!(listed.len(), agents.len());
    for a in &agents {
        assert!(Arc::ptr_eq(&view.get(a.id).unwrap(), a), "the latest value");
    }
    let listed_latest = listed
        .iter()
        .all(|l| agents.iter().any(|a| Arc::ptr_eq(a, l)));
    assert!(
        listed_latest,
        "the list order index holds the latest values"
    );
}

#[test]
fn an_agent_moving_to_another_namespace_is_found_only_there() {
    let first = Arc::new(agent(1));
    let view = View::new();
    view.reset(Snapshot {
        revision: 1,
        agents: vec![first.clone()],
    });
    let query = |namespace: &str| DiscoverQuery {
        capabilities: vec!["all".into()],
        filter: AgentFilter {
            namespace: Some(namespace.into()),
            ..AgentFilter::default()
        },
        max_results: 5,
        strategy: Strategy::Ranked,
    };
    assert_eq!(view.discover(&query("ns1")).len(), 1);
    let moved = Agent {
        namespace: "ns3".into(),
        ..(*first).clone()
    };
    view.apply(&Change {
        revision: 2,
        kind: ChangeKind::Registered,
        agent: Arc::new(moved),
        at: 0,
    });
    assert!(view.discover(&query("ns1")).is_empty());
    assert_eq!(view.discover(&query("ns3")).len(), 1);
    view.apply(&Change {
        revision: 3,
        kind: ChangeKind::Deregistered,
        agent: first,
        at: 0,
    });
    assert!(view.discover(&query("ns3")).is_empty());
    assert!(view.read().by_namespace.is_empty());
}

/// The prober's work list comes from its own index: it follows checks
/// added, dropped by a re-registration that keeps every other key, and
/// agents removed.
#[test]
fn agents_with_checks_are_indexed_through_every_change() {
    use crate::domain::check::{CheckKind, HealthCheck};
    let check = HealthCheck {
        kind: CheckKind::Tcp,
        target: "127.0.0.1:9".into(),
        path: String::new(),
        interval_secs: 10,
        timeout_secs: 2,
        failures_before_unhealthy: 3,
        successes_before_healthy: 1,
        deregister_after_secs: 0,
    };
    let mut agents: Vec<Agent> = (0..50).map(agent).collect();
    for a in agents.iter_mut().step_by(5) {
        a.health_check = Some(check.clone());
    }
    let view = View::new();
    view.reset(Snapshot {
        revision: 1,
        agents: agents.iter().cloned().map(Arc::new).collect(),
    });
    let ids = |view: &View| {
        let mut ids: Vec<AgentId> = view.with_checks().iter().map(|a| a.id).collect();
        ids.sort();
        ids
    };
    let mut expected: Vec<AgentId> = agents.iter().step_by(5).map(|a| a.id).collect();
    expected.sort();
    assert_eq!(ids(&view), expected);
    // Agent 0 loses its check, agent 1 gains one; nothing else changes.
    let mut dropped = agents[0].clone();
    dropped.health_check = None;
    let mut gained = agents[1].clone();
    gained.health_check = Some(check);
    for (revision, a) in [(2, dropped), (3, gained.clone())] {
        view.apply(&Change {
            revision,
            kind: ChangeKind::Updated,
            agent: Arc::new(a),
            at: 0,
        });
    }
    view.apply(&Change {
        revision: 4,
        kind: ChangeKind::Deregistered,
        agent: Arc::new(agents[5].clone()),
        at: 0,
    });
    expected.retain(|id| *id != agents[0].id && *id != agents[5].id);
    expected.push(gained.id);
    expected.sort();
    assert_eq!(ids(&view), expected);
}
