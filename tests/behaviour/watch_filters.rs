//! WatchAgents filters (BEHAVIOUR.md §4): by agent type, capabilities and
//! namespace, and agents leaving one selection for another.

use agent_registry::pb::{self, agent_change_event::EventType};

use crate::common::*;
use crate::support::*;

use crate::watch::{deregister, heartbeat, id_of, register, watch_request, watch_synced};

pub async fn watch_filters_by_agent_type_capabilities_and_namespace(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;

    let (mut by_type, _, _) = watch_synced(
        &mut client,
        watch_request(pb::AgentType::Scout, &[], "", true),
    )
    .await;
    let (mut by_caps, _, _) = watch_synced(
        &mut client,
        watch_request(pb::AgentType::Unspecified, &["a", "b"], "", true),
    )
    .await;
    let (mut by_namespace, _, _) = watch_synced(
        &mut client,
        watch_request(pb::AgentType::Unspecified, &[], "ns1", true),
    )
    .await;
    let (mut combined, _, _) = watch_synced(
        &mut client,
        watch_request(pb::AgentType::Scout, &["a"], "ns1", true),
    )
    .await;

    let reg = |agent_type: pb::AgentType, caps: &[&str], namespace: &str| {
        let mut request = register_request(caps);
        request.agent_type = agent_type as i32;
        request.namespace = namespace.to_string();
        request
    };
    let w_a = register(&mut client, reg(pb::AgentType::Worker, &["a"], "")).await;
    let s_a = register(&mut client, reg(pb::AgentType::Scout, &["a"], "")).await;
    let w_abc = register(
        &mut client,
        reg(pb::AgentType::Worker, &["a", "b", "c"], ""),
    )
    .await;
    let w_a_ns1 = register(&mut client, reg(pb::AgentType::Worker, &["a"], "ns1")).await;
    let s_b_ns1 = register(&mut client, reg(pb::AgentType::Scout, &["b"], "ns1")).await;
    let marker = register(&mut client, reg(pb::AgentType::Scout, &["b", "a"], "ns1")).await;
    // Removals: w_a matches no watcher; s_a matches the type watcher only.
    deregister(&mut client, &w_a).await;
    deregister(&mut client, &s_a).await;
    let marker2 = register(&mut client, reg(pb::AgentType::Scout, &["a", "b"], "ns1")).await;

    let r = |x: &pb::RegisterResponse| (EventType::Registered, x.agent_id.clone());
    let d = |x: &pb::RegisterResponse| (EventType::Deregistered, x.agent_id.clone());
    let cases = [
        (
            "agent_type SCOUT",
            &mut by_type,
            vec![r(&s_a), r(&s_b_ns1), r(&marker), d(&s_a), r(&marker2)],
        ),
        (
            "capabilities [a, b]",
            &mut by_caps,
            vec![r(&w_abc), r(&marker), r(&marker2)],
        ),
        (
            "namespace ns1",
            &mut by_namespace,
            vec![r(&w_a_ns1), r(&s_b_ns1), r(&marker), r(&marker2)],
        ),
        (
            "SCOUT with [a] in ns1",
            &mut combined,
            vec![r(&marker), r(&marker2)],
        ),
    ];
    for (name, stream, expected) in cases {
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            let event = next_event(stream).await;
            got.push((kind(&event), id_of(&event)));
        }
        assert_eq!(got, expected, "events of the watcher filtered by {name}");
    }
}

pub async fn an_agent_re_registered_into_another_namespace_is_reported_to_both_namespaces(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let (mut old, _, _) = watch_synced(
        &mut client,
        watch_request(pb::AgentType::Unspecified, &[], "old", true),
    )
    .await;
    let (mut new, _, _) = watch_synced(
        &mut client,
        watch_request(pb::AgentType::Unspecified, &[], "new", true),
    )
    .await;

    let mut request = register_request(&["moving"]);
    request.namespace = "old".into();
    let a = register(&mut client, request.clone()).await;
    let event = next_event(&mut old).await;
    assert_eq!(
        (kind(&event), id_of(&event)),
        (EventType::Registered, a.agent_id.clone())
    );

    request.namespace = "new".into();
    request.agent_id = a.agent_id.clone();
    request.registration_token = a.registration_token.clone();
    let again = register(&mut client, request).await;
    assert_eq!(again.agent_id, a.agent_id, "re-register keeps the id");

    for (name, stream) in [("old", &mut old), ("new", &mut new)] {
        let event = next_event(stream).await;
        assert_eq!(
            (kind(&event), id_of(&event)),
            (EventType::Updated, a.agent_id.clone()),
            "watcher of namespace {name} learns of the move"
        );
        assert_eq!(agent_of(&event).namespace, "new");
    }

    // Now it belongs to "new" only.
    heartbeat(&mut client, &a, Some(telemetry(0.9, 3, 3))).await;
    let event = next_event(&mut new).await;
    assert_eq!(
        (kind(&event), id_of(&event)),
        (EventType::Updated, a.agent_id.clone())
    );
    let mut request = register_request(&["marker"]);
    request.namespace = "old".into();
    let marker = register(&mut client, request).await;
    let event = next_event(&mut old).await;
    assert_eq!(
        (kind(&event), id_of(&event)),
        (EventType::Registered, marker.agent_id.clone()),
        "the old namespace's watcher no longer sees the moved agent"
    );
}

behaviour_tests! {
    watch_filters_by_agent_type_capabilities_and_namespace,
    an_agent_re_registered_into_another_namespace_is_reported_to_both_namespaces,
}
