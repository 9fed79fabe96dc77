//! Every validation rule of BEHAVIOUR.md §2: a malformed request gets
//! INVALID_ARGUMENT with a message naming the field, boundaries are exact, and
//! validation runs before the existence and token checks.

use std::{collections::HashMap, time::Duration};

use agent_registry::pb::{self, service_registry_client::ServiceRegistryClient};
use tonic::{Code, Status, transport::Channel};

use crate::common::*;

type Client = ServiceRegistryClient<Channel>;

/// Asserts `result` is INVALID_ARGUMENT whose message names one of `fields`.
fn check_invalid(result: Result<(), Status>, fields: &[&str], what: &str) {
    match result {
        Ok(()) => panic!("{what}: accepted, expected INVALID_ARGUMENT naming {fields:?}"),
        Err(status) => {
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{what}: expected INVALID_ARGUMENT, got {status:?}"
            );
            assert!(
                fields.iter().any(|f| status.message().contains(f)),
                "{what}: message {:?} names none of {fields:?}",
                status.message()
            );
        }
    }
}

/// Asserts `result` is a success.
fn check_ok(result: Result<(), Status>, what: &str) {
    if let Err(status) = result {
        panic!("{what}: refused with {status:?}, expected OK");
    }
}

fn caps(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("cap-{i}")).collect()
}

fn meta(n: usize) -> HashMap<String, String> {
    (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A syntactically valid token that is nobody's.
fn some_token() -> String {
    "x".repeat(32)
}

fn telemetry(
    success_rate: f64,
    avg_duration_ms: i64,
    total: i64,
    failed: i64,
) -> pb::AgentTelemetry {
    pb::AgentTelemetry {
        success_rate,
        avg_duration_ms,
        total_executions: total,
        failed_executions: failed,
        last_execution_at: 0,
    }
}

/// Telemetry cases that must be refused, with the field names a message may use.
fn bad_telemetry() -> Vec<(pb::AgentTelemetry, &'static [&'static str], &'static str)> {
    const RATE: &[&str] = &["success_rate", "telemetry"];
    vec![
        (telemetry(f64::NAN, 0, 10, 0), RATE, "success_rate NaN"),
        (
            telemetry(f64::INFINITY, 0, 10, 0),
            RATE,
            "success_rate +inf",
        ),
        (
            telemetry(f64::NEG_INFINITY, 0, 10, 0),
            RATE,
            "success_rate -inf",
        ),
        (telemetry(-0.1, 0, 10, 0), RATE, "success_rate -0.1"),
        (telemetry(1.1, 0, 10, 0), RATE, "success_rate 1.1"),
        (
            telemetry(1.0, -1, 10, 0),
            &["avg_duration_ms", "telemetry"],
            "avg_duration_ms -1",
        ),
        (
            telemetry(1.0, 0, -1, 0),
            &["total_executions", "telemetry"],
            "total_executions -1",
        ),
        (
            telemetry(1.0, 0, 10, -1),
            &["failed_executions", "telemetry"],
            "failed_executions -1",
        ),
        (
            telemetry(0.0, 0, 10, 11),
            &["failed_executions", "total_executions", "telemetry"],
            "failed_executions > total_executions",
        ),
    ]
}

fn good_telemetry() -> Vec<pb::AgentTelemetry> {
    vec![
        telemetry(0.0, 0, 0, 0),
        telemetry(1.0, 0, 10, 0),
        telemetry(0.0, 5, 10, 10),
        telemetry(0.5, 1_000_000, 10, 5),
    ]
}

async fn try_register(client: &mut Client, req: pb::RegisterRequest) -> Result<(), Status> {
    client.register(req).await.map(|_| ())
}

async fn register(client: &mut Client, caps: &[&str]) -> pb::RegisterResponse {
    client
        .register(register_request(caps))
        .await
        .unwrap()
        .into_inner()
}

async fn try_heartbeat(client: &mut Client, req: pb::HeartbeatRequest) -> Result<(), Status> {
    client.heartbeat(req).await.map(|_| ())
}

async fn try_list(client: &mut Client, req: pb::ListAgentsRequest) -> Result<(), Status> {
    client.list_agents(req).await.map(|_| ())
}

async fn try_discover(client: &mut Client, req: pb::DiscoverRequest) -> Result<(), Status> {
    client.discover_agents(req).await.map(|_| ())
}

async fn try_notify(client: &mut Client, req: pb::NotifyAgentRequest) -> Result<(), Status> {
    let resp = client.notify_agent(req).await?.into_inner();
    assert!(
        resp.success,
        "an accepted notification answers success: {resp:?}"
    );
    Ok(())
}

/// Opens a watch; a refusal may come as the call's status or as the first
/// item of the stream. An open stream with nothing to say counts as accepted.
async fn try_watch(client: &mut Client, req: pb::WatchAgentsRequest) -> Result<(), Status> {
    let mut stream = client.watch_agents(req).await?.into_inner();
    match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        Ok(Err(status)) => Err(status),
        _ => Ok(()),
    }
}

