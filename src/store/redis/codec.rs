//! How agents, telemetry and notifications are written into Redis and read
//! back from the messages the scripts return and publish.
//!
//! Scripts never parse what the registry encodes: the registration and a
//! notification's payload are protobuf blobs, telemetry is canonical text
//! compared byte for byte, and every message a script produces is a
//! msgpack array of strings (see `lua/common.lua`).

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use prost::Message;

use crate::{
    convert,
    domain::{
        Agent, AgentId, Change, ChangeKind, Error, Notification, Replayed, Result, Status,
        Telemetry, TokenHash, agent::Registration, check::ProbeState,
    },
    pb,
};

fn corrupt(what: impl Into<String>) -> Error {
    Error::Internal {
        source: format!("corrupt registry data in Redis: {}", what.into()).into(),
    }
}

/// The registration part of a record (`reg`).
pub fn encode_registration(reg: &Registration) -> Vec<u8> {
    pb::AgentInfo::from(reg).encode_to_vec()
}

/// Telemetry as canonical text (`tel`): equal telemetry, equal bytes, so a
/// script can tell whether a heartbeat changed it.
pub fn encode_telemetry(t: &Telemetry) -> String {
    // -0.0 == 0.0 but has other bits: normalise.
    let rate = if t.success_rate == 0.0 {
        0.0
    } else {
        t.success_rate
    };
    format!(
        "{:016x}:{}:{}:{}:{}",
        rate.to_bits(),
        t.avg_duration_ms,
        t.total_executions,
        t.failed_executions,
        t.last_execution_at
    )
}

fn decode_telemetry(text: &[u8]) -> Result<Telemetry> {
    let text = std::str::from_utf8(text).map_err(|_| corrupt("telemetry"))?;
    let mut parts = text.split(':');
    let mut next = || parts.next().ok_or_else(|| corrupt("telemetry"));
    let rate = u64::from_str_radix(next()?, 16).map_err(|_| corrupt("telemetry"))?;
    let mut int = || -> Result<i64> { next()?.parse().map_err(|_| corrupt("telemetry")) };
    Ok(Telemetry {
        success_rate: f64::from_bits(rate),
        avg_duration_ms: int()?,
        total_executions: int()?,
        failed_executions: int()?,
        last_execution_at: int()?,
    })
}

/// A token hash as stored (`tok`).
pub fn encode_token(hash: &TokenHash) -> String {
    URL_SAFE_NO_PAD.encode(hash.as_bytes())
}

