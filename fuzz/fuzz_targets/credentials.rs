//! The operator's and callers' credential parsers: policy files, JWKS
//! bundles and JWTs. Must never panic; a JWT never verifies by chance.
#![no_main]

use agent_registry::auth::{jwt::JwtVerifier, policy::Policy};
use libfuzzer_sys::fuzz_target;

const BUNDLE: &[u8] = br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k",
    "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

fuzz_target!(|data: &[u8]| {
    let _ = JwtVerifier::parse(data, "agent-registry");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Policy::parse(text);
        if let Ok(verifier) = JwtVerifier::parse(BUNDLE, "agent-registry") {
            assert!(verifier.verify(text).is_err(), "a fuzzed JWT verified");
        }
    }
});
