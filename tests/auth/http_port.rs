//! §9 on the HTTP/JSON port (§12): HTTPS with the gRPC port's certificate
//! (HTTP/1.1 and HTTP/2 by ALPN), nothing in plaintext, client-certificate
//! identities under the same policy as over gRPC, and anonymous callers
//! rate-limited per peer address.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tonic::Code;

use crate::{
    pki::{Ca, Leaf},
    support::{Files, Server, client_config, list, register, served_serial, tls_connect, worker},
    tls::{WORKER_ID, tls_server},
};

const HTTP1: &[u8] = b"http/1.1";
const H2: &[u8] = b"h2";
const REGISTER: &str = r#"{"agentType":"WORKER","capabilities":["compute"]}"#;

/// An HTTPS answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// The protocol ALPN chose.
    alpn: Option<Vec<u8>>,
    body: Value,
}

/// `method path` over a new HTTPS connection to `addr` (as `localhost`)
/// trusting `ca`, presenting `identity` if given and offering `alpn`;
/// `body` as JSON. `Err` when the connection or the exchange fails.
async fn https(
    addr: SocketAddr,
    ca: &Ca,
    identity: Option<&Leaf>,
    alpn: &[u8],
    (method, path, body): (&str, &str, Option<&str>),
) -> Result<Reply, String> {
    let config = client_config(&ca.pem, identity, &[alpn]).ok_or("bad client credentials")?;
    let tls = tls_connect(addr, config).await?;
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let h2 = negotiated.as_deref() == Some(H2);
    let uri = if h2 {
        format!("https://localhost:{}{path}", addr.port())
    } else {
        path.to_owned()
    };
    let mut request = http::Request::builder().method(method).uri(uri);
    if !h2 {
        request = request.header("host", format!("localhost:{}", addr.port()));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = Full::new(Bytes::from(body.unwrap_or("").to_owned()));
    let request = request.body(body).map_err(|e| e.to_string())?;
    let io = TokioIo::new(tls);
    let exchange = async {
        let response = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(request).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(request).await
        }
        .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            alpn: negotiated,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
}

fn get(path: &str) -> (&str, &str, Option<&str>) {
    ("GET", path, None)
}

#[tokio::test]
async fn the_http_port_serves_https_only_with_the_grpc_certificate() {
    let (ca, files) = (Ca::new("test ca"), Files::new());
    let server = tls_server(&ca, &files, false).await;
    let addr = server.http.expect("the HTTP API is on with TLS");
    for alpn in [HTTP1, H2] {
        let reply = https(addr, &ca, None, alpn, get("/v1/agents"))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.alpn.as_deref(), Some(alpn));
        assert!(reply.body["agents"].is_array(), "{reply:?}");
    }
    // The same certificate as the gRPC port.
    assert_eq!(served_serial(addr, &ca.pem).await, Some(vec![1]));
    assert_eq!(served_serial(server.addr, &ca.pem).await, Some(vec![1]));
    // Without mTLS nobody is identified: the anonymous rules apply.
    let refused = https(
        addr,
        &ca,
        None,
        HTTP1,
        ("POST", "/v1/agents", Some(REGISTER)),
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.body["code"], "UNAUTHENTICATED");
    // Plaintext gets nothing.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("http://{addr}/v1/agents"))
        .send()
        .await;
    assert!(plain.is_err(), "plaintext answered: {plain:?}");
    // A server certificate of another CA is not trusted by the client.
    let other = Ca::new("other");
    assert!(
        https(addr, &other, None, HTTP1, get("/v1/agents"))
            .await
            .is_err()
    );
    // The port is fine afterwards.
    let reply = https(addr, &ca, None, H2, get("/v1/capabilities"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    server.stop().await;
}

#[tokio::test]
async fn client_certificates_name_the_http_caller_as_on_grpc() {
    let (ca, files) = (Ca::new("test ca"), Files::new());
    let server = tls_server(&ca, &files, true).await;
    let addr = server.http.unwrap();
    let register_http = ("POST", "/v1/agents", Some(REGISTER));

    // The URI SAN wins over the CN; the policy lets it register.
    let spiffe = ca.client("cn-only-client", Some(WORKER_ID));
    let registered = https(addr, &ca, Some(&spiffe), HTTP1, register_http)
        .await
        .unwrap();
    assert_eq!(registered.status, 200, "{registered:?}");
    let mut grpc = server.tls_client(&ca, Some(&spiffe)).await.unwrap();
    register(&mut grpc, tonic::Request::new(worker()))
        .await
        .unwrap();

    // The CN names a caller allowed to list, not to register: 403 like
    // PERMISSION_DENIED over gRPC.
    let cn_only = ca.client("cn-only-client", None);
    for alpn in [HTTP1, H2] {
        let listed = https(addr, &ca, Some(&cn_only), alpn, get("/v1/agents"))
            .await
            .unwrap();
        assert_eq!(listed.status, 200, "{listed:?}");
        assert_eq!(listed.body["agents"].as_array().unwrap().len(), 2);
        let refused = https(addr, &ca, Some(&cn_only), alpn, register_http)
            .await
            .unwrap();
        assert_eq!(refused.status, 403, "{refused:?}");
        assert_eq!(refused.body["code"], "PERMISSION_DENIED");
    }
    let mut grpc = server.tls_client(&ca, Some(&cn_only)).await.unwrap();
    let refused = register(&mut grpc, tonic::Request::new(worker()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // An identity no rule names gets nothing, not the anonymous rules.
    let stranger = ca.client("someone-else", None);
    let refused = https(addr, &ca, Some(&stranger), HTTP1, get("/v1/agents"))
        .await
        .unwrap();
    assert_eq!(refused.status, 403, "{refused:?}");

    // Without a certificate of the CA, no answer at all.
    let foreign = Ca::new("foreign ca").client("intruder", Some(WORKER_ID));
    for identity in [Some(&foreign), None] {
        let attempt = https(addr, &ca, identity, HTTP1, get("/v1/agents")).await;
        assert!(
            attempt.is_err(),
            "got in without a certificate: {attempt:?}"
        );
    }
    let listed = https(addr, &ca, Some(&cn_only), HTTP1, get("/v1/agents"))
        .await
        .unwrap();
    assert_eq!(listed.status, 200, "the port is fine afterwards");
    let mut grpc = server.tls_client(&ca, Some(&cn_only)).await.unwrap();
    assert_eq!(
        list(&mut grpc, tonic::Request::new(Default::default())).await,
        Code::Ok
    );
    server.stop().await;
}

/// A plain HTTP client whose connections come from `ip`.
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn anonymous_http_callers_are_rate_limited_per_peer_address() {
    let server = Server::start(&["--rate-limit", "2"]).await;
    let url = format!("http://{}/v1/agents", server.http.unwrap());
    let greedy = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let mut statuses = Vec::new();
    // A burst of 2 s at 2/s: the fifth call at the latest is refused.
    for _ in 0..20 {
        let response = greedy.get(&url).send().await.unwrap();
        let status = response.status().as_u16();
        statuses.push(status);
        if status == 429 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "RESOURCE_EXHAUSTED", "{body}");
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "never limited: {statuses:?}");
    assert!(statuses.len() <= 6, "{statuses:?}");
    // Another peer has its own budget.
    let other = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let response = other.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}
