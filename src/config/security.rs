//! The §9 settings: credential and policy files, and limits.

use std::{path::PathBuf, time::Duration};

use super::{Config, ConfigError};

/// The files that carry credentials and policy (each reloaded when it
/// changes on disk).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityFiles {
    /// Certificate chain and key: TLS on the gRPC port.
    pub tls: Option<TlsFiles>,
    /// CA bundle client certificates must chain to (needs `tls`).
    pub client_ca: Option<PathBuf>,
    /// JWKS of the JWT-SVID signers.
    pub jwt_bundle: Option<PathBuf>,
    /// The authorization policy.
    pub policy: Option<PathBuf>,
}

/// A certificate chain and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The limits of BEHAVIOUR.md §9, in the units the server uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted.
    pub max_message_bytes: usize,
    /// Open streams per replica.
    pub max_streams: usize,
    /// Connection lifetime before a graceful GOAWAY (`None` = unbounded).
    pub max_connection_age: Option<Duration>,
    /// Calls per second per caller (`None` = unlimited).
    pub rate_limit: Option<u32>,
    /// Open client connections.
    pub max_connections: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Largest List/Discover answer.
    pub max_response_bytes: usize,
    /// Registered agents.
    pub max_agents: usize,
    /// Time a connection has to complete its TLS and HTTP/2 handshakes
    /// (10 s; not a flag: tests shorten it).
    pub handshake_timeout: Duration,
}

/// Identity, TLS, policy and limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecuritySettings {
    /// Credential and policy files.
    pub files: SecurityFiles,
    /// Audience a JWT-SVID must carry.
    pub jwt_audience: String,
    /// Limits.
    pub limits: Limits,
}

/// Time a new connection has to complete its handshakes (BEHAVIOUR.md §9).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Config {
    /// The §9 settings, checked.
    pub(super) fn security(&self) -> Result<SecuritySettings, ConfigError> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "--tls-key (TLS_KEY_FILE)",
                    "required with --tls-cert (TLS_CERT_FILE)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "--tls-cert (TLS_CERT_FILE)",
                    "required with --tls-key (TLS_KEY_FILE)",
                ));
            }
        };
        if self.tls_client_ca.is_some() && tls.is_none() {
            return Err(ConfigError::new(
                "--tls-client-ca (TLS_CLIENT_CA_FILE)",
                "needs --tls-cert and --tls-key: client certificates travel over TLS",
            ));
        }
        if self.jwt_audience.is_empty() {
            return Err(ConfigError::new(
                "--jwt-audience (SPIFFE_JWT_AUDIENCE)",
                "must not be empty",
            ));
        }
        let at_least_one = |value: usize, setting: &'static str| {
            if value == 0 {
                Err(ConfigError::new(setting, "must be at least 1"))
            } else {
                Ok(value)
            }
        };
        let limits = Limits {
            max_message_bytes: at_least_one(
                self.max_message_bytes,
                "--max-message-bytes (MAX_MESSAGE_BYTES)",
            )?,
            max_streams: at_least_one(self.max_streams, "--max-streams (MAX_STREAMS)")?,
            max_connection_age: (self.max_connection_age > 0)
                .then(|| Duration::from_secs(self.max_connection_age)),
            rate_limit: (self.rate_limit > 0).then_some(self.rate_limit),
            max_connections: at_least_one(
                self.max_connections,
                "--max-connections (MAX_CONNECTIONS)",
            )?,
            max_concurrent_streams: u32::try_from(at_least_one(
                self.max_concurrent_streams as usize,
                "--max-concurrent-streams (MAX_CONCURRENT_STREAMS)",
            )?)
            .unwrap_or(u32::MAX),
            max_response_bytes: at_least_one(
                self.max_response_bytes,
                "--max-response-bytes (MAX_RESPONSE_BYTES)",
            )?,
            max_agents: at_least_one(self.max_agents, "--max-agents (MAX_AGENTS)")?,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        };
        Ok(SecuritySettings {
            files: SecurityFiles {
                tls,
                client_ca: self.tls_client_ca.clone(),
                jwt_bundle: self.jwt_bundle.clone(),
                policy: self.authz_policy.clone(),
            },
            jwt_audience: self.jwt_audience.clone(),
            limits,
        })
    }
}
