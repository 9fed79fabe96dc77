//! JWT-SVIDs in `authorization: Bearer`: the valid one gives its `sub`; every
//! invalid one is UNAUTHENTICATED, never anonymous, and counted by reason.

use tonic::Code;

use crate::{
    pki::{AUDIENCE, Signer, bundle},
    support::{Files, Server, counter, list, register, run_binary, with_bearer, worker},
};

const ORCHESTRATOR: &str = "spiffe://example.org/ns/prod/sa/orchestrator-main";
const FAILURES: &str = "service_registry_auth_failures_total";

async fn jwt_server(signer: &Signer, files: &Files) -> Server {
    files.write("bundle.json", &bundle(&[signer]));
    files.write(
        "policy.yaml",
        "rules:\n  - identities: [\"spiffe://example.org/ns/*/sa/orchestrator-*\"]\n    allow: [\"*\"]\n  \
         - identities: [anonymous]\n    allow: [ListAgents]\n",
    );
    let (bundle, policy) = (files.path("bundle.json"), files.path("policy.yaml"));
    Server::start(&["--jwt-bundle", &bundle, "--authz-policy", &policy]).await
}

#[tokio::test]
async fn a_valid_jwt_svid_gives_its_sub() {
    let (signer, files) = (Signer::new("k1"), Files::new());
    let server = jwt_server(&signer, &files).await;
    let mut client = server.client().await;
    register(
        &mut client,
        with_bearer(worker(), &signer.token(ORCHESTRATOR)),
    )
    .await
    .unwrap();
    // The same call anonymously is refused: the identity came from the JWT.
    let refused = register(&mut client, tonic::Request::new(worker()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        counter(&server, FAILURES, &[("reason", "missing")]).await,
        1.0
    );
    // An identity the policy does not allow: PERMISSION_DENIED.
    let other = signer.token("spiffe://example.org/ns/prod/sa/intern");
    let denied = register(&mut client, with_bearer(worker(), &other))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        counter(&server, FAILURES, &[("reason", "denied")]).await,
        1.0
    );
    server.stop().await;
}

#[tokio::test]
async fn invalid_jwt_svids_are_unauthenticated_never_anonymous() {
    let (signer, files) = (Signer::new("k1"), Files::new());
    let server = jwt_server(&signer, &files).await;
    let mut client = server.client().await;
    let unknown = Signer::new("k2");
    let foreign = Signer::new("k1");
    let cases = [
        (
            "expired",
            signer.token_as("k1", ORCHESTRATOR, AUDIENCE, -30),
            "expired",
        ),
        (
            "wrong audience",
            signer.token_as("k1", ORCHESTRATOR, "someone-else", 3600),
            "invalid",
        ),
        ("unknown key", unknown.token(ORCHESTRATOR), "invalid"),
        (
            "foreign key under a known kid",
            foreign.token(ORCHESTRATOR),
            "invalid",
        ),
        ("garbage", "abc.def.ghi".to_owned(), "invalid"),
        ("not a JWT", "not-a-jwt".to_owned(), "invalid"),
    ];
    for (what, token, _) in &cases {
        // ListAgents is open to anonymous callers: a bad credential must not
        // fall back to that.
        let code = list(&mut client, with_bearer(Default::default(), token)).await;
        assert_eq!(code, Code::Unauthenticated, "{what}");
    }
    let mut basic = tonic::Request::new(Default::default());
    basic
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
    assert_eq!(
        list(&mut client, basic).await,
        Code::Unauthenticated,
        "not Bearer"
    );
    assert_eq!(
        counter(&server, FAILURES, &[("reason", "expired")]).await,
        1.0
    );
    assert_eq!(
        counter(&server, FAILURES, &[("reason", "invalid")]).await,
        6.0
    );
    // The server is fine afterwards, and anonymous reads still work.
    assert_eq!(
        list(&mut client, tonic::Request::new(Default::default())).await,
        Code::Ok
    );
    server.stop().await;
}

#[tokio::test]
async fn a_bearer_token_without_a_bundle_is_unauthenticated() {
    let server = Server::start(&[]).await;
    let mut client = server.client().await;
    let token = Signer::new("k1").token(ORCHESTRATOR);
    assert_eq!(
        list(&mut client, with_bearer(Default::default(), &token)).await,
        Code::Unauthenticated
    );
    assert_eq!(
        list(&mut client, tonic::Request::new(Default::default())).await,
        Code::Ok
    );
    server.stop().await;
}

#[test]
fn an_unusable_bundle_stops_the_start_with_exit_2() {
    let files = Files::new();
    for (name, text) in [
        ("garbage.json", "not json"),
        ("empty.json", r#"{"keys":[]}"#),
        (
            "hmac.json",
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#,
        ),
    ] {
        let path = files.write(name, text);
        let (code, first) = run_binary(&["--jwt-bundle", path.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{name}: {first}");
        assert!(first.starts_with("--jwt-bundle"), "{name}: {first}");
    }
}
