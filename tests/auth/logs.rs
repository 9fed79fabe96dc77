//! Identities may be logged (they are in the call span); JWTs and tokens
//! never, whether they verify or not.

use std::time::Duration;

use crate::{
    common::with_token,
    ops_support::Registry,
    pki::{AUDIENCE, Signer, bundle},
    support::{Files, register, with_bearer, worker},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_and_tokens_never_reach_the_logs_but_identities_do() {
    let (signer, files) = (Signer::new("k1"), Files::new());
    files.write("bundle.json", &bundle(&[&signer]));
    let path = files.path("bundle.json");
    let mut registry = Registry::start(
        &["--jwt-bundle", &path, "--log-format", "json"],
        &[("RUST_LOG", "debug")],
    )
    .await;
    let mut client = registry.client().await;
    let identity = "spiffe://example.org/ns/log-test/sa/scheduler";
    let valid = signer.token(identity);
    let expired = signer.token_as("k1", identity, AUDIENCE, -60);
    let foreign = Signer::new("k1").token(identity);
    let registered = register(&mut client, with_bearer(worker(), &valid))
        .await
        .unwrap();
    for jwt in [&expired, &foreign] {
        assert!(
            register(&mut client, with_bearer(worker(), jwt))
                .await
                .is_err()
        );
    }
    let heartbeat = agent_registry::pb::HeartbeatRequest {
        agent_id: registered.agent_id.clone(),
        ..Default::default()
    };
    client
        .heartbeat(with_token(heartbeat, &registered.registration_token))
        .await
        .unwrap();
    registry.signal("-TERM");
    registry.wait_exit(Duration::from_secs(12)).await.unwrap();
    let log = registry.stderr();
    for secret in [&valid, &expired, &foreign, &registered.registration_token] {
        // The signature part alone is what makes a JWT usable.
        let tail = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(tail), "a credential is logged:\n{log}");
    }
    assert!(
        log.contains(identity),
        "the identity is in the call span:\n{log}"
    );
}
