//! Every Redis key and channel name. No other file builds one.
//!
//! All names start with the configured prefix inside one hash tag,
//! `{<prefix>}:`, so every key of a registry lives in one Redis Cluster slot
//! and multi-key scripts work there too. The only variable part of any name
//! is an [`AgentId`] in canonical form (hex and hyphens): nothing a client
//! sends (capabilities, metadata, namespaces) ever becomes part of a key or
//! channel, so it cannot collide with or escape into another one.

use crate::domain::AgentId;

/// The names of one registry's keys and channels.
#[derive(Clone, Debug)]
pub struct Keys {
    /// `{<prefix>}:`
    base: String,
}

impl Keys {
    /// Names under `prefix` (validated by the configuration: no braces).
    pub fn new(prefix: &str) -> Self {
        Self {
            base: format!("{{{prefix}}}:"),
        }
    }

    /// Hash: one agent's record.
    pub fn agent(&self, id: AgentId) -> String {
        format!("{}{id}", self.agent_prefix())
    }

    /// What [`Keys::agent`] puts before the id (scripts that find ids build
    /// keys from it).
    pub fn agent_prefix(&self) -> String {
        format!("{}agent:", self.base)
    }

    /// List: one agent's notification backlog.
    pub fn backlog(&self, id: AgentId) -> String {
        format!("{}{id}", self.backlog_prefix())
    }

    /// What [`Keys::backlog`] puts before the id.
    pub fn backlog_prefix(&self) -> String {
        format!("{}notify:", self.base)
    }

    /// Zset: id → heartbeat deadline or removal time (ms) minus [`Keys::shift`].
    pub fn due(&self) -> String {
        format!("{}due", self.base)
    }

    /// String: the registry-wide revision counter.
    pub fn revision(&self) -> String {
        format!("{}rev", self.base)
    }

    /// Set: every registered id (for snapshots).
    pub fn agents(&self) -> String {
        format!("{}agents", self.base)
    }

    /// String: when a reaper pass last ran (ms), for outage fencing.
    pub fn clock(&self) -> String {
        format!("{}clock", self.base)
    }

    /// String: total ms every deadline was moved back by outage fencing.
    pub fn shift(&self) -> String {
        format!("{}shift", self.base)
    }

    /// Stream: the change history (no keep-alives), entry id `<revision>-0`,
    /// fields `m` (the change message) and `p` (the previous registration
    /// of a re-registration, else empty); capped at `--watch-history`.
    pub fn history(&self) -> String {
        format!("{}history", self.base)
    }

    /// String: every change above this revision is in [`Keys::history`].
    pub fn history_floor(&self) -> String {
        format!("{}hfloor", self.base)
    }

    /// Zset: prober replica id → when it last announced itself (ms).
    pub fn probers(&self) -> String {
        format!("{}probers", self.base)
    }

    /// Channel: every change, in revision order.
    pub fn changes_channel(&self) -> String {
        format!("{}changes", self.base)
    }

    /// Channel: live notifications of one agent. A replica subscribes while
    /// it has a subscriber of that agent, so PUBLISH counts the replicas that
    /// delivered it.
    pub fn mailbox_channel(&self, id: AgentId) -> String {
        format!("{}{id}", self.mailbox_channel_prefix())
    }

    /// What [`Keys::mailbox_channel`] puts before the id.
    pub fn mailbox_channel_prefix(&self) -> String {
        format!("{}mbox:", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_in_one_hash_tag() {
        let keys = Keys::new("registry");
        let id = AgentId::new_v4();
        for name in [
            keys.agent(id),
            keys.backlog(id),
            keys.due(),
            keys.revision(),
            keys.agents(),
            keys.clock(),
            keys.shift(),
            keys.changes_channel(),
            keys.mailbox_channel(id),
        ] {
            assert!(name.starts_with("{registry}:"), "{name}");
            assert_eq!(name.matches('{').count(), 1, "{name}");
        }
        assert_eq!(keys.agent(id), format!("{{registry}}:agent:{id}"));
    }
}
