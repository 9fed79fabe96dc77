//! The active health checks' writes (BEHAVIOUR.md §10): one probe's result,
//! and the membership of the replicas that share the probing.

use super::{
    RedisStore, SAFETY_NET_MS, codec,
    reply::{bytes, check, flag, internal, items},
};
use crate::{
    domain::{ChangeKind, Millis, Result},
    store::{PROBER_STALE_MS, ProbeCommand},
};

impl RedisStore {
    pub(super) async fn write_probe(
        &self,
        cmd: ProbeCommand,
        now: Millis,
    ) -> Result<Option<ChangeKind>> {
        let mut invocation = self.scripts.probe.prepare_invoke();
        invocation
            .key(self.keys.agent(cmd.agent_id))
            .key(self.keys.due())
            .key(self.keys.revision())
            .key(self.keys.agents())
            .key(self.keys.backlog(cmd.agent_id))
            .key(self.keys.shift())
            .key(self.keys.history())
            .key(self.keys.history_floor())
            .arg(cmd.agent_id.to_string())
            .arg(now)
            .arg(flag(cmd.passed))
            .arg(cmd.output.as_str())
            .arg(self.keys.changes_channel())
            .arg(SAFETY_NET_MS + self.grace_ms)
            .arg(self.floor())
            .arg(self.history_cap);
        let reply = items(self.invoke(invocation).await?)?;
        if reply.first().map(bytes).transpose()? == Some(b"NONE".as_slice()) {
            return Ok(None);
        }
        check(&reply, cmd.agent_id)?;
        let (change, _) = codec::decode_change(bytes(
            reply.get(2).ok_or_else(|| internal("short probe reply"))?,
        )?)?;
        self.saw(change.revision);
        Ok(Some(change.kind))
    }

    pub(super) async fn announce_prober(
        &self,
        me: &str,
        now: Millis,
        leave: bool,
    ) -> Result<Vec<String>> {
        let mut invocation = self.scripts.probers.prepare_invoke();
        invocation
            .key(self.keys.probers())
            .arg(me)
            .arg(now)
            .arg(PROBER_STALE_MS)
            .arg(flag(leave));
        let reply = items(self.invoke(invocation).await?)?;
        reply
            .iter()
            .map(|member| Ok(String::from_utf8_lossy(bytes(member)?).into_owned()))
            .collect()
    }
}
