//! The SDK and `registryctl` reach a TLS/mTLS registry and send a JWT-SVID.

use agent_registry::{
    client::{ClientSecurity, RegistryClient},
    pb,
};
use tonic::Code;

use crate::{
    pki::{Ca, Signer, bundle},
    support::{Files, Server, worker},
};

const CLI: &str = "spiffe://example.org/ns/ops/sa/cli";
const SCHEDULER: &str = "spiffe://example.org/ns/ops/sa/scheduler";

struct Setup {
    ca: Ca,
    signer: Signer,
    files: Files,
    server: Server,
}

async fn setup() -> Setup {
    let (ca, signer, files) = (Ca::new("test ca"), Signer::new("k1"), Files::new());
    let leaf = ca.server(1);
    files.write("tls.crt", &leaf.cert);
    files.write("tls.key", &leaf.key);
    files.write("ca.crt", &ca.pem);
    files.write("bundle.json", &bundle(&[&signer]));
    files.write(
        "policy.yaml",
        &format!("rules:\n  - identities: [\"{CLI}\", \"{SCHEDULER}\"]\n    allow: [\"*\"]\n"),
    );
    let paths: Vec<String> = ["tls.crt", "tls.key", "ca.crt", "bundle.json", "policy.yaml"]
        .iter()
        .map(|n| files.path(n))
        .collect();
    let server = Server::start(&[
        "--tls-cert",
        &paths[0],
        "--tls-key",
        &paths[1],
        "--tls-client-ca",
        &paths[2],
        "--jwt-bundle",
        &paths[3],
        "--authz-policy",
        &paths[4],
    ])
    .await;
    Setup {
        ca,
        signer,
        files,
        server,
    }
}

#[tokio::test]
async fn the_sdk_calls_an_mtls_registry_as_its_certificate_or_its_jwt() {
    let s = setup().await;
    let endpoint = format!("https://127.0.0.1:{}", s.server.addr.port());
    let cli = s.ca.client("cli", Some(CLI));
    let by_certificate = ClientSecurity {
        ca_pem: Some(s.ca.pem.clone()),
        identity: Some((cli.cert.clone(), cli.key.clone())),
        server_name: Some("localhost".into()),
        bearer: None,
    };
    let client = RegistryClient::connect_with(endpoint.clone(), &by_certificate)
        .await
        .unwrap();
    client
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap();
    // A JWT-SVID over the same mTLS connection: its identity is the JWT's.
    let other = s.ca.client("not-in-the-policy", None);
    let by_jwt = ClientSecurity {
        identity: Some((other.cert.clone(), other.key.clone())),
        bearer: Some(s.signer.token(SCHEDULER)),
        ..by_certificate.clone()
    };
    let client = RegistryClient::connect_with(endpoint.clone(), &by_jwt)
        .await
        .unwrap();
    let registered = client.register(worker()).await.unwrap();
    assert!(!registered.agent_id.is_empty());
    assert!(!format!("{by_jwt:?}").contains(&s.signer.token(SCHEDULER)[..20]));
    // The certificate alone is not allowed.
    let as_other = ClientSecurity {
        bearer: None,
        ..by_jwt
    };
    let client = RegistryClient::connect_with(endpoint, &as_other)
        .await
        .unwrap();
    let refused = client
        .list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    s.server.stop().await;
}

#[tokio::test]
async fn registryctl_calls_an_mtls_registry() {
    let s = setup().await;
    let cli = s.ca.client("cli", Some(CLI));
    s.files.write("cli.crt", &cli.cert);
    s.files.write("cli.key", &cli.key);
    let endpoint = format!("127.0.0.1:{}", s.server.addr.port());
    let (ca, cert, key) = (
        s.files.path("ca.crt"),
        s.files.path("cli.crt"),
        s.files.path("cli.key"),
    );
    let run = |extra: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_registryctl"));
        command
            .args([
                "--endpoint",
                &endpoint,
                "--tls-ca",
                &ca,
                "--tls-server-name",
                "localhost",
            ])
            .args(extra)
            .args(["list", "-o", "json"]);
        command.output()
    };
    let output = run(&["--tls-cert", &cert, "--tls-key", &key])
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let jwt = s.signer.token(SCHEDULER);
    let other = s.ca.client("not-in-the-policy", None);
    s.files.write("other.crt", &other.cert);
    s.files.write("other.key", &other.key);
    let (ocert, okey) = (s.files.path("other.crt"), s.files.path("other.key"));
    let output = run(&[
        "--tls-cert",
        &ocert,
        "--tls-key",
        &okey,
        "--bearer-token",
        &jwt,
    ])
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = run(&["--tls-cert", &ocert, "--tls-key", &okey])
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("PERMISSION_DENIED"));
    s.server.stop().await;
}
