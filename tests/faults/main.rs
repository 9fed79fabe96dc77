//! Faults (BEHAVIOUR.md §5) on the Redis store: Redis killed and restarted
//! empty, Redis stalled, outages of Redis and of every replica (outage
//! fencing), and a registry started while Redis is down.
//!
//! One module per fault: [`crash`], [`stall`], [`fencing`], [`startup`],
//! [`recovery`] (what holds once Redis is back); what several of them use
//! is in [`support`] and `common::calls`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod fencing;
mod recovery;
mod stall;
mod startup;
mod support;
