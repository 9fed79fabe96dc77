//! JWT-SVID verification (BEHAVIOUR.md §9): a JWT in `authorization: Bearer`
//! signed by a key of the configured JWKS bundle (a SPIFFE JWT bundle) with
//! ES256, ES384, RS256 or PS256, `exp` in the future and `aud` containing
//! the registry's audience, gives the identity `sub`.
//!
//! The cryptography is `jsonwebtoken`'s. What lives here: which keys of a
//! bundle are usable and for which algorithms (never HMAC, so a public key
//! can never be used as a shared secret), and why a token was refused. A
//! token is never logged or echoed.
//!
//! Depends on: domain (Identity).

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use serde::Deserialize;

use crate::domain::Identity;

/// Longest token looked at; real JWT-SVIDs are well under 2 KiB.
pub const MAX_JWT_BYTES: usize = 8 * 1024;

/// Longest bundle file accepted.
const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// Longest identity (`sub`) accepted.
pub const MAX_IDENTITY_BYTES: usize = 2048;

/// The verifying keys of one bundle and the audience tokens must carry.
pub struct JwtVerifier {
    keys: Vec<BundleKey>,
    audience: String,
}

/// One usable key of the bundle.
struct BundleKey {
    kid: String,
    /// The algorithms this key may verify (by its type and curve).
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// Why a presented token was refused (the `reason` label of
/// `service_registry_auth_failures_total`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Signed correctly but past its `exp`.
    #[error("JWT-SVID expired")]
    Expired,
    /// Anything else: malformed, unknown key, bad signature, wrong audience,
    /// algorithm not allowed, no `sub`.
    #[error("JWT-SVID invalid: {0}")]
    Invalid(&'static str),
}

/// Why a bundle file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Not a JWKS.
    #[error("not a JWKS: {0}")]
    Syntax(String),
    /// No key usable for JWT-SVIDs (EC P-256/P-384 or RSA, with a `kid`).
    #[error("holds no usable JWT-SVID key (EC P-256/P-384 or RSA with a kid)")]
    NoKeys,
    /// Larger than any sensible bundle.
    #[error("is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge,
}

#[derive(Deserialize)]
struct BundleFile {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl JwtVerifier {
    /// Parses a JWKS bundle. Keys that are not for JWT-SVIDs (`use` other
    /// than `jwt-svid` or `sig`), not of a supported type, or without a
    /// `kid` are skipped.
    ///
    /// # Errors
    /// [`BundleError`] when the file is not a JWKS or holds no usable key.
    pub fn parse(text: &[u8], audience: &str) -> Result<Self, BundleError> {
        if text.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge);
        }
        let file: BundleFile =
            serde_json::from_slice(text).map_err(|e| BundleError::Syntax(e.to_string()))?;
        let keys: Vec<BundleKey> = file.keys.into_iter().filter_map(usable_key).collect();
        if keys.is_empty() {
            return Err(BundleError::NoKeys);
        }
        Ok(Self {
            keys,
            audience: audience.to_owned(),
        })
    }

    /// Verifies a token and returns its identity.
    ///
    /// # Errors
    /// [`JwtError::Expired`] for a well-signed token past its `exp`,
    /// [`JwtError::Invalid`] for everything else.
    pub fn verify(&self, token: &str) -> Result<Identity, JwtError> {
        if token.len() > MAX_JWT_BYTES {
            return Err(JwtError::Invalid("too long"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| JwtError::Invalid("malformed"))?;
        let kid = header.kid.ok_or(JwtError::Invalid("no kid"))?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(JwtError::Invalid("unknown key"))?;
        if !key.algorithms.contains(&header.alg) {
            return Err(JwtError::Invalid("algorithm not allowed for this key"));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = key.algorithms.clone();
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => JwtError::Expired,
                    ErrorKind::InvalidAudience => JwtError::Invalid("wrong audience"),
                    ErrorKind::InvalidSignature => JwtError::Invalid("bad signature"),
                    ErrorKind::MissingRequiredClaim(_) => JwtError::Invalid("missing claim"),
                    _ => JwtError::Invalid("malformed"),
                }
            })?;
        let sub = data.claims.sub;
        if sub.is_empty() || sub.len() > MAX_IDENTITY_BYTES || sub.chars().any(char::is_control) {
            return Err(JwtError::Invalid("unusable sub"));
        }
        Ok(Identity::new(sub))
    }
}

/// A bundle entry as a verifying key, when it is one we accept.
fn usable_key(value: serde_json::Value) -> Option<BundleKey> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(PublicKeyUse::Other(u)) if u == "jwt-svid" => {}
        Some(_) => return None,
    }
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    let algorithms = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::PS256],
        _ => return None,
    };
    // A key that names its algorithm is used for that one only.
    let algorithms = match jwk.common.key_algorithm {
        None => algorithms,
        Some(declared) => {
            let declared = match declared {
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::ES384 => Algorithm::ES384,
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                _ => return None,
            };
            if !algorithms.contains(&declared) {
                return None;
            }
            vec![declared]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(BundleKey {
        kid,
        algorithms,
        key,
    })
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field(
                "keys",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("audience", &self.audience)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_without_usable_keys_are_refused() {
        assert!(matches!(
            JwtVerifier::parse(b"not json", "a"),
            Err(BundleError::Syntax(_))
        ));
        assert!(matches!(
            JwtVerifier::parse(br#"{"keys":[]}"#, "a"),
            Err(BundleError::NoKeys)
        ));
        // A shared secret is never a verifying key.
        assert!(matches!(
            JwtVerifier::parse(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#, "a"),
            Err(BundleError::NoKeys)
        ));
    }

    proptest::proptest! {
        #[test]
        fn any_bundle_text_parses_or_is_refused(text in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = JwtVerifier::parse(&text, "a");
        }

        #[test]
        fn any_token_text_is_refused_without_panicking(token in ".{0,400}") {
            let bundle = br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k",
                "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
            let verifier = JwtVerifier::parse(bundle, "a").unwrap();
            proptest::prop_assert!(verifier.verify(&token).is_err());
        }
    }
}
