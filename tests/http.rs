//! The HTTP/JSON API of BEHAVIOUR.md §12 against a real server, once per
//! store backend: every route's status codes and JSON shapes (proto3 JSON
//! mapping), tokens, errors naming the field, stale marking, and the watch
//! as Server-Sent Events (snapshot, then live events, then the closing
//! `error` event).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

#[path = "http/support.rs"]
mod support;

#[path = "http/routes.rs"]
mod routes;
#[path = "http/watch.rs"]
mod watch;
