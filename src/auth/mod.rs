//! Identity, TLS, authorization and limits (BEHAVIOUR.md §9).
//!
//! - [`listener`]: the accept loop: TLS, handshake timeout, `--max-connections`,
//!   the peer's certificate identity;
//! - [`tls`]: the rustls configuration and certificate identities;
//! - [`jwt`]: JWT-SVID verification against a JWKS bundle;
//! - [`policy`]: who may call what;
//! - [`limits`]: rate limits and stream slots;
//! - [`layer`]: the tower layer that applies all of it to every call;
//! - [`reload`]: files swapped in when they change on disk.
//!
//! [`Security`] is what the layer consults, built once at start-up by
//! [`Security::load`] (a file that does not load stops the start, exit 2).
//!
//! Depends on: config, domain, metrics, service::status.

pub mod jwt;
pub mod layer;
pub mod limits;
pub mod listener;
pub mod policy;
pub mod reload;
pub mod tls;

use std::sync::Arc;

use crate::{
    config::SecuritySettings,
    domain::{Caller, rpc::Rpc},
    metrics::Metrics,
    service::status,
};

use self::{
    jwt::{JwtError, JwtVerifier},
    limits::{RateLimiter, StreamSlots},
    listener::{PeerCertificate, PeerInfo},
    policy::Policy,
    reload::{Reloadable, Source},
    tls::TlsMaterial,
};

/// Why a call was refused for its credentials (the `reason` label of
/// `service_registry_auth_failures_total`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential, and the policy wants one.
    Missing,
    /// A credential that does not verify.
    Invalid,
    /// A JWT-SVID past its `exp`.
    Expired,
    /// An identity the policy does not allow this call.
    Denied,
}

impl AuthFailure {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::Denied => "denied",
        }
    }
}

/// A start-up failure of a credential or policy file; the binary exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct LoadError {
    /// The flag and environment variable at fault.
    pub setting: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// Everything the guard layer and the listener consult.
pub struct Security {
    /// TLS configuration (reloaded); `None` = plaintext.
    pub tls: Option<Arc<Reloadable<rustls::ServerConfig>>>,
    /// JWT-SVID verifier (reloaded); `None` = bearer tokens are refused.
    pub jwt: Option<Arc<Reloadable<JwtVerifier>>>,
    /// Authorization policy (reloaded); `None` = everything is allowed.
    pub policy: Option<Arc<Reloadable<Policy>>>,
    /// Per-caller rate limit, if any.
    pub rate: Option<RateLimiter>,
    /// The replica's stream slots.
    pub streams: StreamSlots,
    /// Where refusals are counted.
    pub metrics: Arc<Metrics>,
}

const TLS_SETTING: &str = "--tls-cert (TLS_CERT_FILE)";
const JWT_SETTING: &str = "--jwt-bundle (SPIFFE_JWT_BUNDLE_FILE)";
const POLICY_SETTING: &str = "--authz-policy (AUTHZ_POLICY_FILE)";

impl Security {
    /// Loads every configured file and returns the sources to watch for
    /// changes ([`reload::watch`]).
    ///
    /// # Errors
    /// [`LoadError`] naming the setting whose file cannot be read or used.
    pub fn load(
        settings: &SecuritySettings,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, Vec<Source>), LoadError> {
        let mut sources = Vec::new();
        let tls = match &settings.files.tls {
            None => None,
            Some(files) => {
                let mut paths = vec![files.cert.clone(), files.key.clone()];
                paths.extend(settings.files.client_ca.clone());
                let contents = read(TLS_SETTING, &paths)?;
                let config = tls_config(&contents).map_err(|reason| LoadError {
                    setting: TLS_SETTING,
                    reason,
                })?;
                let tls = Arc::new(Reloadable::new(config));
                let target = tls.clone();
                sources.push(Source {
                    name: "tls",
                    paths,
                    apply: Box::new(move |contents| {
                        target.set(tls_config(contents)?);
                        Ok(())
                    }),
                    seen: contents,
                });
                Some(tls)
            }
        };
        let jwt = match &settings.files.jwt_bundle {
            None => None,
            Some(path) => {
                let paths = vec![path.clone()];
                let contents = read(JWT_SETTING, &paths)?;
                let audience = settings.jwt_audience.clone();
                let parse = move |contents: &[Vec<u8>]| {
                    JwtVerifier::parse(first(contents), &audience).map_err(|e| e.to_string())
                };
                let verifier = parse(&contents).map_err(|reason| LoadError {
                    setting: JWT_SETTING,
                    reason,
                })?;
                let jwt = Arc::new(Reloadable::new(verifier));
                let target = jwt.clone();
                sources.push(Source {
                    name: "jwt bundle",
                    paths,
                    apply: Box::new(move |contents| {
                        target.set(parse(contents)?);
                        Ok(())
                    }),
                    seen: contents,
                });
                Some(jwt)
            }
        };
        let policy = match &settings.files.policy {
            None => None,
            Some(path) => {
                let paths = vec![path.clone()];
                let contents = read(POLICY_SETTING, &paths)?;
                let parsed = parse_policy(&contents).map_err(|reason| LoadError {
                    setting: POLICY_SETTING,
                    reason,
                })?;
                let policy = Arc::new(Reloadable::new(parsed));
                let target = policy.clone();
                sources.push(Source {
                    name: "policy",
                    paths,
                    apply: Box::new(move |contents| {
                        target.set(parse_policy(contents)?);
                        Ok(())
                    }),
                    seen: contents,
                });
                Some(policy)
            }
        };
        let limits = &settings.limits;
        let security = Self {
            tls,
            jwt,
            policy,
            rate: limits.rate_limit.map(RateLimiter::new),
            streams: StreamSlots::new(limits.max_streams),
            metrics,
        };
        Ok((security, sources))
    }