/// As [`try_watch`], for SubscribeNotifications.
async fn try_subscribe(
    client: &mut Client,
    req: tonic::Request<pb::SubscribeNotificationsRequest>,
) -> Result<(), Status> {
    let mut stream = client.subscribe_notifications(req).await?.into_inner();
    match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        Ok(Err(status)) => Err(status),
        _ => Ok(()),
    }
}

fn notify(agent_id: &str) -> pb::NotifyAgentRequest {
    pb::NotifyAgentRequest {
        agent_id: agent_id.to_string(),
        notification_type: "INFO".into(),
        message: "hello".into(),
        metadata: HashMap::new(),
    }
}

pub async fn register_refuses_agent_type_zero_and_unknown_numbers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for bad in [0, 5, 9, -1, 1000] {
        let mut req = register_request(&["a"]);
        req.agent_type = bad;
        check_invalid(
            try_register(&mut client, req).await,
            &["agent_type"],
            &format!("Register agent_type {bad}"),
        );
    }
    for good in 1..=4 {
        let mut req = register_request(&["a"]);
        req.agent_type = good;
        check_ok(
            try_register(&mut client, req).await,
            &format!("Register agent_type {good}"),
        );
    }
}

pub async fn unknown_agent_type_filter_is_refused_on_list_discover_and_watch(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    register(&mut client, &["a"]).await;
    for bad in [9, 5, -1] {
        check_invalid(
            try_list(
                &mut client,
                pb::ListAgentsRequest {
                    agent_type: bad,
                    ..Default::default()
                },
            )
            .await,
            &["agent_type"],
            &format!("ListAgents agent_type {bad}"),
        );
        check_invalid(
            try_discover(
                &mut client,
                pb::DiscoverRequest {
                    agent_type: bad,
                    ..Default::default()
                },
            )
            .await,
            &["agent_type"],
            &format!("DiscoverAgents agent_type {bad}"),
        );
        check_invalid(
            try_watch(
                &mut client,
                pb::WatchAgentsRequest {
                    agent_type: bad,
                    ..Default::default()
                },
            )
            .await,
            &["agent_type"],
            &format!("WatchAgents agent_type {bad}"),
        );
    }
    for good in 0..=4 {
        check_ok(
            try_list(
                &mut client,
                pb::ListAgentsRequest {
                    agent_type: good,
                    ..Default::default()
                },
            )
            .await,
            &format!("ListAgents agent_type {good}"),
        );
        check_ok(
            try_discover(
                &mut client,
                pb::DiscoverRequest {
                    agent_type: good,
                    ..Default::default()
                },
            )
            .await,
            &format!("DiscoverAgents agent_type {good}"),
        );
    }
}

pub async fn register_needs_at_least_one_capability(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    check_invalid(
        try_register(&mut client, register_request(&[])).await,
        &["capabilities"],
        "Register without capabilities",
    );
}

pub async fn register_accepts_64_capabilities_and_refuses_65(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut req = register_request(&[]);
    req.capabilities = caps(64);
    check_ok(try_register(&mut client, req).await, "64 capabilities");
    let mut req = register_request(&[]);
    req.capabilities = caps(65);
    check_invalid(
        try_register(&mut client, req).await,
        &["capabilities"],
        "65 capabilities",
    );
}

