//! Reads across replicas: a write on one is read on another within 200 ms, a client
//! reads its own writes, paging alternates replicas, acknowledged writes survive a killed replica.

use crate::common::{calls::*, *};

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use agent_registry::pb::{self};
use tonic::Code;

use crate::{REPLICATION, deregister, get, heartbeat, list_all};

/// A register, a heartbeat with new telemetry and a deregister taken by one
/// replica show on another within 200 ms, in every direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_replica_is_readable_on_another_within_200ms() {
    let redis = RedisProcess::start().await;
    let a = TestServer::replica(&redis, &[]).await;
    let b = ReplicaProcess::start(&redis, &[]).await;
    let c = TestServer::replica(&redis, &[]).await;
    let clients = [a.client().await, b.client().await, c.client().await];
    let names = ["A (in-process)", "B (process)", "C (in-process)"];
    // Warm every connection up so the first measurement is not a connect.
    for client in &clients {
        list_all(&mut client.clone()).await;
    }

    let mut worst = Duration::ZERO;
    for round in 0..6 {
        let (w, r) = (round % 3, (round + 1 + round / 3) % 3);
        let mut writer = clients[w].clone();
        let reader = clients[r].clone();
        let what = format!("{} -> {}", names[w], names[r]);
        let capability = format!("replicated-{round}");

        // Register.
        let agent = register(&mut writer, register_request(&[&capability])).await;
        let acked = Instant::now();
        wait_until(
            REPLICATION,
            &format!("{what}: registered agent readable"),
            || {
                let (mut reader, id, capability) =
                    (reader.clone(), agent.agent_id.clone(), capability.clone());
                async move {
                    get(&mut reader, &id)
                        .await
                        .is_ok_and(|a| a.capabilities == vec![capability])
                }
            },
        )
        .await;
        worst = worst.max(acked.elapsed());

        // Heartbeat with telemetry that makes it UNHEALTHY.
        let beat = heartbeat(&mut writer, &agent, Some(telemetry(0.2, 10 + round as i64))).await;
        assert_eq!(beat.status, pb::AgentStatus::Unhealthy as i32, "{what}");
        let acked = Instant::now();
        wait_until(
            REPLICATION,
            &format!("{what}: new telemetry readable"),
            || {
                let (mut reader, id) = (reader.clone(), agent.agent_id.clone());
                async move {
                    get(&mut reader, &id).await.is_ok_and(|a| {
                        a.status == pb::AgentStatus::Unhealthy as i32
                            && a.telemetry.is_some_and(|t| {
                                t.total_executions == 10 + round as i64 && t.success_rate == 0.2
                            })
                    })
                }
            },
        )
        .await;
        worst = worst.max(acked.elapsed());

        // Deregister.
        deregister(&mut writer, &agent).await;
        let acked = Instant::now();
        wait_until(
            REPLICATION,
            &format!("{what}: deregistration readable"),
            || {
                let (mut reader, id) = (reader.clone(), agent.agent_id.clone());
                async move {
                    matches!(get(&mut reader, &id).await, Err(s) if s.code() == Code::NotFound)
                }
            },
        )
        .await;
        worst = worst.max(acked.elapsed());
    }
    eprintln!("slowest replication observed: {worst:?}");
}

