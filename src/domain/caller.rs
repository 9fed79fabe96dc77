//! Who is calling (BEHAVIOUR.md §9): an identity proven by a JWT-SVID or a
//! client certificate, or nobody in particular. Set by the transport, checked
//! by the policy, used for ownership by identity. Identities are not secrets:
//! they may be logged.

use std::{fmt, sync::Arc};

use sha2::{Digest, Sha256};

use super::TokenHash;

/// A proven identity: a SPIFFE ID (`spiffe://…`), a JWT `sub` or a
/// certificate's subject CN.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identity(Arc<str>);

/// The caller of one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Caller {
    /// No credential was presented.
    #[default]
    Anonymous,
    /// A verified credential named this identity.
    Identified(Identity),
}

/// Domain separation between identity keys and token hashes, so that an
/// identity can never be mistaken for a token (or the reverse).
const OWNER_KEY_DOMAIN: &[u8] = b"agent-registry owner identity\0";

impl Identity {
    /// An identity as a credential states it.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The identity's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the stores keep to recognise the agent's owner: a fixed-size
    /// digest, whatever the identity's length.
    pub fn owner_key(&self) -> TokenHash {
        let mut hasher = Sha256::new();
        hasher.update(OWNER_KEY_DOMAIN);
        hasher.update(self.0.as_bytes());
        TokenHash::from_bytes(hasher.finalize().into())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.0)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Caller {
    /// The identity, unless anonymous.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Self::Anonymous => None,
            Self::Identified(identity) => Some(identity),
        }
    }

    /// The owner key of an identified caller.
    pub fn owner_key(&self) -> Option<TokenHash> {
        self.identity().map(Identity::owner_key)
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("anonymous"),
            Self::Identified(identity) => identity.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_keys_are_per_identity_and_not_token_hashes() {
        let a = Identity::new("spiffe://example.org/a");
        let b = Identity::new("spiffe://example.org/b");
        assert!(a.owner_key().matches(&a.owner_key()));
        assert!(!a.owner_key().matches(&b.owner_key()));
        let token = super::super::Token::presented("spiffe://example.org/a".into());
        assert!(!token.hash().matches(&a.owner_key()));
    }
}