pub async fn register_counts_capabilities_after_removing_duplicates(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let mut req = register_request(&[]);
    req.capabilities = caps(64);
    req.capabilities.insert(10, "cap-3".into());
    assert_eq!(req.capabilities.len(), 65);
    let resp = client
        .register(req)
        .await
        .expect("65 entries with one duplicate are 64 capabilities")
        .into_inner();
    let agent = client
        .get_agent(pb::GetAgentRequest {
            agent_id: resp.agent_id,
        })
        .await
        .unwrap()
        .into_inner()
        .agent
        .unwrap();
    assert_eq!(agent.capabilities, caps(64));
}

pub async fn register_capabilities_are_1_to_128_bytes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let ok = ["a".repeat(128), "é".repeat(64), "x".into()];
    for cap in ok {
        let mut req = register_request(&["first"]);
        req.capabilities.push(cap.clone());
        check_ok(
            try_register(&mut client, req).await,
            &format!("capability of {} bytes", cap.len()),
        );
    }
    let bad = ["a".repeat(129), "é".repeat(65), String::new()];
    for cap in bad {
        let mut req = register_request(&["first"]);
        req.capabilities.push(cap.clone());
        check_invalid(
            try_register(&mut client, req).await,
            &["capabilit"],
            &format!("capability of {} bytes", cap.len()),
        );
    }
}

pub async fn capabilities_with_control_characters_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for cap in [
        "a\nb",
        "\t",
        "tab\there",
        "nul\0",
        "del\u{7f}",
        "esc\u{1b}[0m",
        "c1\u{85}",
    ] {
        let mut req = register_request(&["first"]);
        req.capabilities.push(cap.to_string());
        check_invalid(
            try_register(&mut client, req).await,
            &["capabilit"],
            &format!("Register capability {cap:?}"),
        );
    }
    // Non-control punctuation and non-ASCII text are fine.
    let mut req = register_request(&["nlp:summarize/v2", "データ", "a b"]);
    req.capabilities.push("x.y-z_1".into());
    check_ok(
        try_register(&mut client, req).await,
        "printable capabilities",
    );
}

pub async fn discover_capabilities_follow_the_per_entry_rule_and_limit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    register(&mut client, &["a"]).await;
    let discover = |capabilities: Vec<String>| pb::DiscoverRequest {
        capabilities,
        ..Default::default()
    };
    check_ok(
        try_discover(&mut client, discover(vec![])).await,
        "no capabilities",
    );
    check_ok(
        try_discover(&mut client, discover(caps(64))).await,
        "64 capabilities",
    );
    check_ok(
        try_discover(&mut client, discover(vec!["a".repeat(128)])).await,
        "128-byte capability",
    );
    check_invalid(
        try_discover(&mut client, discover(caps(65))).await,
        &["capabilities"],
        "Discover with 65 capabilities",
    );
    for bad in [
        "a".repeat(129),
        String::new(),
        "a\nb".into(),
        "\u{7}".into(),
    ] {
        check_invalid(
            try_discover(&mut client, discover(vec!["a".into(), bad.clone()])).await,
            &["capabilit"],
            &format!("Discover capability {bad:?}"),
        );
    }
}

pub async fn watch_capabilities_follow_the_per_entry_rule_and_limit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let watch = |capabilities: Vec<String>| pb::WatchAgentsRequest {
        capabilities,
        ..Default::default()
    };
    check_invalid(
        try_watch(&mut client, watch(caps(65))).await,
        &["capabilities"],
        "Watch with 65 capabilities",
    );
    for bad in ["a".repeat(129), String::new(), "a\rb".into()] {
        check_invalid(
            try_watch(&mut client, watch(vec!["a".into(), bad.clone()])).await,
            &["capabilit"],
            &format!("Watch capability {bad:?}"),
        );
    }
}