    /// Who is calling: the `sub` of a valid JWT-SVID in `authorization:
    /// Bearer`, else the identity of a verified client certificate, else
    /// anonymous.
    ///
    /// # Errors
    /// A credential that is present but does not verify.
    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&PeerInfo>,
    ) -> Result<Caller, AuthFailure> {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(bearer_token)
                .ok_or(AuthFailure::Invalid)?;
            let verifier = self.jwt.as_ref().ok_or(AuthFailure::Invalid)?.get();
            return match verifier.verify(token) {
                Ok(identity) => Ok(Caller::Identified(identity)),
                Err(JwtError::Expired) => Err(AuthFailure::Expired),
                Err(JwtError::Invalid(why)) => {
                    tracing::debug!(reason = why, "JWT-SVID refused");
                    Err(AuthFailure::Invalid)
                }
            };
        }
        match peer.map(|p| &p.certificate) {
            Some(PeerCertificate::Named(identity)) => Ok(Caller::Identified(identity.clone())),
            Some(PeerCertificate::Unnamed) => Err(AuthFailure::Invalid),
            Some(PeerCertificate::None) | None => Ok(Caller::Anonymous),
        }
    }

    /// Whether the policy lets `caller` call `rpc` (no policy: yes).
    pub fn allows(&self, caller: &Caller, rpc: Rpc) -> bool {
        self.policy
            .as_ref()
            .is_none_or(|policy| policy.get().allows(caller, rpc))
    }

    /// Counts a refusal and says it to the client.
    pub fn refuse(&self, failure: AuthFailure) -> tonic::Status {
        self.metrics
            .auth_failures
            .with_label_values(&[failure.label()])
            .inc();
        tracing::debug!(reason = failure.label(), "call refused");
        status::auth_refused(failure)
    }

    /// Counts a call refused by a limit.
    pub fn count_limited(&self, limit: &str) {
        self.metrics.limited.with_label_values(&[limit]).inc();
    }
}

/// The token of an `authorization` value of the Bearer scheme (any case).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn read(setting: &'static str, paths: &[std::path::PathBuf]) -> Result<Vec<Vec<u8>>, LoadError> {
    reload::read_all(paths).map_err(|(path, error)| LoadError {
        setting,
        reason: format!("cannot read {}: {error}", path.display()),
    })
}

fn first(contents: &[Vec<u8>]) -> &[u8] {
    contents.first().map_or(&[], Vec::as_slice)
}

/// The TLS configuration from [certificate, key, optional CA] contents.
fn tls_config(contents: &[Vec<u8>]) -> Result<rustls::ServerConfig, String> {
    let material = TlsMaterial {
        cert: first(contents),
        key: contents.get(1).map_or(&[], Vec::as_slice),
        client_ca: contents.get(2).map(Vec::as_slice),
    };
    tls::server_config(&material).map_err(|e| e.to_string())
}

fn parse_policy(contents: &[Vec<u8>]) -> Result<Policy, String> {
    let text = std::str::from_utf8(first(contents)).map_err(|_| "is not UTF-8".to_owned())?;
    Policy::parse(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_recognised_in_any_case() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
