//! The Lua scripts, one per mutation. Each is loaded once per Redis server
//! and called by its SHA1 (`EVALSHA`); `redis::Script` reloads it when the
//! server answers NOSCRIPT (after a restart or `SCRIPT FLUSH`).

use redis::Script;

const COMMON: &str = include_str!("lua/common.lua");

fn with_common(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

/// Every script of the store.
#[derive(Debug)]
pub struct Scripts {
    /// Register or re-register.
    pub register: Script,
    /// Heartbeat.
    pub heartbeat: Script,
    /// Deregister.
    pub deregister: Script,
    /// The reaper's pass (with outage fencing).
    pub expire: Script,
    /// Queue and publish a notification.
    pub notify: Script,
    /// Ownership check + backlog read.
    pub open_mailbox: Script,
    /// Consistent snapshot of every agent.
    pub snapshot: Script,
    /// The change history after a revision.
    pub history: Script,
    /// One probe result of an active check.
    pub probe: Script,
    /// Prober membership: announce (or leave) and list.
    pub probers: Script,
}

impl Scripts {
    /// Builds (hashes) every script; nothing is sent yet.
    pub fn new() -> Self {
        Self {
            register: with_common(include_str!("lua/register.lua")),
            heartbeat: with_common(include_str!("lua/heartbeat.lua")),
            deregister: with_common(include_str!("lua/deregister.lua")),
            expire: with_common(include_str!("lua/expire.lua")),
            notify: with_common(include_str!("lua/notify.lua")),
            open_mailbox: with_common(include_str!("lua/open_mailbox.lua")),
            snapshot: with_common(include_str!("lua/snapshot.lua")),
            history: with_common(include_str!("lua/history.lua")),
            probe: with_common(include_str!("lua/probe.lua")),
            probers: Script::new(include_str!("lua/replicas.lua")),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}
