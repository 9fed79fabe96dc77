//! TLS on the gRPC and HTTP ports (BEHAVIOUR.md §9, §12): a rustls server configuration
//! built from PEM files, asking for client certificates that chain to a CA
//! bundle when one is configured (mTLS), and the identity a verified client
//! certificate gives: its `spiffe://` URI SAN, else its subject CN.
//!
//! Depends on: rustls, x509-parser, domain (Identity).

use std::sync::Arc;

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use x509_parser::{extensions::GeneralName, prelude::FromDer};

use crate::{auth::jwt::MAX_IDENTITY_BYTES, domain::Identity};

/// The PEM texts a TLS configuration is built from.
pub struct TlsMaterial<'a> {
    /// Certificate chain, leaf first.
    pub cert: &'a [u8],
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: &'a [u8],
    /// CA bundle of client certificates (mTLS), if required.
    pub client_ca: Option<&'a [u8]>,
}

/// Why a TLS configuration could not be built; names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file holds no usable PEM certificate.
    #[error("--tls-cert (TLS_CERT_FILE): {0}")]
    Cert(String),
    /// The key file holds no usable PEM key.
    #[error("--tls-key (TLS_KEY_FILE): {0}")]
    Key(String),
    /// The CA file holds no usable PEM certificate.
    #[error("--tls-client-ca (TLS_CLIENT_CA_FILE): {0}")]
    ClientCa(String),
}

/// Builds the server configuration (TLS 1.2 and 1.3; ALPN `h2`, the gRPC
/// port's: the HTTP port offers `http/1.1` too, see
/// [`super::listener::Protocol`]).
///
/// # Errors
/// [`TlsError`] naming the file that does not parse, or the key that does
/// not match the certificate.
pub fn server_config(material: &TlsMaterial<'_>) -> Result<ServerConfig, TlsError> {
    let certs = certificates(material.cert).map_err(TlsError::Cert)?;
    let key = PrivateKeyDer::from_pem_slice(material.key)
        .map_err(|e| TlsError::Key(format!("no PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Cert(e.to_string()))?;
    let builder = match material.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca).map_err(TlsError::ClientCa)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Key(format!("does not match the certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Every certificate of a PEM text; at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(certs)
}

/// The identity of a verified client certificate: its first `spiffe://`
/// URI SAN, else its subject CN. `None` when it has neither (or they are
/// not usable as an identity).
pub fn certificate_identity(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let from_san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(uri.to_string()),
                _ => None,
            })
        });
    let name = from_san.or_else(|| {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    })?;
    let usable =
        !name.is_empty() && name.len() <= MAX_IDENTITY_BYTES && !name.chars().any(char::is_control);
    usable.then(|| Identity::new(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_no_identity() {
        assert!(certificate_identity(b"").is_none());
        assert!(certificate_identity(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_none());
    }

    #[test]
    fn unusable_files_name_the_setting() {
        let error = server_config(&TlsMaterial {
            cert: b"nope",
            key: b"nope",
            client_ca: None,
        })
        .unwrap_err();
        assert!(error.to_string().starts_with("--tls-cert"));
    }
}
