//! What the §9 tests share: a server started with credential files, TLS
//! clients, bearer tokens, and the served certificate's serial.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use agent_registry::{
    config::Settings,
    pb::{self, service_registry_client::ServiceRegistryClient},
    server::{self, Running},
};
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{
    common::test_settings,
    pki::{Ca, Leaf},
};

/// The registry's service name in metrics of refusals.
pub type Client = ServiceRegistryClient<Channel>;

/// A directory of credential files, written the way Kubernetes updates a
/// mounted secret (a new file renamed over the old one).
pub struct Files {
    dir: TempDir,
}

impl Files {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `name` atomically and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let staged = self.dir.path().join(format!(".{name}.new"));
        std::fs::write(&staged, contents).unwrap();
        std::fs::rename(&staged, &path).unwrap();
        path
    }

    /// The path of `name` as a flag value.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// A server of the test's own.
pub struct Server {
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    /// The HTTP/JSON API (TLS like the gRPC port when configured).
    pub http: Option<SocketAddr>,
    running: Running,
}

impl Server {
    /// Starts on the memory store with `flags`.
    pub async fn start(flags: &[&str]) -> Self {
        Self::start_with(flags, |_| {}).await
    }

    /// Starts with `flags`, then `tweak` applied to the settings.
    pub async fn start_with(flags: &[&str], tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::start_on(None, flags, tweak).await
    }

    /// Starts on the Redis at `redis_url` (or memory) with `flags`.
    pub async fn start_on(
        redis_url: Option<&str>,
        flags: &[&str],
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        install_crypto();
        let mut settings = test_settings(redis_url, flags);
        tweak(&mut settings);
        let running = server::start(settings).await.unwrap();
        Self {
            addr: running.grpc_addr(),
            metrics: running.metrics_addr(),
            http: running.http_addr(),
            running,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A plaintext client.
    pub async fn client(&self) -> Client {
        ServiceRegistryClient::connect(self.endpoint())
            .await
            .unwrap()
    }

    /// A TLS client trusting `ca`, presenting `identity` if given.
    pub async fn tls_client(&self, ca: &Ca, identity: Option<&Leaf>) -> Result<Client, String> {
        tls_channel(self.addr, &ca.pem, identity)
            .await
            .map(ServiceRegistryClient::new)
    }

    pub async fn stop(self) {
        self.running.shutdown().await;
    }
}

/// rustls' provider for the test process (the clients' TLS).
pub fn install_crypto() {
    // Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS channel to `addr` (as `localhost`) trusting `ca_pem`.
pub async fn tls_channel(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&Leaf>,
) -> Result<Channel, String> {
    install_crypto();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// A request carrying `authorization: Bearer <jwt>`.
pub fn with_bearer<T>(message: T, jwt: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {jwt}").parse().unwrap());
    request
}

/// A Register request of a WORKER with one capability.
pub fn worker() -> pb::RegisterRequest {
    crate::common::register_request(&["compute"])
}

/// Registers a worker as whoever `request` says; the response or status.
pub async fn register(
    client: &mut Client,
    request: tonic::Request<pb::RegisterRequest>,
) -> Result<pb::RegisterResponse, tonic::Status> {
    client.register(request).await.map(|r| r.into_inner())
}

/// A ListAgents call: whether it was allowed (its status code otherwise).
pub async fn list(
    client: &mut Client,
    request: tonic::Request<pb::ListAgentsRequest>,
) -> tonic::Code {
    match client.list_agents(request).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// A TLS client configuration trusting `ca_pem`, presenting `identity` if
/// given, offering `alpn`.
pub fn client_config(
    ca_pem: &str,
    identity: Option<&Leaf>,
    alpn: &[&[u8]],
) -> Option<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.ok()?).ok()?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).ok()?;
            builder.with_client_auth_cert(chain, key).ok()?
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Some(config)
}

/// A TLS connection to `addr` as `localhost`, with `config`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| e.to_string())
}

/// The serial of the certificate a TLS server at `addr` serves now (a new
/// connection, trusting `ca_pem`).
pub async fn served_serial(addr: SocketAddr, ca_pem: &str) -> Option<Vec<u8>> {
    let config = client_config(ca_pem, None, &[b"h2"])?;
    let tls = tls_connect(addr, config).await.ok()?;
    let leaf = tls.get_ref().1.peer_certificates()?.first()?.clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).ok()?;
    Some(cert.raw_serial().to_vec())
}

/// A counter of the server's `/metrics` (0 when not created yet).
pub async fn counter(server: &Server, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = crate::ops_support::scrape(server.metrics).await;
    crate::ops_support::counter(&samples, name, labels)
}

/// The real binary, with `args`: its exit code and the first line of stderr.
pub fn run_binary(args: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agent-registry"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--store",
            "memory",
        ])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (
        output.status.code(),
        stderr.lines().next().unwrap_or("").to_owned(),
    )
}