pub async fn register_metadata_is_limited_in_entries_keys_and_values(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let with = |metadata: HashMap<String, String>| {
        let mut req = register_request(&["a"]);
        req.metadata = metadata;
        req
    };
    let one = |k: String, v: String| HashMap::from([(k, v)]);

    check_ok(
        try_register(&mut client, with(meta(64))).await,
        "64 metadata entries",
    );
    check_ok(
        try_register(&mut client, with(one("k".repeat(128), "v".into()))).await,
        "128-byte key",
    );
    check_ok(
        try_register(&mut client, with(one("k".into(), "v".repeat(1024)))).await,
        "1024-byte value",
    );
    check_ok(
        try_register(&mut client, with(one("k".into(), String::new()))).await,
        "empty value",
    );

    let bad = [
        (meta(65), "65 metadata entries"),
        (one("k".repeat(129), "v".into()), "129-byte key"),
        (one(String::new(), "v".into()), "empty key"),
        (one("k".into(), "v".repeat(1025)), "1025-byte value"),
    ];
    for (metadata, what) in bad {
        check_invalid(
            try_register(&mut client, with(metadata)).await,
            &["metadata"],
            &format!("Register {what}"),
        );
    }
}

pub async fn notify_metadata_is_limited_in_entries_keys_and_values(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    let with = |metadata: HashMap<String, String>| {
        let mut req = notify(&agent.agent_id);
        req.metadata = metadata;
        req
    };
    let one = |k: String, v: String| HashMap::from([(k, v)]);

    check_ok(
        try_notify(&mut client, with(meta(64))).await,
        "64 metadata entries",
    );
    check_ok(
        try_notify(&mut client, with(one("k".repeat(128), "v".into()))).await,
        "128-byte key",
    );
    check_ok(
        try_notify(&mut client, with(one("k".into(), "v".repeat(1024)))).await,
        "1024-byte value",
    );

    let bad = [
        (meta(65), "65 metadata entries"),
        (one("k".repeat(129), "v".into()), "129-byte key"),
        (one(String::new(), "v".into()), "empty key"),
        (one("k".into(), "v".repeat(1025)), "1025-byte value"),
    ];
    for (metadata, what) in bad {
        check_invalid(
            try_notify(&mut client, with(metadata)).await,
            &["metadata"],
            &format!("NotifyAgent {what}"),
        );
    }
}

pub async fn namespace_cluster_and_version_are_at_most_128_bytes_without_controls(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    type Setter = fn(&mut pb::RegisterRequest, String);
    let fields: [(&str, Setter); 3] = [
        ("namespace", |r, v| r.namespace = v),
        ("cluster", |r, v| r.cluster = v),
        ("version", |r, v| r.version = v),
    ];
    for (field, set) in fields {
        let mut req = register_request(&["a"]);
        set(&mut req, "n".repeat(128));
        check_ok(
            try_register(&mut client, req).await,
            &format!("128-byte {field}"),
        );

        for bad in [
            "n".repeat(129),
            "a\nb".into(),
            "tab\t".into(),
            "\u{0}".into(),
        ] {
            let mut req = register_request(&["a"]);
            set(&mut req, bad.clone());
            check_invalid(
                try_register(&mut client, req).await,
                &[field],
                &format!("Register {field} {bad:?}"),
            );
        }
    }
}

pub async fn endpoint_is_empty_or_host_and_port(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    // A 250-byte host name made of DNS-sized labels.
    let long_host = [50, 50, 50, 50, 46]
        .iter()
        .map(|n| "a".repeat(*n))
        .collect::<Vec<_>>()
        .join(".");
    let endpoint_255 = format!("{long_host}:8080");
    assert_eq!(endpoint_255.len(), 255);
    let endpoint_256 = format!("{long_host}:18080");
    assert_eq!(endpoint_256.len(), 256);

    let ok = [
        String::new(),
        "10.0.0.1:8080".into(),
        "[::1]:80".into(),
        "localhost:1".into(),
        "agent.example.com:65535".into(),
        endpoint_255,
    ];
    for endpoint in ok {
        let mut req = register_request(&["a"]);
        req.endpoint = endpoint.clone();
        check_ok(
            try_register(&mut client, req).await,
            &format!("endpoint {endpoint:?}"),
        );
    }
    let bad = [
        "host:0".to_string(),
        "host:65536".into(),
        "nohost".into(),
        "host:".into(),
        "host:abc".into(),
        "host:-1".into(),
        endpoint_256,
    ];
    for endpoint in bad {
        let mut req = register_request(&["a"]);
        req.endpoint = endpoint.clone();
        check_invalid(
            try_register(&mut client, req).await,
            &["endpoint"],
            &format!("endpoint {endpoint:?}"),
        );
    }
}

