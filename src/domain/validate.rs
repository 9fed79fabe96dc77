//! The input rules of BEHAVIOUR.md §2 on plain Rust values. Each check returns
//! `InvalidArgument` naming the request field, so the service can refuse a
//! malformed request before anything changes.

use std::collections::{BTreeMap, HashMap};

use super::{AgentId, AgentType, Error, Result, Status, Telemetry};

/// Most capabilities a request may carry (after removing duplicates).
pub const MAX_CAPABILITIES: usize = 64;
/// Longest capability, in bytes.
pub const MAX_CAPABILITY_BYTES: usize = 128;
/// Most metadata entries (and filters).
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY_BYTES: usize = 128;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_BYTES: usize = 1024;
/// Longest namespace, cluster or version, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;
/// Longest endpoint, in bytes.
pub const MAX_ENDPOINT_BYTES: usize = 255;
/// Longest notification type, in bytes.
pub const MAX_NOTIFICATION_TYPE_BYTES: usize = 64;
/// Longest notification message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Discover results when the client asks for 0.
pub const DEFAULT_MAX_RESULTS: usize = 5;
/// Most discover results.
pub const MAX_RESULTS_CAP: usize = 1000;
/// Largest List page.
pub const PAGE_SIZE_CAP: usize = 10_000;

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// An agent id in any standard UUID form.
///
/// # Errors
/// `InvalidArgument` on `field` when it is not a UUID.
pub fn agent_id(field: &'static str, s: &str) -> Result<AgentId> {
    s.parse()
        .map_err(|_| Error::invalid(field, format!("{:?} is not a UUID", truncate(s))))
}

/// Capabilities: duplicates removed keeping first occurrences; at most 64;
/// each 1..=128 bytes without control characters; at least one if `required`.
///
/// # Errors
/// `InvalidArgument` on `capabilities`.
pub fn capabilities(given: Vec<String>, required: bool) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(given.len().min(MAX_CAPABILITIES));
    for cap in given {
        if cap.is_empty() || cap.len() > MAX_CAPABILITY_BYTES || has_control(&cap) {
            return Err(Error::invalid(
                "capabilities",
                format!(
                    "each must be 1 to {MAX_CAPABILITY_BYTES} bytes without control characters"
                ),
            ));
        }
        if !out.contains(&cap) {
            if out.len() == MAX_CAPABILITIES {
                return Err(Error::invalid(
                    "capabilities",
                    format!("at most {MAX_CAPABILITIES} distinct entries"),
                ));
            }
            out.push(cap);
        }
    }
    if required && out.is_empty() {
        return Err(Error::invalid("capabilities", "at least one is required"));
    }
    Ok(out)
}

/// Metadata (or filters): at most 64 entries, keys 1..=128 bytes, values at
/// most 1024 bytes.
///
/// # Errors
/// `InvalidArgument` on `field`.
pub fn metadata(
    field: &'static str,
    given: HashMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    if given.len() > MAX_METADATA_ENTRIES {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    for (k, v) in &given {
        if k.is_empty() || k.len() > MAX_METADATA_KEY_BYTES {
            return Err(Error::invalid(
                field,
                format!("keys must be 1 to {MAX_METADATA_KEY_BYTES} bytes"),
            ));
        }
        if v.len() > MAX_METADATA_VALUE_BYTES {
            return Err(Error::invalid(
                field,
                format!(
                    "values must be at most {MAX_METADATA_VALUE_BYTES} bytes (key {:?})",
                    truncate(k)
                ),
            ));
        }
    }
    Ok(given.into_iter().collect())
}

/// Namespace, cluster or version: empty means `default`; at most 128 bytes
/// without control characters.
///
/// # Errors
/// `InvalidArgument` on `field`.
pub fn label(field: &'static str, given: String, default: &str) -> Result<String> {
    if given.len() > MAX_LABEL_BYTES || has_control(&given) {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_LABEL_BYTES} bytes without control characters"),
        ));
    }
    Ok(if given.is_empty() {
        default.to_owned()
    } else {
        given
    })
}

/// A namespace, cluster or version to match (a filter, or WatchAgents'
/// `namespace`): what [`label`] accepts, without a default.
///
/// # Errors
/// `InvalidArgument` on `field`.
pub fn label_filter(field: &'static str, given: String) -> Result<String> {
    label(field, given, "")
}