/// A notification's payload (type, message, metadata).
pub fn encode_notification_payload(
    kind: &str,
    message: &str,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Vec<u8> {
    pb::AgentNotification {
        notification_type: kind.to_owned(),
        message: message.to_owned(),
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The string fields of a msgpack array produced by a script.
fn fields(bytes: &[u8], expected: usize) -> Result<Vec<Vec<u8>>> {
    fields_of(bytes, &[expected])
}

/// [`fields`] of a message that may have any of the `expected` lengths.
fn fields_of(bytes: &[u8], expected: &[usize]) -> Result<Vec<Vec<u8>>> {
    let value =
        rmpv::decode::read_value(&mut &bytes[..]).map_err(|e| corrupt(format!("message: {e}")))?;
    let rmpv::Value::Array(items) = value else {
        return Err(corrupt("message is not an array"));
    };
    if !expected.contains(&items.len()) {
        return Err(corrupt(format!(
            "message has {} fields, not {expected:?}",
            items.len()
        )));
    }
    items
        .into_iter()
        .map(|item| match item {
            rmpv::Value::String(s) => Ok(s.into_bytes()),
            rmpv::Value::Binary(b) => Ok(b),
            rmpv::Value::Integer(i) => Ok(i.to_string().into_bytes()),
            other => Err(corrupt(format!("unexpected field {other}"))),
        })
        .collect()
}

fn number<T: std::str::FromStr>(bytes: &[u8], what: &str) -> Result<T> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt(what.to_owned()))
}

fn status(bytes: &[u8]) -> Result<Status> {
    Status::from_wire(number(bytes, "status")?).ok_or_else(|| corrupt("status"))
}

/// Fields of a change message before the probe state was added to it (a
/// replica of the previous version publishes these).
const CHANGE_FIELDS_V1: usize = 13;
/// Fields of a change message with the probe state.
const CHANGE_FIELDS: usize = 18;

/// The probe state in a record's fields (see [`decode_record`]): `hx` (1
/// while failing), `hf`, `hp` (consecutive failures, passes), `hs` (failing
/// since, ms, or empty), `ho` (the last output). Absent (nil, sent as empty
/// or missing) = the default.
fn decode_probe(r: &[&[u8]]) -> Result<ProbeState> {
    if r.len() < RECORD_FIELDS {
        return Ok(ProbeState::default());
    }
    let count = |b: &[u8], what: &str| -> Result<u32> {
        if b.is_empty() { Ok(0) } else { number(b, what) }
    };
    Ok(ProbeState {
        failing: r[9] == b"1",
        failures: count(r[10], "probe failures")?,
        passes: count(r[11], "probe passes")?,
        failing_since: if r[12].is_empty() {
            None
        } else {
            Some(number(r[12], "failing since")?)
        },
        output: String::from_utf8_lossy(r[13]).into_owned(),
    })
}

/// Fields of an agent's record as a snapshot reads them.
pub const RECORD_FIELDS: usize = 14;

/// An agent from its record's fields: `[id, reg, tel, st, od, ls, ttl, ra,
/// rev, hx, hf, hp, hs, ho]` (the last five, the probe state, may be
/// missing; a missing field is empty).
pub fn decode_record(r: &[&[u8]]) -> Result<Agent> {
    if r.len() < RECORD_FIELDS - 5 {
        return Err(corrupt("short record"));
    }
    let reg = pb::AgentInfo::decode(r[1]).map_err(|_| corrupt("registration"))?;
    let id: AgentId = std::str::from_utf8(r[0])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt("agent id"))?;
    // The blob holds the registration; the script's fields hold the rest.
    Ok(Agent {
        telemetry: decode_telemetry(r[2])?,
        status: status(r[3])?,
        overdue: r[4] == b"1",
        registered_at: number(r[7], "registered_at")?,
        last_seen_ms: number(r[5], "last_seen")?,
        ttl_secs: number(r[6], "ttl")?,
        revision: number(r[8], "agent revision")?,
        probe: decode_probe(r)?,
        ..convert::agent_from_wire(id, reg).ok_or_else(|| corrupt("agent type"))?
    })
}

/// A change message (also a snapshot record, whose kind is `SNAPSHOT`):
/// `[rev, kind, prev, at, ` then the record's fields ([`decode_record`])`]`.
/// Returns the change and whether it was a snapshot record.
pub fn decode_change(bytes: &[u8]) -> Result<(Change, bool)> {
    let owned = fields_of(bytes, &[CHANGE_FIELDS_V1, CHANGE_FIELDS])?;
    let f: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    let kind = match f[1] {
        b"REGISTERED" => ChangeKind::Registered,
        b"UPDATED" => ChangeKind::Updated,
        b"STATUS_CHANGED" => ChangeKind::StatusChanged {
            previous: status(f[2])?,
        },
        b"DEREGISTERED" => ChangeKind::Deregistered,
        b"EXPIRED" => ChangeKind::Expired,
        b"TOUCHED" | b"SNAPSHOT" => ChangeKind::Touched,
        _ => return Err(corrupt("change kind")),
    };
    let change = Change {
        revision: number(f[0], "revision")?,
        kind,
        agent: Arc::new(decode_record(&f[4..])?),
        at: number(f[3], "timestamp")?,
    };
    Ok((change, f[1] == b"SNAPSHOT"))
}

