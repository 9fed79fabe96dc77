//! The behaviour suite: BEHAVIOUR.md §2–§4 driven over gRPC against a real
//! server, once per store backend (see `common::Backend`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

#[path = "behaviour/expiry.rs"]
mod expiry;
#[path = "behaviour/lifecycle.rs"]
mod lifecycle;
#[path = "behaviour/notify.rs"]
mod notify;
#[path = "behaviour/query.rs"]
mod query;
#[path = "behaviour/resume.rs"]
mod resume;
#[path = "behaviour/support.rs"]
mod support;
#[path = "behaviour/tokens.rs"]
mod tokens;
#[path = "behaviour/validation.rs"]
mod validation;
#[path = "behaviour/watch.rs"]
mod watch;