/// SIGKILLing the replica that acknowledged writes loses none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_right_after_acknowledged_writes_loses_nothing() {
    let redis = RedisProcess::start().await;
    let mut a = ReplicaProcess::start(&redis, &[]).await;
    let b = TestServer::replica(&redis, &[]).await;
    let ca = a.client().await;
    let mut cb = b.client().await;

    // Four writers through A at once: register, telemetry, some deregister.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let mut client = ca.clone();
        tasks.push(tokio::spawn(async move {
            let mut live = Vec::new();
            let mut gone = Vec::new();
            for i in 0..15 {
                let r = register(&mut client, register_request(&[&format!("k{t}-{i}")])).await;
                heartbeat(&mut client, &r, Some(telemetry(0.75, 100 + i))).await;
                if i % 5 == 4 {
                    deregister(&mut client, &r).await;
                    gone.push(r.agent_id);
                } else {
                    live.push((r, 100 + i));
                }
            }
            (live, gone)
        }));
    }
    let mut live = Vec::new();
    let mut gone = Vec::new();
    for task in tasks {
        let (l, g) = task.await.unwrap();
        live.extend(l);
        gone.extend(g);
    }
    let mut ca = ca;
    let last = &live[live.len() - 1].0;
    let notified = tokio::time::timeout(
        CALL_WAIT,
        ca.notify_agent(pb::NotifyAgentRequest {
            agent_id: last.agent_id.clone(),
            message: "acked".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .expect("notify succeeds")
    .into_inner();
    assert!(notified.success);
    // Right after the last acknowledgement.
    a.kill();
    let killed = Instant::now();

    let expected: HashMap<String, i64> = live
        .iter()
        .map(|(r, total)| (r.agent_id.clone(), *total))
        .collect();
    let check = |client: Client| {
        let expected = expected.clone();
        async move {
            let mut client = client;
            let listed: HashMap<String, i64> = list_all(&mut client)
                .await
                .into_iter()
                .map(|a| (a.agent_id, a.telemetry.map_or(-1, |t| t.total_executions)))
                .collect();
            listed == expected
        }
    };
    wait_until(
        Duration::from_secs(1),
        "B lists every acknowledged agent, with its telemetry, and none deregistered",
        || check(cb.clone()),
    )
    .await;
    eprintln!("B converged {:?} after the kill", killed.elapsed());
    for id in &gone {
        let status = get(&mut cb, id).await.expect_err("deregistered stays gone");
        assert_eq!(status.code(), Code::NotFound);
    }
    for (r, total) in &live {
        let agent = get(&mut cb, &r.agent_id).await.expect("acknowledged agent");
        assert_eq!(agent.telemetry.unwrap().total_executions, *total);
        // The token recorded through A works on B.
        heartbeat(&mut cb, r, None).await;
    }
    // The acknowledged notification is in the backlog, seen from B.
    let mut backlog = tokio::time::timeout(
        CALL_WAIT,
        cb.subscribe_notifications(with_token(
            pb::SubscribeNotificationsRequest {
                agent_id: last.agent_id.clone(),
                ..Default::default()
            },
            &last.registration_token,
        )),
    )
    .await
    .unwrap()
    .expect("subscribe on B")
    .into_inner();
    let first = tokio::time::timeout(CALL_WAIT, backlog.message())
        .await
        .expect("backlog in time")
        .expect("stream healthy")
        .expect("one notification");
    assert_eq!(first.notification_id, notified.notification_id);
    assert_eq!(first.message, "acked");

    // A fresh replica, reading only Redis, agrees.
    let c = TestServer::replica(&redis, &[]).await;
    assert!(
        check(c.client().await).await,
        "a fresh replica sees the same agents"
    );
}

/// A replica answers its own writes at once: register, heartbeat and
/// deregister, each followed immediately by reads on the same replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reads_its_own_writes_on_the_same_replica() {
    let redis = RedisProcess::start().await;
    let a = TestServer::replica(&redis, &[]).await;
    let b = ReplicaProcess::start(&redis, &[]).await;
    let clients = [a.client().await, b.client().await];

    for i in 0..50 {
        let mut client = clients[i % 2].clone();
        let capability = format!("ryw-{i}");
        let mut request = register_request(&[&capability, "ryw"]);
        request.namespace = format!("ns-{i}");
        let r = register(&mut client, request).await;

        let agent = get(&mut client, &r.agent_id)
            .await
            .unwrap_or_else(|s| panic!("round {i}: own registration not readable: {s:?}"));
        assert_eq!(agent.capabilities, vec![capability.clone(), "ryw".into()]);
        let listed = client
            .list_agents(pb::ListAgentsRequest {
                filters: [("namespace".to_string(), format!("ns-{i}"))].into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .agents;
        assert_eq!(listed.len(), 1, "round {i}: own registration listed");
        let found = client
            .discover_agents(pb::DiscoverRequest {
                capabilities: vec![capability.clone()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .agents;
        assert_eq!(found.len(), 1, "round {i}: own registration discoverable");

        heartbeat(&mut client, &r, Some(telemetry(0.45, 1000 + i as i64))).await;
        let agent = get(&mut client, &r.agent_id).await.unwrap();
        assert_eq!(
            agent.telemetry.unwrap().total_executions,
            1000 + i as i64,
            "round {i}: own heartbeat readable"
        );
        assert_eq!(agent.status, pb::AgentStatus::Degraded as i32, "round {i}");

        if i % 5 == 0 {
            deregister(&mut client, &r).await;
            let status = get(&mut client, &r.agent_id)
                .await
                .expect_err("own deregistration readable");
            assert_eq!(status.code(), Code::NotFound, "round {i}");
        }
    }
}

/// Paging through ListAgents with every page on the other replica (tokens
/// cross replicas) visits each of 120 agents exactly once, while other
/// agents come and go during the walk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_alternately_on_two_replicas_visits_each_agent_once() {
    let redis = RedisProcess::start().await;
    let a = TestServer::replica(&redis, &[]).await;
    let b = ReplicaProcess::start(&redis, &[]).await;
    let clients = [a.client().await, b.client().await];

    let mut tasks = Vec::new();
    for t in 0..4 {
        let mut client = clients[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut stable = Vec::new();
            let mut churn = Vec::new();
            for i in 0..30 {
                stable.push(register(&mut client, register_request(&[&format!("p{t}-{i}")])).await);
                if i % 6 == 0 {
                    churn.push(register(&mut client, register_request(&["churn"])).await);
                }
            }
            (stable, churn)
        }));
    }
    let mut stable = Vec::new();
    let mut churn = Vec::new();
    for task in tasks {
        let (s, c) = task.await.unwrap();
        stable.extend(s);
        churn.extend(c);
    }
    assert_eq!(stable.len(), 120);
    let total = stable.len() + churn.len();
    for (n, client) in clients.iter().enumerate() {
        wait_until(
            Duration::from_secs(2),
            &format!("replica {n} lists all"),
            || {
                let mut client = client.clone();
                async move { list_all(&mut client).await.len() == total }
            },
        )
        .await;
    }

    let mut seen: Vec<pb::AgentInfo> = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    let mut churn_left = churn.into_iter();
    let mut writer = clients[0].clone();
    for page in 0..200 {
        let mut client = clients[page % 2].clone();
        let response = client
            .list_agents(pb::ListAgentsRequest {
                page_size: 7,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("page {page} on replica {}: {s:?}", page % 2))
            .into_inner();
        pages += 1;
        assert!(response.agents.len() <= 7);
        seen.extend(response.agents);
        token = response.next_page_token;
        if token.is_empty() {
            break;
        }
        // Churn during the walk: one leaves, one arrives.
        if let Some(leaving) = churn_left.next() {
            deregister(&mut writer, &leaving).await;
        }
        register(&mut writer, register_request(&["churn", "late"])).await;
    }
    assert!(token.is_empty(), "the walk ended within 200 pages");
    assert!(pages >= 120 / 7, "{pages} pages");

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for agent in &seen {
        *counts.entry(agent.agent_id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "agents visited twice: {twice:?}");
    for r in &stable {
        assert_eq!(
            counts.get(r.agent_id.as_str()),
            Some(&1),
            "agent {} existing throughout the walk is visited once",
            r.agent_id
        );
    }
    for pair in seen.windows(2) {
        let (x, y) = (&pair[0], &pair[1]);
        assert!(
            (x.registered_at, &x.agent_id) < (y.registered_at, &y.agent_id),
            "walk is ordered by (registered_at, agent_id): {} {} then {} {}",
            x.registered_at,
            x.agent_id,
            y.registered_at,
            y.agent_id
        );
    }
}
