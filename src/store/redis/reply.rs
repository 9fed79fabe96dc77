//! Reading script replies, and what a Redis error means to a caller.

use std::sync::Arc;

use redis::Value;

use super::codec;
use crate::{
    domain::{Agent, AgentId, Error, Result, Revision},
    store::Ownership,
};

pub(super) fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::unavailable(source)
}

pub(super) fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::internal(source)
}

/// A Redis error is `Unavailable` when retrying later can help (I/O,
/// timeouts, a server loading or busy, failover); anything else is a bug.
pub(super) fn classify(error: redis::RedisError) -> Error {
    let retryable_code = matches!(
        error.code(),
        Some(
            "LOADING"
                | "BUSY"
                | "TRYAGAIN"
                | "MASTERDOWN"
                | "READONLY"
                | "CLUSTERDOWN"
                | "NOSCRIPT"
        )
    );
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error()
        || retryable_code
    {
        unavailable(error)
    } else {
        internal(error)
    }
}

pub(super) fn items(value: Value) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(internal(format!("unexpected script reply {other:?}"))),
    }
}

pub(super) fn bytes(value: &Value) -> Result<&[u8]> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        other => Err(internal(format!("unexpected script reply item {other:?}"))),
    }
}

pub(super) fn int(value: &Value) -> Result<i64> {
    match value {
        Value::Int(i) => Ok(*i),
        other => std::str::from_utf8(bytes(other)?)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| internal(format!("not a number: {other:?}"))),
    }
}

/// The status word a script starts its reply with, as an error when it is
/// a refusal.
pub(super) fn check(reply: &[Value], id: AgentId) -> Result<()> {
    let word = reply.first().map(bytes).transpose()?.unwrap_or(b"");
    match word {
        b"OK" => Ok(()),
        b"NOT_FOUND" => Err(Error::NotFound(id)),
        b"UNAUTHENTICATED" => Err(Error::Unauthenticated),
        b"PERMISSION_DENIED" => Err(Error::PermissionDenied),
        b"BAD_AFTER" => Err(Error::invalid(
            "after_notification_id",
            "is not a notification id of this agent",
        )),
        other => Err(internal(format!(
            "script answered {}",
            String::from_utf8_lossy(other)
        ))),
    }
}

pub(super) fn agent_of(message: &Value) -> Result<(Arc<Agent>, Revision)> {
    let (change, _) = codec::decode_change(bytes(message)?)?;
    Ok((change.agent, change.revision))
}

pub(super) fn token_arg(owner: &Ownership) -> String {
    owner
        .presented
        .as_ref()
        .map(codec::encode_token)
        .unwrap_or_default()
}

/// The caller identity's owner key, `''` when anonymous.
pub(super) fn caller_arg(caller: Option<&crate::domain::TokenHash>) -> String {
    caller.map(codec::encode_token).unwrap_or_default()
}

pub(super) fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}
