//! Credentials the tests make: a private CA and its server and client
//! certificates, a foreign CA, ES256 keys, their JWKS bundle, and JWT-SVIDs
//! (valid, expired, wrong audience, unknown key, foreign key).

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

/// A certificate authority of the test's own.
pub struct Ca {
    /// Its certificate, PEM.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    /// The certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl Ca {
    /// A fresh CA named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1 with `serial`.
    pub fn server(&self, serial: u64) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "registry");
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with subject CN `cn` and, when given, the URI
    /// SAN `spiffe`.
    pub fn client(&self, cn: &str, spiffe: Option<&str>) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(uri) = spiffe {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().unwrap()));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// An ES256 signing key with a key id.
pub struct Signer {
    /// The `kid`.
    pub kid: String,
    key: KeyPair,
}

/// The audience the test servers expect (the default).
pub const AUDIENCE: &str = "agent-registry";

impl Signer {
    /// A fresh P-256 key named `kid`.
    pub fn new(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            key: KeyPair::generate().unwrap(),
        }
    }

    /// The key as a JWK of a SPIFFE bundle.
    pub fn jwk(&self) -> serde_json::Value {
        let raw = self.key.public_key_raw();
        assert_eq!(raw.len(), 65, "uncompressed P-256 point");
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "use": "jwt-svid",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
        })
    }

    /// A JWT-SVID for `sub`, audience `aud`, expiring `exp_in` seconds from
    /// now (negative: already expired), signed with this key but naming
    /// `kid` as its key.
    pub fn token_as(&self, kid: &str, sub: &str, aud: &str, exp_in: i64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        let claims = serde_json::json!({ "sub": sub, "aud": [aud], "exp": now + exp_in });
        let key = EncodingKey::from_ec_pem(self.key.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    /// A valid JWT-SVID for `sub` (one hour).
    pub fn token(&self, sub: &str) -> String {
        self.token_as(&self.kid, sub, AUDIENCE, 3600)
    }
}

/// A JWKS bundle of `signers`.
pub fn bundle(signers: &[&Signer]) -> String {
    let keys: Vec<_> = signers.iter().map(|s| s.jwk()).collect();
    serde_json::json!({ "keys": keys, "spiffe_sequence": 1 }).to_string()
}
