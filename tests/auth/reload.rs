//! Certificates (on the gRPC and HTTP ports) and policies changed on disk
//! apply within 10 s, with no restart and no dropped connection; a broken
//! new file is ignored and counted.

use std::time::Duration;

use tonic::Code;

use crate::{
    common::wait_until,
    pki::Ca,
    support::{Files, Server, counter, list, register, served_serial, worker},
};

const RELOAD_ERRORS: &str = "service_registry_reload_errors_total";
const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_new_certificate_is_served_within_10_s_and_open_connections_keep_working() {
    let (ca, files) = (Ca::new("test ca"), Files::new());
    let first = ca.server(1);
    files.write("tls.crt", &first.cert);
    files.write("tls.key", &first.key);
    let (cert, key) = (files.path("tls.crt"), files.path("tls.key"));
    let server = Server::start(&["--tls-cert", &cert, "--tls-key", &key]).await;
    let http = server.http.unwrap();
    assert_eq!(served_serial(server.addr, &ca.pem).await, Some(vec![1]));
    assert_eq!(served_serial(http, &ca.pem).await, Some(vec![1]));
    let mut open = server.tls_client(&ca, None).await.unwrap();
    assert_eq!(
        list(&mut open, tonic::Request::new(Default::default())).await,
        Code::Ok
    );

    let second = ca.server(2);
    files.write("tls.key", &second.key);
    files.write("tls.crt", &second.cert);
    let started = std::time::Instant::now();
    wait_until(WITHIN, "the new certificate is served", || async {
        served_serial(server.addr, &ca.pem).await == Some(vec![2])
    })
    .await;
    eprintln!("certificate reloaded after {:?}", started.elapsed());
    // The HTTP port serves the same, new one.
    wait_until(WITHIN, "the HTTP port serves it too", || async {
        served_serial(http, &ca.pem).await == Some(vec![2])
    })
    .await;
    assert_eq!(
        list(&mut open, tonic::Request::new(Default::default())).await,
        Code::Ok
    );

    // A broken certificate is ignored: the second one stays, and it counts.
    files.write(
        "tls.crt",
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    wait_until(WITHIN, "the broken file is counted", || async {
        counter(&server, RELOAD_ERRORS, &[]).await >= 1.0
    })
    .await;
    assert_eq!(served_serial(server.addr, &ca.pem).await, Some(vec![2]));
    assert_eq!(served_serial(http, &ca.pem).await, Some(vec![2]));
    assert_eq!(
        list(&mut open, tonic::Request::new(Default::default())).await,
        Code::Ok
    );
    server.stop().await;
}

#[tokio::test]
async fn a_tighter_policy_applies_within_10_s_and_a_broken_one_is_ignored() {
    let files = Files::new();
    files.write(
        "policy.yaml",
        "rules:\n  - identities: [anonymous]\n    allow: [\"*\"]\n",
    );
    let policy = files.path("policy.yaml");
    let server = Server::start(&["--authz-policy", &policy]).await;
    let mut client = server.client().await;
    register(&mut client, tonic::Request::new(worker()))
        .await
        .unwrap();

    files.write(
        "policy.yaml",
        "rules:\n  - identities: [anonymous]\n    allow: [ListAgents]\n",
    );
    let started = std::time::Instant::now();
    wait_until(WITHIN, "the tighter policy applies", || {
        let mut client = client.clone();
        async move {
            let refused = register(&mut client, tonic::Request::new(worker()))
                .await
                .err();
            refused.map(|s| s.code()) == Some(Code::Unauthenticated)
        }
    })
    .await;
    eprintln!("policy reloaded after {:?}", started.elapsed());
    assert_eq!(
        list(&mut client, tonic::Request::new(Default::default())).await,
        Code::Ok
    );

    for broken in [
        "rules: [",
        "rules:\n  - identities: [anonymous]\n    allow: [Everything]\n",
    ] {
        let before = counter(&server, RELOAD_ERRORS, &[]).await;
        files.write("policy.yaml", broken);
        wait_until(WITHIN, "the broken policy is counted", || async {
            counter(&server, RELOAD_ERRORS, &[]).await > before
        })
        .await;
        // The tighter policy stays.
        let refused = register(&mut client, tonic::Request::new(worker()))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(
            list(&mut client, tonic::Request::new(Default::default())).await,
            Code::Ok
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_jwt_bundle_applies_within_10_s() {
    use crate::{
        pki::{Signer, bundle},
        support::with_bearer,
    };
    let (old, new, files) = (Signer::new("k1"), Signer::new("k2"), Files::new());
    files.write("bundle.json", &bundle(&[&old]));
    let path = files.path("bundle.json");
    let server = Server::start(&["--jwt-bundle", &path]).await;
    let mut client = server.client().await;
    let caller = "spiffe://example.org/scheduler";
    let call = |signer: &Signer| with_bearer(Default::default(), &signer.token(caller));
    assert_eq!(list(&mut client, call(&old)).await, Code::Ok);
    assert_eq!(list(&mut client, call(&new)).await, Code::Unauthenticated);
    files.write("bundle.json", &bundle(&[&new]));
    wait_until(WITHIN, "the rotated key is trusted", || {
        let mut client = client.clone();
        let request = call(&new);
        async move { list(&mut client, request).await == Code::Ok }
    })
    .await;
    assert_eq!(list(&mut client, call(&old)).await, Code::Unauthenticated);
    files.write("bundle.json", "{not json");
    wait_until(WITHIN, "the broken bundle is counted", || async {
        counter(&server, RELOAD_ERRORS, &[]).await >= 1.0
    })
    .await;
    assert_eq!(list(&mut client, call(&new)).await, Code::Ok);
    server.stop().await;
}

#[tokio::test]
async fn a_new_client_ca_applies_to_new_connections_within_10_s() {
    let (ca, next, files) = (Ca::new("test ca"), Ca::new("next client ca"), Files::new());
    let leaf = ca.server(1);
    files.write("tls.crt", &leaf.cert);
    files.write("tls.key", &leaf.key);
    files.write("ca.crt", &ca.pem);
    let (cert, key, client_ca) = (
        files.path("tls.crt"),
        files.path("tls.key"),
        files.path("ca.crt"),
    );
    let flags = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &client_ca,
    ];
    let server = Server::start(&flags).await;
    let old_client = ca.client("old", None);
    let mut open = server.tls_client(&ca, Some(&old_client)).await.unwrap();
    assert_eq!(
        list(&mut open, tonic::Request::new(Default::default())).await,
        Code::Ok
    );
    let new_client = next.client("new", None);
    let accepted = |leaf| {
        let server = &server;
        let ca = &ca;
        async move {
            match server.tls_client(ca, Some(leaf)).await {
                Ok(mut client) => {
                    list(&mut client, tonic::Request::new(Default::default())).await == Code::Ok
                }
                Err(_) => false,
            }
        }
    };
    assert!(!accepted(&new_client).await);
    files.write("ca.crt", &next.pem);
    wait_until(WITHIN, "clients of the new CA are accepted", || {
        accepted(&new_client)
    })
    .await;
    assert!(
        !accepted(&old_client).await,
        "new connections use the new CA only"
    );
    // The connection opened before the change keeps working.
    assert_eq!(
        list(&mut open, tonic::Request::new(Default::default())).await,
        Code::Ok
    );
    server.stop().await;
}