/// A history entry: the change message and the registration it replaced
/// (empty unless a re-registration), which gives the agent's selection
/// fields before the change.
pub fn decode_replayed(message: &[u8], previous: &[u8]) -> Result<Replayed> {
    let (change, _) = decode_change(message)?;
    let before = if previous.is_empty() {
        None
    } else {
        let reg = pb::AgentInfo::decode(previous).map_err(|_| corrupt("previous registration"))?;
        let old = convert::agent_from_wire(change.agent.id, reg)
            .ok_or_else(|| corrupt("previous agent type"))?;
        Some(Arc::new(Agent {
            agent_type: old.agent_type,
            capabilities: old.capabilities,
            namespace: old.namespace,
            ..(*change.agent).clone()
        }))
    };
    Ok(Replayed { change, before })
}

/// A notification message: `[nid, agent_id, at, payload]`.
pub fn decode_notification(bytes: &[u8]) -> Result<Notification> {
    let f = fields(bytes, 4)?;
    let payload =
        pb::AgentNotification::decode(f[3].as_slice()).map_err(|_| corrupt("notification"))?;
    Ok(Notification {
        id: number(&f[0], "notification id")?,
        agent_id: std::str::from_utf8(&f[1])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("notification agent id"))?,
        kind: payload.notification_type,
        message: payload.message,
        metadata: payload.metadata.into_iter().collect(),
        at: number(&f[2], "notification time")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_text_round_trips_and_is_canonical() {
        let t = Telemetry {
            success_rate: 0.123_456_789_012_345_68,
            avg_duration_ms: 12,
            total_executions: 100,
            failed_executions: 3,
            last_execution_at: 1_700_000_000,
        };
        assert_eq!(
            decode_telemetry(encode_telemetry(&t).as_bytes()).unwrap(),
            t
        );
        let zero = Telemetry::default();
        let negative_zero = Telemetry {
            success_rate: -0.0,
            ..zero
        };
        assert_eq!(encode_telemetry(&zero), encode_telemetry(&negative_zero));
    }

    fn message(probe: &[&str]) -> Vec<u8> {
        let reg = encode_registration(&crate::domain::agent::tests::registration());
        let tel = encode_telemetry(&Telemetry::default());
        let id = AgentId::new_v4().to_string();
        let mut items: Vec<rmpv::Value> = [
            "7", "TOUCHED", "0", "1000", &id, "", &tel, "1", "0", "1000", "10", "1", "5",
        ]
        .iter()
        .map(|s| rmpv::Value::from(*s))
        .collect();
        items[5] = rmpv::Value::Binary(reg);
        items.extend(probe.iter().map(|s| rmpv::Value::from(*s)));
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &rmpv::Value::Array(items)).unwrap();
        out
    }

    #[test]
    fn change_messages_with_and_without_probe_state_decode() {
        let (old, _) = decode_change(&message(&[])).unwrap();
        assert_eq!(old.agent.probe, ProbeState::default());
        let (new, _) = decode_change(&message(&["1", "3", "0", "900", "HTTP 503"])).unwrap();
        assert_eq!(
            new.agent.probe,
            ProbeState {
                failing: true,
                failures: 3,
                passes: 0,
                failing_since: Some(900),
                output: "HTTP 503".into(),
            }
        );
        let (fresh, _) = decode_change(&message(&["", "", "", "", ""])).unwrap();
        assert_eq!(fresh.agent.probe, ProbeState::default());
        assert!(decode_change(&message(&["1"])).is_err());
    }

    #[test]
    fn corrupt_messages_are_errors_not_panics() {
        assert!(decode_change(b"").is_err());
        assert!(decode_change(&[0x93, 0xa1, b'1', 0xa1, b'2', 0xa1, b'3']).is_err());
        assert!(decode_notification(b"\xff\xff").is_err());
    }
}
