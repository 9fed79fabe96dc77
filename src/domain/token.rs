//! Ownership tokens (BEHAVIOUR.md §3): minted from the OS CSPRNG, kept only
//! as a SHA-256 hash, compared in constant time, and never printed.

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Error, Result};

/// Bytes of randomness in a minted token (256 bits; the contract asks ≥ 128).
const TOKEN_BYTES: usize = 32;

/// Length bounds of a token a client supplies on Register.
const CLIENT_TOKEN_LEN: std::ops::RangeInclusive<usize> = 22..=256;

/// A registration token in clear: held only while a request is handled.
/// `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// SHA-256 of a token: what the stores keep. Tokens are high-entropy random
/// strings, so an unsalted fast hash is enough to make a leaked record useless.
#[derive(Copy, Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

// === impl Token ===

impl Token {
    /// A fresh token: 256 random bits from the OS, url-safe base64 (43 chars).
    ///
    /// # Errors
    /// `Internal` when the OS random source fails.
    pub fn mint() -> Result<Self> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| Error::Internal {
            source: format!("OS random source: {e}").into(),
        })?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A token a client proposes on Register (re-creating its agent after the
    /// registry lost its data): 22..=256 characters of `[A-Za-z0-9_-]`.
    ///
    /// # Errors
    /// `InvalidArgument` on `registration_token` otherwise.
    pub fn from_client(s: String) -> Result<Self> {
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !CLIENT_TOKEN_LEN.contains(&s.len()) || !ok_chars {
            return Err(Error::invalid(
                "registration_token",
                "must be 22 to 256 characters of A-Z a-z 0-9 _ -",
            ));
        }
        Ok(Self(s))
    }

    /// A token presented to prove ownership (Heartbeat, Deregister, ...). Any
    /// text is accepted here: a malformed token is simply a wrong one.
    pub fn presented(s: String) -> Self {
        Self(s)
    }

    /// The clear text, to hand back to the client that owns it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

// === impl TokenHash ===

impl TokenHash {
    /// Constant-time equality.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Raw bytes, for stores that persist it.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Rebuilds a hash from [`TokenHash::as_bytes`].
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(***)")
    }
}

/// What a caller offers to prove it owns an agent (BEHAVIOUR.md §3, §9).
#[derive(Copy, Clone, Debug, Default)]
pub struct Ownership {
    /// Hash of the token the caller presented, if any.
    pub presented: Option<TokenHash>,
    /// Whether a missing token is refused.
    pub required: bool,
    /// The owner key of the caller's identity ([`super::Identity::owner_key`]),
    /// when it has one.
    pub caller: Option<TokenHash>,
}

/// The ownership check of §3 and §9, run after the agent was found. `stored`
/// is the agent's token hash, `owner` the key of the identity that
/// registered it (if one did).
///
/// A presented token decides alone: it works from any caller, and a wrong
/// one is refused whoever sends it. Without a token, the owning identity is
/// let in, another identity is refused, and an anonymous caller needs the
/// token when tokens are required.
///
/// # Errors
/// `Unauthenticated` when no token was presented and one is required;
/// `PermissionDenied` when the presented token is not the agent's, or when
/// another identity calls on an identity's agent without its token.
pub fn authorize(stored: &TokenHash, owner: Option<&TokenHash>, proof: &Ownership) -> Result<()> {
    match (&proof.presented, owner, &proof.caller) {
        (Some(hash), _, _) if stored.matches(hash) => Ok(()),
        (Some(_), _, _) => Err(Error::PermissionDenied),
        (None, Some(owner), Some(caller)) if owner.matches(caller) => Ok(()),
        (None, Some(_), Some(_)) => Err(Error::PermissionDenied),
        (None, _, _) if proof.required => Err(Error::Unauthenticated),
        (None, _, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_long_url_safe_and_distinct() {
        let a = Token::mint().unwrap();
        let b = Token::mint().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert!(Token::from_client(a.expose().to_owned()).is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = Token::mint().unwrap();
        assert!(!format!("{t:?} {:?}", t.hash()).contains(t.expose()));
    }

    #[test]
    fn client_tokens_must_be_well_formed() {
        assert!(Token::from_client("a".repeat(21)).is_err());
        assert!(Token::from_client("a".repeat(22)).is_ok());
        assert!(Token::from_client("a".repeat(256)).is_ok());
        assert!(Token::from_client("a".repeat(257)).is_err());
        assert!(Token::from_client(format!("{}!", "a".repeat(30))).is_err());
    }

    #[test]
    fn authorize_follows_the_token_rules() {
        let t = Token::mint().unwrap().hash();
        let other = Token::mint().unwrap().hash();
        let proof = |presented: Option<TokenHash>, required| Ownership {
            presented,
            required,
            caller: None,
        };
        assert!(authorize(&t, None, &proof(Some(t), true)).is_ok());
        assert!(matches!(
            authorize(&t, None, &proof(None, true)),
            Err(Error::Unauthenticated)
        ));
        assert!(authorize(&t, None, &proof(None, false)).is_ok());
        assert!(matches!(
            authorize(&t, None, &proof(Some(other), false)),
            Err(Error::PermissionDenied)
        ));
    }

    #[test]
    fn the_owning_identity_needs_no_token_and_others_do() {
        let t = Token::mint().unwrap().hash();
        let owner = crate::domain::Identity::new("spiffe://x/owner").owner_key();
        let stranger = crate::domain::Identity::new("spiffe://x/other").owner_key();
        let by = |caller: Option<TokenHash>, presented: Option<TokenHash>| Ownership {
            presented,
            required: true,
            caller,
        };
        assert!(authorize(&t, Some(&owner), &by(Some(owner), None)).is_ok());
        assert!(matches!(
            authorize(&t, Some(&owner), &by(Some(stranger), None)),
            Err(Error::PermissionDenied)
        ));
        assert!(authorize(&t, Some(&owner), &by(Some(stranger), Some(t))).is_ok());
        assert!(authorize(&t, Some(&owner), &by(None, Some(t))).is_ok());
        assert!(matches!(
            authorize(&t, Some(&owner), &by(None, None)),
            Err(Error::Unauthenticated)
        ));
        assert!(matches!(
            authorize(&t, Some(&owner), &by(Some(owner), Some(stranger))),
            Err(Error::PermissionDenied)
        ));
        // An agent registered anonymously: identities need its token.
        assert!(matches!(
            authorize(&t, None, &by(Some(owner), None)),
            Err(Error::Unauthenticated)
        ));
    }
}
