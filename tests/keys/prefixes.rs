//! Registries with different `--redis-prefix` on one Redis are isolated.

use crate::common::{calls::*, *};

use std::time::Duration;

use agent_registry::pb::{self};
use tonic::Code;

use crate::{assert_only_registry_names, discover, get, ids, list, next_event, watch_synced};

/// Registries with different `--redis-prefix` on one Redis are separate
/// registries: no agent, event, discovery or notification crosses, even
/// when a prefix is a glob that would match the other's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_with_different_prefixes_on_one_redis_are_isolated() {
    let server = TestServer::start(Backend::Redis).await;
    let redis = server.redis.as_ref().unwrap();
    let other = TestServer::replica(redis, &["--redis-prefix", "other"]).await;
    let globby = TestServer::replica(redis, &["--redis-prefix", "regist*"]).await;
    let twin = TestServer::replica(redis, &["--redis-prefix", "registry"]).await;

    let mut c_default = server.client().await;
    let mut c_other = other.client().await;
    let mut c_globby = globby.client().await;
    let mut c_twin = twin.client().await;

    let mut w_other = watch_synced(&mut c_other, pb::WatchAgentsRequest::default()).await;
    let mut w_globby = watch_synced(&mut c_globby, pb::WatchAgentsRequest::default()).await;

    let mine = register(&mut c_default, register_request(&["shared", "default"])).await;
    let theirs = register(&mut c_other, register_request(&["shared", "other"])).await;
    let globs = register(&mut c_globby, register_request(&["shared", "globby"])).await;

    // Each watcher sees only its own registry's agent, nothing else.
    let e = next_event(&mut w_other).await;
    assert_eq!(e.agent.as_ref().unwrap().agent_id, theirs.agent_id);
    let e = next_event(&mut w_globby).await;
    assert_eq!(e.agent.as_ref().unwrap().agent_id, globs.agent_id);

    // The twin (same prefix) is the same registry.
    wait_until(
        Duration::from_secs(1),
        "the same prefix shares agents",
        || {
            let (mut c, id) = (c_twin.clone(), mine.agent_id.clone());
            async move { get(&mut c, &id).await.is_ok() }
        },
    )
    .await;
    // Settle: give any cross-talk the time it would need to show.
    tokio::time::sleep(Duration::from_millis(300)).await;

    for (name, client, own, foreign) in [
        ("default", &mut c_default, &mine, [&theirs, &globs]),
        ("twin", &mut c_twin, &mine, [&theirs, &globs]),
        ("other", &mut c_other, &theirs, [&mine, &globs]),
        ("regist*", &mut c_globby, &globs, [&mine, &theirs]),
    ] {
        assert_eq!(
            ids(&list(client, &[]).await),
            vec![own.agent_id.clone()],
            "{name} lists only its own agent"
        );
        assert_eq!(
            ids(&discover(client, &["shared"], &[]).await),
            vec![own.agent_id.clone()],
            "{name} discovers only its own agent"
        );
        for agent in foreign {
            let status = get(client, &agent.agent_id)
                .await
                .expect_err("foreign agent");
            assert_eq!(
                status.code(),
                Code::NotFound,
                "{name}: GetAgent of a foreign id"
            );
            let status = client
                .heartbeat(with_token(
                    pb::HeartbeatRequest {
                        agent_id: agent.agent_id.clone(),
                        ..Default::default()
                    },
                    &agent.registration_token,
                ))
                .await
                .expect_err("foreign heartbeat");
            assert_eq!(
                status.code(),
                Code::NotFound,
                "{name}: Heartbeat of a foreign id"
            );
            let status = client
                .notify_agent(pb::NotifyAgentRequest {
                    agent_id: agent.agent_id.clone(),
                    message: "cross".into(),
                    ..Default::default()
                })
                .await
                .expect_err("foreign notify");
            assert_eq!(
                status.code(),
                Code::NotFound,
                "{name}: NotifyAgent of a foreign id"
            );
            let removed = client
                .deregister(with_token(
                    pb::DeregisterRequest {
                        agent_id: agent.agent_id.clone(),
                        ..Default::default()
                    },
                    &agent.registration_token,
                ))
                .await
                .expect("deregister of a foreign id answers")
                .into_inner();
            assert!(
                !removed.success,
                "{name}: Deregister of a foreign id changes nothing"
            );
        }
    }
    // Nothing leaked into the other registries' watches.
    for (name, stream) in [("other", &mut w_other), ("regist*", &mut w_globby)] {
        match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
            Err(_) => {}
            Ok(other) => panic!("{name}'s watcher got {other:?}"),
        }
    }
    // The failed cross-registry calls removed nothing.
    for (client, agent) in [
        (&mut c_default, &mine),
        (&mut c_other, &theirs),
        (&mut c_globby, &globs),
    ] {
        get(client, &agent.agent_id)
            .await
            .expect("still registered");
    }
    assert_only_registry_names(redis, &["registry", "other", "regist*"]).await;
}
