//! The Lua scripts, one per mutation. Each is called by its SHA1
//! (`EVALSHA`), and sent whole (`EVAL`, which caches it) when the server
//! answers NOSCRIPT (after a restart, a failover or `SCRIPT FLUSH`); see
//! [`Lua`] for the two forms of each (plain or sharded publishing).

use std::fmt;

use redis::ToRedisArgs;

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

/// One Lua script in the two forms the topologies need: publishing with
/// `PUBLISH`, or with `SPUBLISH` on a cluster.
#[derive(Debug)]
pub struct Lua {
    plain: Body,
    sharded: Body,
}

#[derive(Debug)]
struct Body {
    code: String,
    hash: String,
}

impl Body {
    fn new(code: String) -> Self {
        let hash = redis::Script::new(&code).get_hash().to_owned();
        Self { code, hash }
    }
}

impl Lua {
    /// The script `source`, whose publishing calls use the Lua variable
    /// `PUBLISH`: defined here as the command of each form.
    pub fn new(source: &str) -> Self {
        let with = |command: &str| Body::new(format!("local PUBLISH = '{command}'\n{source}"));
        Self {
            plain: with("PUBLISH"),
            sharded: with("SPUBLISH"),
        }
    }

    /// Starts a call; add keys and arguments, then run it through the
    /// topology.
    pub fn prepare_invoke(&self) -> Call<'_> {
        Call {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One invocation of a [`Lua`] script: its keys and arguments.
pub struct Call<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Arguments may carry token hashes: counts only.
        f.debug_struct("Call")
            .field("keys", &self.keys.len())
            .field("args", &self.args.len())
            .finish()
    }
}

impl Call<'_> {
    /// Adds `KEYS[i]`.
    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    /// Adds `ARGV[i]`.
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    pub(super) fn command(&self, name: &str, sharded: bool, code: bool) -> redis::Cmd {
        let body = if sharded {
            &self.lua.sharded
        } else {
            &self.lua.plain
        };
        let mut cmd = redis::cmd(name);
        if code {
            cmd.arg(body.code.as_str());
        } else {
            cmd.arg(body.hash.as_str());
        }
        cmd.arg(self.keys.len()).arg(&self.keys).arg(&self.args);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_script_has_a_plain_and_a_sharded_form() {
        let lua = Lua::new("return redis.call(PUBLISH, KEYS[1], ARGV[1])");
        assert!(lua.plain.code.starts_with("local PUBLISH = 'PUBLISH'\n"));
        assert!(lua.sharded.code.starts_with("local PUBLISH = 'SPUBLISH'\n"));
        assert_ne!(lua.plain.hash, lua.sharded.hash);
        assert_eq!(
            lua.plain.hash,
            redis::Script::new(&lua.plain.code).get_hash()
        );
    }

    #[test]
    fn a_call_sends_its_keys_then_arguments_and_never_debugs_them() {
        let lua = Lua::new("return 1");
        let mut call = lua.prepare_invoke();
        call.key("{r}:a").key("{r}:b").arg("secret-token").arg(7);
        let cmd = call.command("EVALSHA", true, false);
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(args[0], b"EVALSHA");
        assert_eq!(args[1], lua.sharded.hash.as_bytes());
        assert_eq!(
            &args[2..],
            [&b"2"[..], b"{r}:a", b"{r}:b", b"secret-token", b"7"]
        );
        assert!(!format!("{call:?}").contains("secret"));
    }
}
