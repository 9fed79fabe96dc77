//! The behaviour suite: BEHAVIOUR.md §2–§4 driven over gRPC against a real
//! server, once per store backend (see `common::Backend`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

#[path = "behaviour/discover.rs"]
mod discover;
#[path = "behaviour/expiry.rs"]
mod expiry;
#[path = "behaviour/field_limits.rs"]
mod field_limits;
#[path = "behaviour/heartbeat.rs"]
mod heartbeat;
#[path = "behaviour/identifiers.rs"]
mod identifiers;
#[path = "behaviour/lifecycle.rs"]
mod lifecycle;
#[path = "behaviour/notify.rs"]
mod notify;
#[path = "behaviour/query.rs"]
mod query;
#[path = "behaviour/query_limits.rs"]
mod query_limits;
#[path = "behaviour/reregister.rs"]
mod reregister;
#[path = "behaviour/resume.rs"]
mod resume;
#[path = "behaviour/strategies.rs"]
mod strategies;
#[path = "behaviour/support.rs"]
mod support;
#[path = "behaviour/token_reads.rs"]
mod token_reads;
#[path = "behaviour/tokens.rs"]
mod tokens;
#[path = "behaviour/validation.rs"]
mod validation;
#[path = "behaviour/watch.rs"]
mod watch;
#[path = "behaviour/watch_filters.rs"]
mod watch_filters;
#[path = "behaviour/watch_snapshot.rs"]
mod watch_snapshot;