pub async fn register_telemetry_must_be_sane(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for (t, fields, what) in bad_telemetry() {
        let mut req = register_request(&["a"]);
        req.telemetry = Some(t);
        check_invalid(
            try_register(&mut client, req).await,
            fields,
            &format!("Register telemetry {what}"),
        );
    }
    for t in good_telemetry() {
        let mut req = register_request(&["a"]);
        req.telemetry = Some(t);
        check_ok(
            try_register(&mut client, req).await,
            &format!("telemetry {t:?}"),
        );
    }
}

pub async fn heartbeat_telemetry_must_be_sane(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    let hb = |t: pb::AgentTelemetry| pb::HeartbeatRequest {
        agent_id: agent.agent_id.clone(),
        telemetry: Some(t),
        registration_token: agent.registration_token.clone(),
    };
    for (t, fields, what) in bad_telemetry() {
        check_invalid(
            try_heartbeat(&mut client, hb(t)).await,
            fields,
            &format!("Heartbeat telemetry {what}"),
        );
    }
    for t in good_telemetry() {
        check_ok(
            try_heartbeat(&mut client, hb(t)).await,
            &format!("telemetry {t:?}"),
        );
    }
}

pub async fn negative_ttl_seconds_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for bad in [-1, i32::MIN] {
        let mut req = register_request(&["a"]);
        req.ttl_seconds = bad;
        check_invalid(
            try_register(&mut client, req).await,
            &["ttl_seconds"],
            &format!("ttl_seconds {bad}"),
        );
    }
    let mut req = register_request(&["a"]);
    req.ttl_seconds = i32::MAX;
    check_ok(
        try_register(&mut client, req).await,
        "ttl_seconds i32::MAX is clamped",
    );
}

