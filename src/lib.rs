//! Agent registry: a gRPC service where agents register their capabilities
//! and stay alive with heartbeats, schedulers discover them, operators watch
//! the population change, and anyone can notify an agent.
//!
//! # Layout
//! - [`domain`]: the pure model and rules (validation, tokens, status,
//!   ranking, paging, the nine [`domain::rpc::Rpc`]s). No I/O.
//! - [`store`]: the [`store::Store`] trait and its implementations; every
//!   mutation is atomic, bumps the registry-wide revision and publishes the
//!   change on the feed.
//! - [`feed`]: the one task per replica that applies the store's changes, in
//!   order, to the [`view`] and the [`mailbox`]es.
//! - [`view`]: each replica's in-memory index; serves reads.
//! - [`hub`]: the fan-out of the view's changes to watch streams.
//! - [`mailbox`]: live notification subscribers of this replica.
//! - [`outbox`]: the bounded queue between the feed and one stream.
//! - [`reaper`]: moves overdue agents to UNHEALTHY, then removes them.
//! - [`api`]: the nine operations, transport-independent (domain in, domain
//!   out): availability rules, read-your-writes, token policy.
//! - [`convert`]: every wire ↔ domain conversion (service, SDK, Redis codec).
//! - [`service`]: the tonic service: decode → call [`api`] → encode; errors
//!   to statuses in one place, per-call metrics and spans in one layer.
//! - [`http`]: the HTTP/JSON door (same decode → [`api`] → encode), the
//!   watch stream as Server-Sent Events, and the web console.
//! - [`auth`]: identity (mTLS, JWT-SVID), TLS, the authorization policy,
//!   limits and their reload (BEHAVIOUR.md §9), applied by one tower layer.
//! - [`server`]: the composition root.
//! - [`backoff`], [`sync`]: retry timing and lock helpers used everywhere.
//! - [`config`]: flags and environment variables.
//! - [`signal`]: waiting for SIGTERM or Ctrl-C, for the server and the CLI.
//! - [`metrics`], [`admin`], [`health`]: Prometheus metrics, the HTTP probes and
//!   gRPC health.
//! - [`client`]: the Rust SDK (client, agent session, discovery cache).
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod auth;
pub mod backoff;
pub mod client;
pub mod config;
pub mod convert;
pub mod domain;
pub mod feed;
pub mod health;
pub mod http;
pub mod hub;
pub mod mailbox;
pub mod metrics;
pub mod outbox;
pub mod pb;
pub mod prober;
pub mod reaper;
pub mod server;
pub mod service;
pub mod signal;
pub mod store;
pub mod sync;
pub mod view;
