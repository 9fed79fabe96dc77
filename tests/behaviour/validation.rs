//! Every validation rule of BEHAVIOUR.md §2: a malformed request gets
//! INVALID_ARGUMENT with a message naming the field, boundaries are exact, and
//! validation runs before the existence and token checks.

use std::{collections::HashMap, time::Duration};

use agent_registry::pb::{self, service_registry_client::ServiceRegistryClient};
use tonic::{Code, Status, transport::Channel};

use crate::common::*;

pub(crate) type Client = ServiceRegistryClient<Channel>;

/// Asserts `result` is INVALID_ARGUMENT whose message names one of `fields`.
pub(crate) fn check_invalid(result: Result<(), Status>, fields: &[&str], what: &str) {
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
pub(crate) fn check_ok(result: Result<(), Status>, what: &str) {
    if let Err(status) = result {
        panic!("{what}: refused with {status:?}, expected OK");
    }
}

fn caps(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("cap-{i}")).collect()
}

pub(crate) fn meta(n: usize) -> HashMap<String, String> {
    (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect()
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn telemetry(
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

pub(crate) async fn try_register(
    client: &mut Client,
    req: pb::RegisterRequest,
) -> Result<(), Status> {
    client.register(req).await.map(|_| ())
}

pub(crate) async fn register(client: &mut Client, caps: &[&str]) -> pb::RegisterResponse {
    client
        .register(register_request(caps))
        .await
        .unwrap()
        .into_inner()
}

pub(crate) async fn try_heartbeat(
    client: &mut Client,
    req: pb::HeartbeatRequest,
) -> Result<(), Status> {
    client.heartbeat(req).await.map(|_| ())
}

pub(crate) async fn try_list(
    client: &mut Client,
    req: pb::ListAgentsRequest,
) -> Result<(), Status> {
    client.list_agents(req).await.map(|_| ())
}

pub(crate) async fn try_discover(
    client: &mut Client,
    req: pb::DiscoverRequest,
) -> Result<(), Status> {
    client.discover_agents(req).await.map(|_| ())
}

pub(crate) async fn try_notify(
    client: &mut Client,
    req: pb::NotifyAgentRequest,
) -> Result<(), Status> {
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

pub(crate) fn notify(agent_id: &str) -> pb::NotifyAgentRequest {
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
}
