//! Hostile client strings round-trip exactly through every read and never
//! become part of a Redis key or channel name.

use crate::common::{calls::*, *};

use std::collections::{BTreeSet, HashMap};

use agent_registry::pb::{self, agent_change_event::EventType};

use crate::{
    WAIT, all_channels, assert_only_registry_names, discover, get, ids, list, next_event,
    watch_synced,
};

/// Capabilities made of Redis key syntax, glob syntax, Lua/quote trouble and
/// unicode. All distinct, all valid (1..=128 bytes, no control characters).
const WEIRD: &[&str] = &[
    "ζ:*{x}",
    "a b",
    "{registry}:agent:x",
    "日本語",
    "back\\slash",
    "dq\"uote",
    "sq'uote",
    "[range]",
    "what?",
    "star*",
    "}{",
    "{registry}:agents",
    "{registry}:due",
    "{registry}:rev",
    "*",
    "?",
    "[",
    "{",
    "}",
    ":",
    " ",
    "\\",
    "%s%n%x",
    "crab 🦀",
    "{registry}:notify:00000000-0000-0000-0000-000000000000",
    "a:b:c",
    "'); redis.call('FLUSHALL') --",
    "été",
    "\\*\\?",
    "{other}:agent:*",
];

/// Capabilities of a decoy agent, each of which a glob (or a sloppy
/// prefix/substring match) built from a [`WEIRD`] string would match.
const DECOY: &[&str] = &[
    "ζ:abc{x}",   // ζ:*{x}
    "whatX",      // what?
    "starry",     // star*
    "r",          // [range]
    "anything",   // *
    "Q",          // ?
    "a",          // prefix of "a b", "a:b:c"
    "ζ",          // prefix of ζ:*{x}
    "日本",       // prefix of 日本語
    "{registry}", // prefix of the {registry}:... ones
    "*{x}",       // suffix of ζ:*{x}
];

const WEIRD_NAMESPACE: &str = "ns ζ:*{x} [a]? \"q\" 'q' \\ 日本語 {registry}:agent:";

const DECOY_NAMESPACE: &str = "ns*";

fn weird_metadata() -> HashMap<String, String> {
    let mut metadata: HashMap<String, String> = WEIRD
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), WEIRD[(i + 7) % WEIRD.len()].to_string()))
        .collect();
    metadata.insert("long".into(), "ζ".repeat(500)); // 1000 bytes
    metadata.insert("empty value".into(), String::new());
    metadata
}

fn weird_request() -> pb::RegisterRequest {
    pb::RegisterRequest {
        agent_type: pb::AgentType::Analyst as i32,
        capabilities: WEIRD.iter().map(|s| s.to_string()).collect(),
        metadata: weird_metadata(),
        namespace: WEIRD_NAMESPACE.into(),
        cluster: "c:{x}* ?[".into(),
        version: "1.0.0-ζ*".into(),
        ..Default::default()
    }
}

fn decoy_request() -> pb::RegisterRequest {
    pb::RegisterRequest {
        agent_type: pb::AgentType::Analyst as i32,
        capabilities: DECOY.iter().map(|s| s.to_string()).collect(),
        metadata: [
            ("{registry}:agent:x".to_string(), "literal".to_string()),
            ("ζ:abc{x}".to_string(), "*".to_string()),
        ]
        .into(),
        namespace: DECOY_NAMESPACE.into(),
        cluster: "c:*".into(),
        version: "1.0.0-*".into(),
        ..Default::default()
    }
}

/// Asserts an agent carries exactly what was registered.
fn assert_exact(agent: &pb::AgentInfo, request: &pb::RegisterRequest, context: &str) {
    assert_eq!(
        agent.capabilities, request.capabilities,
        "{context}: capabilities"
    );
    assert_eq!(agent.metadata, request.metadata, "{context}: metadata");
    assert_eq!(agent.namespace, request.namespace, "{context}: namespace");
    assert_eq!(agent.cluster, request.cluster, "{context}: cluster");
    assert_eq!(agent.version, request.version, "{context}: version");
    assert_eq!(
        agent.agent_type, request.agent_type,
        "{context}: agent_type"
    );
}

