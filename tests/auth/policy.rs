//! The authorization policy: what it refuses and how, what it never
//! refuses (health, reflection), and policies that stop the start.

use tonic::Code;
use tonic_reflection::pb::v1;

use crate::{
    ops_support::{channel, health_check, health_client},
    support::{Files, Server, counter, list, register, run_binary, worker},
};

const NOBODY: &str =
    "rules:\n  - identities: [\"spiffe://example.org/nobody\"]\n    allow: [\"*\"]\n";

#[tokio::test]
async fn health_and_reflection_are_always_allowed() {
    let files = Files::new();
    files.write("policy.yaml", NOBODY);
    let policy = files.path("policy.yaml");
    let server = Server::start(&["--authz-policy", &policy]).await;
    let mut health = health_client(&server.endpoint()).await;
    assert!(health_check(&mut health, "").await.is_ok());
    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(
        channel(&server.endpoint()).await,
    );
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    assert!(answers.message().await.unwrap().is_some());
    // The registry itself is closed to anonymous callers.
    let mut client = server.client().await;
    assert_eq!(
        list(&mut client, tonic::Request::new(Default::default())).await,
        Code::Unauthenticated
    );
    let refused = register(&mut client, tonic::Request::new(worker()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        !refused.message().contains("token"),
        "{}",
        refused.message()
    );
    let failures = counter(
        &server,
        "service_registry_auth_failures_total",
        &[("reason", "missing")],
    );
    assert_eq!(failures.await, 2.0);
    // Refusals are counted like any call.
    let refused = counter(
        &server,
        "service_registry_register_total",
        &[("result", "UNAUTHENTICATED")],
    );
    assert_eq!(refused.await, 1.0);
    server.stop().await;
}

#[test]
fn a_policy_that_does_not_parse_names_an_unknown_method_or_has_no_rules_stops_the_start() {
    let files = Files::new();
    for (name, text) in [
        ("syntax.yaml", "rules: [ {"),
        (
            "method.yaml",
            "rules:\n  - identities: [anonymous]\n    allow: [Frobnicate]\n",
        ),
        ("empty.yaml", "rules: []\n"),
        ("nothing.yaml", ""),
    ] {
        let path = files.write(name, text);
        let (code, first) = run_binary(&["--authz-policy", path.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{name}: {first}");
        assert!(first.starts_with("--authz-policy"), "{name}: {first}");
    }
    let (code, first) = run_binary(&["--authz-policy", &files.path("missing.yaml")]);
    assert_eq!(code, Some(2), "{first}");
}

/// The HTTP/JSON door applies the same policy as the gRPC one (BEHAVIOUR.md
/// §9, §12): anonymous callers may read, not write.
#[tokio::test]
async fn the_http_api_applies_the_policy_too() {
    let files = Files::new();
    files.write(
        "policy.yaml",
        "rules:\n  - identities: [anonymous]\n    allow: [GetAgent, ListAgents, DiscoverAgents]\n",
    );
    let policy = files.path("policy.yaml");
    let server = Server::start(&["--authz-policy", &policy]).await;
    let base = format!(
        "http://{}",
        server.http.expect("the HTTP API is on without TLS")
    );
    let http = reqwest::Client::new();
    let listed = http.get(format!("{base}/v1/agents")).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let catalog = http
        .get(format!("{base}/v1/capabilities"))
        .send()
        .await
        .unwrap();
    assert_eq!(catalog.status(), 200);
    let refused = http
        .post(format!("{base}/v1/agents"))
        .body(r#"{"agentType":"WORKER","capabilities":["a"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "UNAUTHENTICATED");
    let watch = http.get(format!("{base}/v1/watch")).send().await.unwrap();
    assert_eq!(
        watch.status(),
        401,
        "WatchAgents is not allowed to anonymous callers"
    );
    let garbage = http
        .get(format!("{base}/v1/agents"))
        .header("authorization", "Bearer not-a-jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 401, "a bad credential is never anonymous");
}
