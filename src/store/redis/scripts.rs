//! The Lua scripts, one per mutation. Each is called by its SHA1
//! (`EVALSHA`), and sent whole (`EVAL`, which caches it) when the server
//! answers NOSCRIPT (after a restart, a failover or `SCRIPT FLUSH`); see
//! [`Lua`] for the two forms of each (plain or sharded publishing).

use super::topology::Lua;

const COMMON: &str = include_str!("lua/common.lua");

fn with_common(body: &str) -> Lua {
    Lua::new(&format!("{COMMON}\n{body}"))
}

/// Every script of the store.
#[derive(Debug)]
pub struct Scripts {
    /// Register or re-register.
    pub register: Lua,
    /// Heartbeat.
    pub heartbeat: Lua,
    /// Deregister.
    pub deregister: Lua,
    /// The reaper's pass (with outage fencing).
    pub expire: Lua,
    /// Queue and publish a notification.
    pub notify: Lua,
    /// Ownership check + backlog read.
    pub open_mailbox: Lua,
    /// Consistent snapshot of every agent.
    pub snapshot: Lua,
    /// The change history after a revision.
    pub history: Lua,
    /// One probe result of an active check.
    pub probe: Lua,
    /// Prober membership: announce (or leave) and list.
    pub probers: Lua,
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
            probers: Lua::new(include_str!("lua/replicas.lua")),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}