/// Client strings with key and glob syntax, quotes and unicode round-trip
/// exactly through Register → Get/List/Discover/Watch/Notify; discovery and
/// filters by them are exact; Redis holds only the registry's own names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_strings_round_trip_exactly_and_never_become_keys() {
    let server = TestServer::start(Backend::Redis).await;
    let redis = server.redis.as_ref().unwrap();
    let mut client = server.client().await;

    // Watchers first: one on everything, one selecting by weird strings.
    let mut watch_all = watch_synced(&mut client, pb::WatchAgentsRequest::default()).await;
    let mut watch_weird = watch_synced(
        &mut client,
        pb::WatchAgentsRequest {
            capabilities: vec![WEIRD[0].into(), "日本語".into(), "*".into()],
            namespace: WEIRD_NAMESPACE.into(),
            ..Default::default()
        },
    )
    .await;

    let decoy_req = decoy_request();
    let decoy = register(&mut client, decoy_req.clone()).await;
    let weird_req = weird_request();
    let weird = register(&mut client, weird_req.clone()).await;

    // Watch: the full agents, exactly; the selecting watcher only the weird one.
    let first = next_event(&mut watch_all).await;
    assert_eq!(kind(&first), EventType::Registered);
    assert_exact(first.agent.as_ref().unwrap(), &decoy_req, "watch: decoy");
    let second = next_event(&mut watch_all).await;
    assert_eq!(kind(&second), EventType::Registered);
    assert_exact(second.agent.as_ref().unwrap(), &weird_req, "watch: weird");
    let selected = next_event(&mut watch_weird).await;
    assert_eq!(kind(&selected), EventType::Registered);
    assert_eq!(selected.agent.as_ref().unwrap().agent_id, weird.agent_id);
    assert_exact(
        selected.agent.as_ref().unwrap(),
        &weird_req,
        "selective watch",
    );

    // Get.
    assert_exact(
        &get(&mut client, &weird.agent_id).await.unwrap(),
        &weird_req,
        "get",
    );
    assert_exact(
        &get(&mut client, &decoy.agent_id).await.unwrap(),
        &decoy_req,
        "get decoy",
    );

    // List, unfiltered and by every kind of filter.
    let all = list(&mut client, &[]).await;
    assert_eq!(all.len(), 2);
    for agent in &all {
        let request = if agent.agent_id == weird.agent_id {
            &weird_req
        } else {
            &decoy_req
        };
        assert_exact(agent, request, "list");
    }
    let only = |agents: Vec<pb::AgentInfo>, who: &pb::RegisterResponse, what: &str| {
        assert_eq!(ids(&agents), vec![who.agent_id.clone()], "{what}");
    };
    only(
        list(&mut client, &[("namespace", WEIRD_NAMESPACE)]).await,
        &weird,
        "list by the weird namespace",
    );
    only(
        list(&mut client, &[("namespace", DECOY_NAMESPACE)]).await,
        &decoy,
        "list by namespace \"ns*\" is exact, not a glob",
    );
    only(
        list(&mut client, &[("cluster", "c:{x}* ?[")]).await,
        &weird,
        "list by cluster",
    );
    only(
        list(&mut client, &[("version", "1.0.0-ζ*")]).await,
        &weird,
        "list by version",
    );
    let metadata = weird_metadata();
    for key in [
        "{registry}:agent:x",
        "ζ:*{x}",
        "*",
        "日本語",
        "dq\"uote",
        "long",
    ] {
        only(
            list(&mut client, &[(key, &metadata[key])]).await,
            &weird,
            &format!("list by metadata {key:?}"),
        );
    }
    only(
        list(&mut client, &[("{registry}:agent:x", "literal")]).await,
        &decoy,
        "list by the decoy's metadata",
    );
    assert!(
        list(&mut client, &[("{registry}:agent:x", "*")])
            .await
            .is_empty(),
        "a metadata filter value \"*\" is not a glob"
    );
    assert!(
        list(&mut client, &[("namespace", "ns ζ:*")])
            .await
            .is_empty(),
        "a namespace filter is not a prefix match"
    );

    // Discover: every weird capability finds exactly the weird agent.
    for capability in WEIRD {
        only(
            discover(&mut client, &[*capability], &[]).await,
            &weird,
            &format!("discover {capability:?}"),
        );
    }
    only(
        discover(&mut client, WEIRD, &[("namespace", WEIRD_NAMESPACE)]).await,
        &weird,
        "discover by all weird capabilities and namespace",
    );
    for capability in DECOY {
        only(
            discover(&mut client, &[*capability], &[]).await,
            &decoy,
            &format!("discover the decoy's {capability:?}"),
        );
    }
    for missing in [
        "ζ:",
        "what",
        "star",
        "日",
        "a b ",
        " a b",
        "{registry}:",
        "Ζ:*{X}",
    ] {
        assert!(
            discover(&mut client, &[missing], &[]).await.is_empty(),
            "discover {missing:?} matches nobody"
        );
    }
    let discovered = discover(&mut client, &["ζ:*{x}"], &[]).await;
    assert_exact(&discovered[0], &weird_req, "discover");

    // A change is seen by both watchers with the strings intact.
    let beat = client
        .heartbeat(with_token(
            pb::HeartbeatRequest {
                agent_id: weird.agent_id.clone(),
                telemetry: Some(pb::AgentTelemetry {
                    success_rate: 0.2,
                    avg_duration_ms: 1,
                    total_executions: 10,
                    failed_executions: 8,
                    last_execution_at: 0,
                }),
                registration_token: String::new(),
            },
            &weird.registration_token,
        ))
        .await
        .expect("heartbeat")
        .into_inner();
    assert_eq!(beat.status, pb::AgentStatus::Unhealthy as i32);
    for stream in [&mut watch_all, &mut watch_weird] {
        let updated = next_event(stream).await;
        assert_eq!(kind(&updated), EventType::Updated);
        assert_exact(updated.agent.as_ref().unwrap(), &weird_req, "watch update");
        let changed = next_event(stream).await;
        assert_eq!(kind(&changed), EventType::StatusChanged);
    }
    // Discover still finds it by its weird strings under its new status.
    only(
        discover(
            &mut client,
            &["{registry}:agent:x"],
            &[("status", "unhealthy")],
        )
        .await,
        &weird,
        "discover an UNHEALTHY agent by a weird capability",
    );

    // Notifications with weird metadata and message round-trip too; an open
    // subscription makes a mailbox channel exist.
    let notice_metadata: HashMap<String, String> = [
        ("{registry}:notify:x".to_string(), "ζ:*{x}".to_string()),
        ("'\"\\".to_string(), "日本語 🦀".to_string()),
    ]
    .into();
    let notified = client
        .notify_agent(pb::NotifyAgentRequest {
            agent_id: weird.agent_id.clone(),
            notification_type: "ζ:*{x}".into(),
            message: "{registry}:agent:* \"q\" \\ 日本語".into(),
            metadata: notice_metadata.clone(),
        })
        .await
        .expect("notify")
        .into_inner();
    assert!(notified.success);
    let mut subscription = client
        .subscribe_notifications(with_token(
            pb::SubscribeNotificationsRequest {
                agent_id: weird.agent_id.clone(),
                ..Default::default()
            },
            &weird.registration_token,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    let notice = tokio::time::timeout(WAIT, subscription.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(notice.notification_type, "ζ:*{x}");
    assert_eq!(notice.message, "{registry}:agent:* \"q\" \\ 日本語");
    assert_eq!(notice.metadata, notice_metadata);

    // Redis: nothing but the registry's own names.
    let keys = assert_only_registry_names(redis, &["registry"]).await;
    let agent_keys: BTreeSet<String> = keys
        .iter()
        .filter_map(|k| k.strip_prefix("{registry}:agent:").map(str::to_string))
        .collect();
    assert_eq!(
        agent_keys,
        BTreeSet::from([weird.agent_id.clone(), decoy.agent_id.clone()]),
        "one record per agent"
    );
    assert!(
        keys.contains(&format!("{{registry}}:notify:{}", weird.agent_id)),
        "the backlog is keyed by id: {keys:?}"
    );
    let channels = all_channels(redis).await;
    assert!(
        channels.contains(&format!("{{registry}}:mbox:{}", weird.agent_id)),
        "the live subscription's channel is keyed by id: {channels:?}"
    );

    // Deregistering leaves nothing of the agent behind.
    let gone = client
        .deregister(with_token(
            pb::DeregisterRequest {
                agent_id: weird.agent_id.clone(),
                registration_token: String::new(),
            },
            &weird.registration_token,
        ))
        .await
        .expect("deregister")
        .into_inner();
    assert!(gone.success);
    drop(subscription);
    let keys = assert_only_registry_names(redis, &["registry"]).await;
    assert!(
        !keys.iter().any(|k| k.contains(&weird.agent_id)),
        "no key of a deregistered agent remains: {keys:?}"
    );
    only(
        list(&mut client, &[]).await,
        &decoy,
        "only the decoy is left",
    );
    for capability in WEIRD {
        assert!(discover(&mut client, &[*capability], &[]).await.is_empty());
    }
}
