//! TLS on the gRPC port and the identities of client certificates (mTLS).

use tonic::Code;

use crate::{
    pki::Ca,
    support::{Files, Server, list, register, run_binary, worker},
};

pub const WORKER_ID: &str = "spiffe://example.org/ns/exec/sa/worker";

/// A server with TLS, and mTLS when `mtls`; the policy lets the SPIFFE
/// worker register and the CN-only client list.
pub async fn tls_server(ca: &Ca, files: &Files, mtls: bool) -> Server {
    let server = ca.server(1);
    files.write("tls.crt", &server.cert);
    files.write("tls.key", &server.key);
    files.write("ca.crt", &ca.pem);
    files.write(
        "policy.yaml",
        &format!(
            "rules:\n  - identities: [\"{WORKER_ID}\"]\n    allow: [Register, ListAgents]\n  \
             - identities: [cn-only-client]\n    allow: [ListAgents]\n  \
             - identities: [anonymous]\n    allow: [ListAgents]\n"
        ),
    );
    let (cert, key, client_ca, policy) = (
        files.path("tls.crt"),
        files.path("tls.key"),
        files.path("ca.crt"),
        files.path("policy.yaml"),
    );
    let mut flags = vec![
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--authz-policy",
        &policy,
    ];
    if mtls {
        flags.extend(["--tls-client-ca", client_ca.as_str()]);
    }
    Server::start(&flags).await
}

#[tokio::test]
async fn the_grpc_port_serves_tls_only() {
    let (ca, files) = (Ca::new("test ca"), Files::new());
    let server = tls_server(&ca, &files, false).await;
    let plain = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .timeout(std::time::Duration::from_secs(3))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut client =
            agent_registry::pb::service_registry_client::ServiceRegistryClient::new(channel);
        assert!(
            client
                .list_agents(agent_registry::pb::ListAgentsRequest::default())
                .await
                .is_err()
        );
    }
    let mut client = server.tls_client(&ca, None).await.unwrap();
    assert_eq!(
        list(&mut client, tonic::Request::new(Default::default())).await,
        Code::Ok
    );
    // Without mTLS nobody is identified: the anonymous rules apply.
    let refused = register(&mut client, tonic::Request::new(worker()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    // A server certificate of another CA is not trusted by the client.
    assert!(server.tls_client(&Ca::new("other"), None).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn a_client_certificate_names_its_spiffe_uri_san_else_its_cn() {
    let (ca, files) = (Ca::new("test ca"), Files::new());
    let server = tls_server(&ca, &files, true).await;

    // URI SAN wins over the CN.
    let spiffe = ca.client("cn-only-client", Some(WORKER_ID));
    let mut worker_client = server.tls_client(&ca, Some(&spiffe)).await.unwrap();
    register(&mut worker_client, tonic::Request::new(worker()))
        .await
        .unwrap();

    let cn_only = ca.client("cn-only-client", None);
    let mut cn_client = server.tls_client(&ca, Some(&cn_only)).await.unwrap();
    assert_eq!(
        list(&mut cn_client, tonic::Request::new(Default::default())).await,
        Code::Ok
    );
    let refused = register(&mut cn_client, tonic::Request::new(worker()))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "identified, not allowed"
    );

    let stranger = ca.client("someone-else", None);
    let mut stranger = server.tls_client(&ca, Some(&stranger)).await.unwrap();
    assert_eq!(
        list(&mut stranger, tonic::Request::new(Default::default())).await,
        Code::PermissionDenied,
        "an identity no rule names gets nothing, not the anonymous rules"
    );
    server.stop().await;
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_of_the_ca() {
    let (ca, files) = (Ca::new("test ca"), Files::new());
    let server = tls_server(&ca, &files, true).await;
    let foreign = Ca::new("foreign ca").client("intruder", Some(WORKER_ID));
    for identity in [Some(&foreign), None] {
        let refused = match server.tls_client(&ca, identity).await {
            Err(_) => true,
            Ok(mut client) => {
                list(&mut client, tonic::Request::new(Default::default())).await != Code::Ok
            }
        };
        assert!(refused, "a client without a certificate of the CA got in");
    }
    // The server is fine afterwards.
    let good = ca.client("cn-only-client", None);
    let mut client = server.tls_client(&ca, Some(&good)).await.unwrap();
    assert_eq!(
        list(&mut client, tonic::Request::new(Default::default())).await,
        Code::Ok
    );
    server.stop().await;
}

#[test]
fn unusable_tls_files_stop_the_start_with_exit_2() {
    let files = Files::new();
    let garbage = files.write("garbage.pem", "not a certificate");
    let garbage = garbage.to_str().unwrap();
    let missing = files.path("missing.pem");
    for (args, setting) in [
        (
            vec!["--tls-cert", garbage, "--tls-key", garbage],
            "--tls-cert",
        ),
        (
            vec!["--tls-cert", &missing, "--tls-key", &missing],
            "--tls-cert",
        ),
        (vec!["--tls-cert", garbage], "--tls-key"),
        (vec!["--tls-client-ca", garbage], "--tls-client-ca"),
    ] {
        let (code, first) = run_binary(&args);
        assert_eq!(code, Some(2), "{args:?}: {first}");
        assert!(first.starts_with(setting), "{args:?}: {first}");
    }
}
