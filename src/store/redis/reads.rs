//! The store's reads that are not a client's call on the view: a
//! mailbox's backlog, the whole snapshot a view loads, and the change
//! history a resuming watch replays.

use std::sync::Arc;

use super::{
    RedisStore, SNAPSHOT_TIMEOUT, codec,
    reply::{bytes, caller_arg, check, flag, int, internal, items, token_arg, unavailable},
};
use crate::{
    domain::{
        Agent, AgentId, History, Notification, Result, Revision,
        clock::{Clock, SystemClock},
    },
    store::{Ownership, Snapshot},
};

impl RedisStore {
    pub(super) async fn read_mailbox(
        &self,
        agent_id: AgentId,
        owner: Ownership,
        after: Option<u64>,
    ) -> Result<Vec<Arc<Notification>>> {
        let after = after.unwrap_or(0);
        let mut invocation = self.scripts.open_mailbox.prepare_invoke();
        invocation
            .key(self.keys.agent(agent_id))
            .key(self.keys.backlog(agent_id))
            .arg(token_arg(&owner))
            .arg(flag(owner.required))
            .arg(after)
            .arg(caller_arg(owner.caller.as_ref()));
        let reply = items(self.invoke(invocation).await?)?;
        check(&reply, agent_id)?;
        let mut out = Vec::with_capacity(reply.len().saturating_sub(1));
        for message in &reply[1..] {
            let notification = codec::decode_notification(bytes(message)?)?;
            if notification.id > after {
                out.push(Arc::new(notification));
            }
        }
        Ok(out)
    }

    pub(super) async fn read_snapshot(&self) -> Result<Snapshot> {
        let mut invocation = self.scripts.snapshot.prepare_invoke();
        invocation
            .key(self.keys.revision())
            .key(self.keys.agents())
            .arg(self.keys.agent_prefix())
            // Only to seed the revision of an empty store; not a deadline.
            .arg(SystemClock.now())
            .arg(self.floor());
        // A snapshot of a large registry is one big reply (about 0.5 KB per
        // agent): give it its own connection and a bound of its own, so it
        // is never cut off by the per-call timeout meant for clients.
        let started = std::time::Instant::now();
        let snapshot = self.topology.run_long(&invocation, SNAPSHOT_TIMEOUT);
        let reply = match tokio::time::timeout(SNAPSHOT_TIMEOUT, snapshot).await {
            Ok(reply) => reply,
            Err(_) => Err(unavailable("snapshot did not arrive in time")),
        };
        // A snapshot that arrived is proof Redis answers: the first client
        // call after start need not wait for some other command to say so.
        self.note_reachability(&reply);
        let reply = items(reply?)?;
        let revision = reply.first().map(int).transpose()?.unwrap_or(0);
        let revision = u64::try_from(revision).unwrap_or(0);
        self.saw(revision);
        // Decoding 100 000 records takes a while: off the runtime's
        // threads, and spread over the cores.
        let fetched = started.elapsed();
        let agents = tokio::task::spawn_blocking(move || decode_records(&reply[1..]))
            .await
            .map_err(|e| internal(format!("snapshot decoding: {e}")))??;
        tracing::debug!(
            agents = agents.len(),
            fetched_ms = fetched.as_millis() as u64,
            decoded_ms = (started.elapsed() - fetched).as_millis() as u64,
            "snapshot read"
        );
        Ok(Snapshot { revision, agents })
    }

    pub(super) async fn read_history(
        &self,
        after: Revision,
        upto: Revision,
        limit: usize,
    ) -> Result<History> {
        let mut invocation = self.scripts.history.prepare_invoke();
        invocation
            .key(self.keys.history())
            .key(self.keys.history_floor())
            .key(self.keys.revision())
            .arg(after)
            .arg(upto)
            .arg(limit);
        let reply = items(self.invoke(invocation).await?)?;
        match reply.first().map(bytes).transpose()? {
            Some(b"COMPACTED") => {
                let oldest = reply.get(1).map(int).transpose()?.unwrap_or(0);
                Ok(History::Compacted {
                    oldest: u64::try_from(oldest).unwrap_or(0),
                })
            }
            Some(b"OK") => {
                let mut changes = Vec::with_capacity(reply.len() / 2);
                for pair in reply[1..].chunks(2) {
                    let [message, previous] = pair else {
                        return Err(internal("odd history reply"));
                    };
                    changes.push(codec::decode_replayed(bytes(message)?, bytes(previous)?)?);
                }
                Ok(History::Changes(changes))
            }
            _ => Err(internal("unexpected history reply")),
        }
    }
}

/// The agents of a snapshot's flat reply ([`codec::RECORD_FIELDS`] per
/// agent), decoded in one chunk per core.
fn decode_records(flat: &[redis::Value]) -> Result<Vec<Arc<Agent>>> {
    if !flat.len().is_multiple_of(codec::RECORD_FIELDS) {
        return Err(internal("snapshot reply is not whole records"));
    }
    let records = flat.len() / codec::RECORD_FIELDS;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_chunk = records.div_ceil(threads.max(1)).max(1) * codec::RECORD_FIELDS;
    let decode = |chunk: &[redis::Value]| -> Result<Vec<Arc<Agent>>> {
        let mut agents = Vec::with_capacity(chunk.len() / codec::RECORD_FIELDS);
        let mut fields: Vec<&[u8]> = Vec::with_capacity(codec::RECORD_FIELDS);
        for record in chunk.chunks_exact(codec::RECORD_FIELDS) {
            fields.clear();
            for value in record {
                fields.push(match value {
                    redis::Value::Nil => b"",
                    other => bytes(other)?,
                });
            }
            agents.push(Arc::new(codec::decode_record(&fields)?));
        }
        Ok(agents)
    };
    let parts: Vec<Result<Vec<Arc<Agent>>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = flat
            .chunks(per_chunk)
            .map(|chunk| scope.spawn(move || decode(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(internal("snapshot decoding panicked")))
            })
            .collect()
    });
    let mut agents = Vec::with_capacity(records);
    for part in parts {
        agents.extend(part?);
    }
    Ok(agents)
}
