#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Operations (BEHAVIOUR.md §1 and §6): gRPC health following the store,
//! gRPC reflection, Prometheus metrics, graceful shutdown of the real binary
//! on SIGTERM/SIGINT, start-up configuration errors, and logs that never
//! contain a registration token.
//!
//! One module per topic: [`health`], [`reflection`], [`metrics`],
//! [`shutdown`], [`logs`], [`config`]; what several of them use is in
//! [`support`].

#[path = "../common/mod.rs"]
mod common;

mod config;
mod health;
mod logs;
mod metrics;
mod reflection;
mod shutdown;
mod support;