pub async fn negative_max_results_is_refused_and_large_is_clamped(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for _ in 0..7 {
        register(&mut client, &["a"]).await;
    }
    check_invalid(
        try_discover(
            &mut client,
            pb::DiscoverRequest {
                max_results: -1,
                ..Default::default()
            },
        )
        .await,
        &["max_results"],
        "max_results -1",
    );
    for (max_results, expected) in [(5000, 7), (i32::MAX, 7), (0, 5), (3, 3)] {
        let resp = client
            .discover_agents(pb::DiscoverRequest {
                capabilities: vec!["a".into()],
                max_results,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("max_results {max_results}: {e:?}"))
            .into_inner();
        assert_eq!(resp.agents.len(), expected, "max_results {max_results}");
    }
}

pub async fn negative_page_size_is_refused_and_large_is_clamped(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for _ in 0..3 {
        register(&mut client, &["a"]).await;
    }
    check_invalid(
        try_list(
            &mut client,
            pb::ListAgentsRequest {
                page_size: -1,
                ..Default::default()
            },
        )
        .await,
        &["page_size"],
        "page_size -1",
    );
    for page_size in [20_000, i32::MAX] {
        let resp = client
            .list_agents(pb::ListAgentsRequest {
                page_size,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("page_size {page_size}: {e:?}"))
            .into_inner();
        assert_eq!(resp.agents.len(), 3);
        assert!(resp.next_page_token.is_empty());
    }
}

pub async fn page_token_must_be_one_the_server_handed_out(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for _ in 0..3 {
        register(&mut client, &["a"]).await;
    }
    let real = client
        .list_agents(pb::ListAgentsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!real.is_empty(), "a first page of 1 of 3 has a next token");

    let mut tampered = real.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let garbage = [
        "garbage".to_string(),
        "AAAA".into(),
        "!!!".into(),
        new_id(),
        format!("{real}x"),
        tampered,
    ];
    for token in garbage {
        check_invalid(
            try_list(
                &mut client,
                pb::ListAgentsRequest {
                    page_size: 1,
                    page_token: token.clone(),
                    ..Default::default()
                },
            )
            .await,
            &["page_token"],
            &format!("page_token {token:?}"),
        );
    }
    check_ok(
        try_list(
            &mut client,
            pb::ListAgentsRequest {
                page_size: 1,
                page_token: real,
                ..Default::default()
            },
        )
        .await,
        "the token the server handed out",
    );
}

pub async fn page_token_used_with_other_filters_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for _ in 0..3 {
        register(&mut client, &["a"]).await;
    }
    let filters = HashMap::from([("namespace".to_string(), "default".to_string())]);
    let token = client
        .list_agents(pb::ListAgentsRequest {
            filters: filters.clone(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!token.is_empty());

    let others = [
        HashMap::new(),
        HashMap::from([("namespace".to_string(), "other".to_string())]),
        HashMap::from([
            ("namespace".to_string(), "default".to_string()),
            ("cluster".to_string(), "local".to_string()),
        ]),
    ];
    for other in others {
        check_invalid(
            try_list(
                &mut client,
                pb::ListAgentsRequest {
                    filters: other.clone(),
                    page_size: 1,
                    page_token: token.clone(),
                    ..Default::default()
                },
            )
            .await,
            &["page_token"],
            &format!("token reused with filters {other:?}"),
        );
    }
    check_ok(
        try_list(
            &mut client,
            pb::ListAgentsRequest {
                filters,
                page_size: 1,
                page_token: token,
                ..Default::default()
            },
        )
        .await,
        "token with the filters that produced it",
    );
}

pub async fn status_filter_must_name_a_status_in_any_case(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    register(&mut client, &["a"]).await;
    let status = |s: &str| HashMap::from([("status".to_string(), s.to_string())]);
    for bad in ["bogus", "HEALTHYX", "ok", "AGENT_STATUS_UNSPECIFIED", "1"] {
        check_invalid(
            try_list(
                &mut client,
                pb::ListAgentsRequest {
                    filters: status(bad),
                    ..Default::default()
                },
            )
            .await,
            &["status"],
            &format!("ListAgents status {bad:?}"),
        );
        check_invalid(
            try_discover(
                &mut client,
                pb::DiscoverRequest {
                    filters: status(bad),
                    ..Default::default()
                },
            )
            .await,
            &["status"],
            &format!("DiscoverAgents status {bad:?}"),
        );
    }
    for good in ["healthy", "Degraded", "UNHEALTHY", "HeAlThY"] {
        check_ok(
            try_list(
                &mut client,
                pb::ListAgentsRequest {
                    filters: status(good),
                    ..Default::default()
                },
            )
            .await,
            &format!("ListAgents status {good:?}"),
        );
        check_ok(
            try_discover(
                &mut client,
                pb::DiscoverRequest {
                    filters: status(good),
                    ..Default::default()
                },
            )
            .await,
            &format!("DiscoverAgents status {good:?}"),
        );
    }
    // Lower-case "healthy" finds the healthy agent.
    let found = client
        .list_agents(pb::ListAgentsRequest {
            filters: status("healthy"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(found.len(), 1, "status filter is case-insensitive");
}

pub async fn notification_type_is_at_most_64_bytes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    for ok in [String::new(), "T".repeat(64), "CONFIG_RELOAD".into()] {
        let mut req = notify(&agent.agent_id);
        req.notification_type = ok.clone();
        check_ok(
            try_notify(&mut client, req).await,
            &format!("notification_type of {} bytes", ok.len()),
        );
    }
    let mut req = notify(&agent.agent_id);
    req.notification_type = "T".repeat(65);
    check_invalid(
        try_notify(&mut client, req).await,
        &["notification_type"],
        "65-byte notification_type",
    );
}

pub async fn notification_message_is_at_most_64_kib(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    let mut req = notify(&agent.agent_id);
    req.message = "m".repeat(64 * 1024);
    check_ok(try_notify(&mut client, req).await, "64 KiB message");
    let mut req = notify(&agent.agent_id);
    req.message = "m".repeat(64 * 1024 + 1);
    check_invalid(
        try_notify(&mut client, req).await,
        &["message"],
        "64 KiB + 1 message",
    );
}

pub async fn client_sent_registration_token_must_be_22_to_256_url_safe_characters(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let with = |token: String| {
        let mut req = register_request(&["a"]);
        req.agent_id = new_id();
        req.registration_token = token;
        req
    };
    let bad = [
        "a".repeat(21),
        format!("{}!", "a".repeat(29)),
        "a".repeat(257),
        format!("{} {}", "a".repeat(15), "b".repeat(15)),
        format!("{}=", "a".repeat(30)),
        format!("{}+/", "a".repeat(30)),
        format!("{}é", "a".repeat(30)),
    ];
    for token in bad {
        check_invalid(
            try_register(&mut client, with(token.clone())).await,
            &["registration_token"],
            &format!("client token {token:?}"),
        );
    }
    let ok = [
        "a".repeat(22),
        "Z".repeat(256),
        "Ab0_-Ab0_-Ab0_-Ab0_-Ab0_-".to_string(),
    ];
    for token in ok {
        check_ok(
            try_register(&mut client, with(token.clone())).await,
            &format!("client token of {} chars", token.len()),
        );
    }
}

pub async fn after_notification_id_must_be_empty_or_an_id(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    check_ok(
        try_notify(&mut client, notify(&agent.agent_id)).await,
        "a notification",
    );
    for bad in ["abc", "-1", "1.5", " 1", "0x1"] {
        let req = pb::SubscribeNotificationsRequest {
            agent_id: agent.agent_id.clone(),
            registration_token: agent.registration_token.clone(),
            after_notification_id: bad.to_string(),
        };
        check_invalid(
            try_subscribe(&mut client, tonic::Request::new(req)).await,
            &["after_notification_id"],
            &format!("after_notification_id {bad:?}"),
        );
    }
}

pub async fn malformed_agent_id_is_refused_by_every_call(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for bad in [
        "xyz",
        "1234",
        "0000-0000",
        "g0000000-0000-4000-8000-000000000000",
    ] {
        let id = bad.to_string();
        check_invalid(
            try_heartbeat(
                &mut client,
                pb::HeartbeatRequest {
                    agent_id: id.clone(),
                    telemetry: None,
                    registration_token: some_token(),
                },
            )
            .await,
            &["agent_id"],
            &format!("Heartbeat {bad:?}"),
        );
        check_invalid(
            client
                .deregister(pb::DeregisterRequest {
                    agent_id: id.clone(),
                    registration_token: some_token(),
                })
                .await
                .map(|_| ()),
            &["agent_id"],
            &format!("Deregister {bad:?}"),
        );
        check_invalid(
            client
                .get_agent(pb::GetAgentRequest {
                    agent_id: id.clone(),
                })
                .await
                .map(|_| ()),
            &["agent_id"],
            &format!("GetAgent {bad:?}"),
        );
        check_invalid(
            try_notify(&mut client, notify(&id)).await,
            &["agent_id"],
            &format!("NotifyAgent {bad:?}"),
        );
        check_invalid(
            try_subscribe(
                &mut client,
                tonic::Request::new(pb::SubscribeNotificationsRequest {
                    agent_id: id.clone(),
                    registration_token: some_token(),
                    after_notification_id: String::new(),
                }),
            )
            .await,
            &["agent_id"],
            &format!("SubscribeNotifications {bad:?}"),
        );
        let mut req = register_request(&["a"]);
        req.agent_id = id.clone();
        check_invalid(
            try_register(&mut client, req).await,
            &["agent_id"],
            &format!("Register agent_id {bad:?}"),
        );
    }
    // Empty ids: required everywhere except Register.
    check_invalid(
        try_heartbeat(
            &mut client,
            pb::HeartbeatRequest {
                agent_id: String::new(),
                telemetry: None,
                registration_token: some_token(),
            },
        )
        .await,
        &["agent_id"],
        "Heartbeat with an empty agent_id",
    );
    check_invalid(
        try_notify(&mut client, notify("")).await,
        &["agent_id"],
        "NotifyAgent with an empty agent_id",
    );
}

pub async fn malformed_request_to_an_unknown_agent_is_invalid_argument_not_not_found(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let unknown = new_id();
    check_invalid(
        try_heartbeat(
            &mut client,
            pb::HeartbeatRequest {
                agent_id: unknown.clone(),
                telemetry: Some(telemetry(1.5, 0, 10, 0)),
                registration_token: some_token(),
            },
        )
        .await,
        &["success_rate", "telemetry"],
        "Heartbeat with bad telemetry to an unknown agent",
    );
    let mut req = notify(&unknown);
    req.notification_type = "T".repeat(65);
    check_invalid(
        try_notify(&mut client, req).await,
        &["notification_type"],
        "NotifyAgent with a long type to an unknown agent",
    );
    let mut req = notify(&unknown);
    req.metadata = meta(65);
    check_invalid(
        try_notify(&mut client, req).await,
        &["metadata"],
        "NotifyAgent with too much metadata to an unknown agent",
    );
    check_invalid(
        try_subscribe(
            &mut client,
            tonic::Request::new(pb::SubscribeNotificationsRequest {
                agent_id: unknown.clone(),
                registration_token: some_token(),
                after_notification_id: "abc".into(),
            }),
        )
        .await,
        &["after_notification_id"],
        "SubscribeNotifications with a bad resume id for an unknown agent",
    );
    let mut req = register_request(&[]);
    req.agent_id = unknown;
    check_invalid(
        try_register(&mut client, req).await,
        &["capabilities"],
        "Register under an unknown id without capabilities",
    );
}

pub async fn validation_runs_before_the_token_check(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    for token in [String::new(), some_token()] {
        check_invalid(
            try_heartbeat(
                &mut client,
                pb::HeartbeatRequest {
                    agent_id: agent.agent_id.clone(),
                    telemetry: Some(telemetry(0.5, 0, 10, 20)),
                    registration_token: token.clone(),
                },
            )
            .await,
            &["failed_executions", "total_executions", "telemetry"],
            &format!("Heartbeat with bad telemetry and token {token:?}"),
        );
        check_invalid(
            try_subscribe(
                &mut client,
                tonic::Request::new(pb::SubscribeNotificationsRequest {
                    agent_id: agent.agent_id.clone(),
                    registration_token: token.clone(),
                    after_notification_id: "abc".into(),
                }),
            )
            .await,
            &["after_notification_id"],
            &format!("SubscribeNotifications with a bad resume id and token {token:?}"),
        );
        let mut req = register_request(&["a"]);
        req.agent_id = agent.agent_id.clone();
        req.registration_token = token.clone();
        req.agent_type = 0;
        check_invalid(
            try_register(&mut client, req).await,
            &["agent_type"],
            &format!("re-Register with agent_type 0 and token {token:?}"),
        );
    }
}

behaviour_tests! {
    register_refuses_agent_type_zero_and_unknown_numbers,
    unknown_agent_type_filter_is_refused_on_list_discover_and_watch,
    register_needs_at_least_one_capability,
    register_accepts_64_capabilities_and_refuses_65,
    register_counts_capabilities_after_removing_duplicates,
    register_capabilities_are_1_to_128_bytes,
    capabilities_with_control_characters_are_refused,
    discover_capabilities_follow_the_per_entry_rule_and_limit,
    watch_capabilities_follow_the_per_entry_rule_and_limit,
    register_metadata_is_limited_in_entries_keys_and_values,
    notify_metadata_is_limited_in_entries_keys_and_values,
    namespace_cluster_and_version_are_at_most_128_bytes_without_controls,
    endpoint_is_empty_or_host_and_port,
    register_telemetry_must_be_sane,
    heartbeat_telemetry_must_be_sane,
    negative_ttl_seconds_is_refused,
    negative_max_results_is_refused_and_large_is_clamped,
    negative_page_size_is_refused_and_large_is_clamped,
    page_token_must_be_one_the_server_handed_out,
    page_token_used_with_other_filters_is_refused,
    status_filter_must_name_a_status_in_any_case,
    notification_type_is_at_most_64_bytes,
    notification_message_is_at_most_64_kib,
    client_sent_registration_token_must_be_22_to_256_url_safe_characters,
    after_notification_id_must_be_empty_or_an_id,
    malformed_agent_id_is_refused_by_every_call,
    malformed_request_to_an_unknown_agent_is_invalid_argument_not_not_found,
    validation_runs_before_the_token_check,
}
