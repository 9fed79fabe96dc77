//! Connecting: plain or TLS channels, client certificates and the
//! JWT-SVID sent on every call (BEHAVIOUR.md §9).

use std::time::Duration;

use tonic::{
    Code,
    metadata::{Ascii, MetadataValue},
    transport::{Certificate, ClientTlsConfig, Endpoint, Identity},
};

use super::{ClientError, RegistryClient, Result};
use crate::domain::error_chain;

/// `Bearer <jwt>` as a sensitive header value.
fn bearer_value(endpoint: &str, jwt: Option<&str>) -> Result<Option<MetadataValue<Ascii>>> {
    let Some(jwt) = jwt.filter(|j| !j.is_empty()) else {
        return Ok(None);
    };
    let mut value: MetadataValue<Ascii> =
        format!("Bearer {jwt}")
            .parse()
            .map_err(|_| ClientError::Endpoint {
                endpoint: endpoint.to_owned(),
                reason: "the JWT-SVID is not printable ASCII".to_owned(),
            })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// How the SDK reaches a registry with TLS and identities (BEHAVIOUR.md §9).
/// The endpoint must be `https://` for TLS.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    /// PEM bundle the registry's certificate must chain to.
    pub ca_pem: Option<String>,
    /// PEM client certificate and key, for a registry that asks for them
    /// (mTLS).
    pub identity: Option<(String, String)>,
    /// Name the registry's certificate must carry, when not the endpoint's
    /// host.
    pub server_name: Option<String>,
    /// A JWT-SVID, sent as `authorization: Bearer` on every call.
    pub bearer: Option<String>,
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("ca_pem", &self.ca_pem.is_some())
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .field("bearer", &self.bearer.as_ref().map(|_| "***"))
            .finish()
    }
}

impl RegistryClient {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`) now.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), agent_registry::client::ClientError> {
    /// use std::time::Duration;
    /// use agent_registry::{client::RegistryClient, pb};
    ///
    /// let client = RegistryClient::connect("http://127.0.0.1:50051")
    ///     .await?
    ///     .with_timeout(Duration::from_secs(2));
    /// let gpus = client
    ///     .discover(pb::DiscoverRequest { capabilities: vec!["gpu".into()], ..Default::default() })
    ///     .await?;
    /// for agent in gpus {
    ///     println!("{} at {}", agent.agent_id, agent.endpoint);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`ClientError::Endpoint`] for a malformed endpoint, `UNAVAILABLE`
    /// when nothing answers there.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self> {
        Self::connect_with(endpoint, &ClientSecurity::default()).await
    }

    /// Connects with TLS (an `https://` endpoint), a client certificate
    /// and/or a JWT-SVID, as `security` says.
    ///
    /// # Errors
    /// [`ClientError::Endpoint`] for a malformed endpoint or unusable TLS
    /// material, `UNAVAILABLE` when nothing answers there (or the TLS
    /// handshake fails).
    pub async fn connect_with(
        endpoint: impl Into<String>,
        security: &ClientSecurity,
    ) -> Result<Self> {
        let endpoint = endpoint.into();
        let bearer = bearer_value(&endpoint, security.bearer.as_deref())?;
        let channel = Self::secured(Self::endpoint(endpoint.clone())?, &endpoint, security)?
            .connect()
            .await
            .map_err(|e| ClientError::Status {
                code: Code::Unavailable,
                message: format!("cannot connect: {}", error_chain(&e)),
            })?;
        Ok(Self {
            bearer,
            ..Self::from_channel(channel)
        })
    }

    fn secured(endpoint: Endpoint, name: &str, security: &ClientSecurity) -> Result<Endpoint> {
        if security.ca_pem.is_none()
            && security.identity.is_none()
            && security.server_name.is_none()
        {
            return Ok(endpoint);
        }
        // rustls needs a process-wide crypto provider and several are
        // linked in: name ring unless the application chose one already
        // (then this is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &security.ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &security.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        if let Some(server_name) = &security.server_name {
            tls = tls.domain_name(server_name.clone());
        }
        endpoint.tls_config(tls).map_err(|e| ClientError::Endpoint {
            endpoint: name.to_owned(),
            reason: error_chain(&e),
        })
    }

    /// A client that connects on first use (and whenever the connection
    /// was lost): for long-running agents that must start even while the
    /// registry is down.
    ///
    /// # Errors
    /// [`ClientError::Endpoint`] for a malformed endpoint.
    pub fn connect_lazy(endpoint: impl Into<String>) -> Result<Self> {
        Ok(Self::from_channel(
            Self::endpoint(endpoint.into())?.connect_lazy(),
        ))
    }

    fn endpoint(endpoint: String) -> Result<Endpoint> {
        Endpoint::from_shared(endpoint.clone())
            .map(|e| {
                e.connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_while_idle(true)
            })
            .map_err(|e| ClientError::Endpoint {
                endpoint,
                reason: e.to_string(),
            })
    }
}
