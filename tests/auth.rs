#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Identity, TLS, authorization and limits (BEHAVIOUR.md §9), against
//! in-process servers with certificates, keys and JWT-SVIDs the tests make.
//!
//! One module per topic: [`tls`] (TLS, mTLS identities), [`http_port`]
//! (the same on the HTTP/JSON port, and its per-peer rate), [`jwt`]
//! (JWT-SVIDs), [`policy`], [`ownership`] (agents owned by identities, on
//! both stores), [`limits`] (the per-call limits and backlogs),
//! [`connections`] (connection bounds and the attacks on them), [`clients`]
//! (the SDK and registryctl over mTLS with JWT-SVIDs), [`logs`] (no
//! credential in any log line),
//! [`malformed`] (bodies that are not protobuf), [`reload`] (certificates and
//! policies changed on disk); credentials come from [`pki`], the rest from
//! [`support`].

#[path = "common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "ops/support.rs"]
mod ops_support;

#[path = "auth/clients.rs"]
mod clients;
#[path = "auth/connections.rs"]
mod connections;
#[path = "auth/http_port.rs"]
mod http_port;
#[path = "auth/jwt.rs"]
mod jwt;
#[path = "auth/limits.rs"]
mod limits;
#[path = "auth/logs.rs"]
mod logs;
#[path = "auth/malformed.rs"]
mod malformed;
#[path = "auth/ownership.rs"]
mod ownership;
#[path = "auth/pki.rs"]
mod pki;
#[path = "auth/policy.rs"]
mod policy;
#[path = "auth/reload.rs"]
mod reload;
#[path = "auth/support.rs"]
mod support;
#[path = "auth/tls.rs"]
mod tls;