/// A filter key: 1..=128 bytes without control characters.
///
/// # Errors
/// `InvalidArgument` on `filters`.
pub fn filter_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_METADATA_KEY_BYTES || has_control(key) {
        return Err(Error::invalid(
            "filters",
            format!("keys must be 1 to {MAX_METADATA_KEY_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
}

/// Endpoint: empty, or `host:port` with port 1..=65535, at most 255 bytes.
///
/// # Errors
/// `InvalidArgument` on `endpoint`.
pub fn endpoint(given: String) -> Result<String> {
    if given.is_empty() {
        return Ok(given);
    }
    let bad = || {
        Error::invalid(
            "endpoint",
            "must be host:port with port 1-65535, at most 255 bytes",
        )
    };
    if given.len() > MAX_ENDPOINT_BYTES
        || has_control(&given)
        || given.contains(char::is_whitespace)
    {
        return Err(bad());
    }
    let (host, port) = given.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = !port.starts_with('+') && port.parse::<u16>().is_ok_and(|p| p != 0);
    if host.is_empty() || !port_ok {
        return Err(bad());
    }
    Ok(given)
}

/// Telemetry: success rate finite in [0, 1]; counts and durations >= 0;
/// failed <= total.
///
/// # Errors
/// `InvalidArgument` on `telemetry.<field>`.
pub fn telemetry(t: Telemetry) -> Result<Telemetry> {
    if !t.success_rate.is_finite() || !(0.0..=1.0).contains(&t.success_rate) {
        return Err(Error::invalid(
            "telemetry.success_rate",
            "must be between 0 and 1",
        ));
    }
    for (field, value) in [
        ("telemetry.avg_duration_ms", t.avg_duration_ms),
        ("telemetry.total_executions", t.total_executions),
        ("telemetry.failed_executions", t.failed_executions),
        ("telemetry.last_execution_at", t.last_execution_at),
    ] {
        if value < 0 {
            return Err(Error::invalid(field, "must not be negative"));
        }
    }
    if t.failed_executions > t.total_executions {
        return Err(Error::invalid(
            "telemetry.failed_executions",
            "must not exceed total_executions",
        ));
    }
    Ok(t)
}

/// Granted TTL: < 0 refused; 0 = `default`; else clamped to `[min, max]`.
///
/// # Errors
/// `InvalidArgument` on `ttl_seconds`.
pub fn ttl(requested: i32, default: u32, min: u32, max: u32) -> Result<u32> {
    match u32::try_from(requested) {
        Err(_) => Err(Error::invalid("ttl_seconds", "must not be negative")),
        Ok(0) => Ok(default),
        Ok(n) => Ok(n.clamp(min, max)),
    }
}

/// Discover result count: < 0 refused; 0 = 5; capped at 1000.
///
/// # Errors
/// `InvalidArgument` on `max_results`.
pub fn max_results(requested: i32) -> Result<usize> {
    match usize::try_from(requested) {
        Err(_) => Err(Error::invalid("max_results", "must not be negative")),
        Ok(0) => Ok(DEFAULT_MAX_RESULTS),
        Ok(n) => Ok(n.min(MAX_RESULTS_CAP)),
    }
}

/// List page size: < 0 refused; 0 = everything; capped at 10000.
///
/// # Errors
/// `InvalidArgument` on `page_size`.
pub fn page_size(requested: i32) -> Result<Option<usize>> {
    match usize::try_from(requested) {
        Err(_) => Err(Error::invalid("page_size", "must not be negative")),
        Ok(0) => Ok(None),
        Ok(n) => Ok(Some(n.min(PAGE_SIZE_CAP))),
    }
}

/// An `agent_type` filter value: the enum name in any case (`worker`) or
/// its number (`1`).
///
/// # Errors
/// `InvalidArgument` on `filters["agent_type"]`.
pub fn agent_type_filter(given: &str) -> Result<AgentType> {
    let by_number = given.parse::<i32>().ok().and_then(AgentType::from_wire);
    by_number
        .or_else(|| AgentType::parse_name(given))
        .ok_or_else(|| {
            Error::invalid(
                "filters[\"agent_type\"]",
                format!(
                    "{:?} is not WORKER, SCOUT, GUARD or ANALYST",
                    truncate(given)
                ),
            )
        })
}

/// A status filter value, any case.
///
/// # Errors
/// `InvalidArgument` on `filters["status"]`.
pub fn status_filter(given: &str) -> Result<Status> {
    Status::parse_name(given).ok_or_else(|| {
        Error::invalid(
            "filters[\"status\"]",
            "must be HEALTHY, UNHEALTHY or DEGRADED",
        )
    })
}

/// Notification type: empty = `INFO`, at most 64 bytes.
///
/// # Errors
/// `InvalidArgument` on `notification_type`.
pub fn notification_type(given: String) -> Result<String> {
    if given.len() > MAX_NOTIFICATION_TYPE_BYTES || has_control(&given) {
        return Err(Error::invalid(
            "notification_type",
            format!("at most {MAX_NOTIFICATION_TYPE_BYTES} bytes without control characters"),
        ));
    }
    Ok(if given.is_empty() {
        "INFO".to_owned()
    } else {
        given
    })
}

/// Notification message: at most 64 KiB.
///
/// # Errors
/// `InvalidArgument` on `message`.
pub fn message(given: String) -> Result<String> {
    if given.len() > MAX_MESSAGE_BYTES {
        return Err(Error::invalid("message", "at most 65536 bytes"));
    }
    Ok(given)
}

/// A notification id to resume after: empty, or a positive decimal counter.
/// Whether it belongs to the agent is the store's check.
///
/// # Errors
/// `InvalidArgument` on `after_notification_id`.
pub fn after_notification_id(given: &str) -> Result<Option<u64>> {
    if given.is_empty() {
        return Ok(None);
    }
    match given.parse::<u64>() {
        Ok(n) if n > 0 && given.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
        _ => Err(Error::invalid(
            "after_notification_id",
            "must be empty or a notification id of this agent",
        )),
    }
}

/// The first 64 characters of client text, for error messages.
fn truncate(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests;

/// Properties over arbitrary input: validation never panics, and accepts
/// exactly what BEHAVIOUR.md §2 accepts (each oracle is §2's rule written
/// out independently of the code above).
#[cfg(test)]
mod properties;
