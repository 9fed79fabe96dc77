//! Active health checks (BEHAVIOUR.md §10): the check an agent asked for, as
//! granted, and the pure rule that moves its probe state (hysteresis,
//! liveness by probes, removal after continuous failure). The memory store
//! and the unit tests use this rule; the Redis store applies the same rule in
//! `lua/probe.lua`.

use std::net::IpAddr;

use super::{Error, Millis, Result};

/// What a check probes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// `grpc.health.v1.Health/Check` of service `path`: SERVING passes.
    Grpc = 1,
    /// `GET http://<target><path>`: any 2xx passes, redirects not followed.
    Http = 2,
    /// A TCP connection succeeds.
    Tcp = 3,
}

impl CheckKind {
    /// The wire number, or `None` for NONE and unknown numbers.
    pub fn from_wire(n: i32) -> Option<Self> {
        [Self::Grpc, Self::Http, Self::Tcp]
            .into_iter()
            .find(|k| *k as i32 == n)
    }

    /// The metrics label (`grpc`, `http`, `tcp`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
            Self::Tcp => "tcp",
        }
    }
}

/// A check as granted: every default filled in, validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// What it probes.
    pub kind: CheckKind,
    /// `host:port` probed (the agent's endpoint when none was given).
    pub target: String,
    /// gRPC service name, or HTTP path (starting with `/`).
    pub path: String,
    /// Seconds between probes, 1..=3600.
    pub interval_secs: u32,
    /// Seconds a probe may take, 1..=interval.
    pub timeout_secs: u32,
    /// Consecutive failures that turn the agent UNHEALTHY, 1..=10.
    pub failures_before_unhealthy: u32,
    /// Consecutive passes that make it healthy again, 1..=10.
    pub successes_before_healthy: u32,
    /// Seconds of continuous failure after which the agent is removed
    /// (0 = never).
    pub deregister_after_secs: u32,
}

/// A check as a client asked for it: the wire fields, unvalidated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckRequest {
    /// Wire kind number (0 = NONE).
    pub kind: i32,
    /// `host:port`, or empty for the endpoint.
    pub target: String,
    /// Service name or path.
    pub path: String,
    /// Seconds, 0 = 10.
    pub interval_seconds: i32,
    /// Seconds, 0 = min(2, interval).
    pub timeout_seconds: i32,
    /// 0 = 3.
    pub failures_before_unhealthy: i32,
    /// 0 = 2.
    pub successes_before_healthy: i32,
    /// 0 = never.
    pub deregister_after_seconds: i32,
}

/// Longest interval, in seconds.
pub const MAX_INTERVAL_SECS: u32 = 3600;
/// Longest HTTP path or gRPC service name, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

fn in_range(field: &'static str, value: i32, default: u32, max: u32) -> Result<u32> {
    match u32::try_from(value) {
        Ok(0) => Ok(default),
        Ok(n) if n <= max => Ok(n),
        _ => Err(Error::invalid(
            field,
            format!("must be 0 (default {default}) or 1 to {max}"),
        )),
    }
}

/// Validates a requested check and fills in its defaults (BEHAVIOUR.md
/// §10). `endpoint` is the agent's (already validated) endpoint, used when
/// the target is empty. `NONE` means no check.
///
/// # Errors
/// `InvalidArgument` naming `health_check.<field>`.
pub fn grant(req: CheckRequest, endpoint: &str) -> Result<Option<HealthCheck>> {
    let kind = match req.kind {
        0 => return Ok(None),
        n => CheckKind::from_wire(n)
            .ok_or_else(|| Error::invalid("health_check.kind", "must be GRPC, HTTP or TCP"))?,
    };
    let target = if req.target.is_empty() {
        if endpoint.is_empty() {
            return Err(Error::invalid(
                "health_check.target",
                "is empty and the agent has no endpoint to check",
            ));
        }
        endpoint.to_owned()
    } else {
        super::validate::endpoint(req.target)
            .map_err(|_| Error::invalid("health_check.target", "must be host:port"))?
    };
    let path = match (kind, req.path.is_empty()) {
        (CheckKind::Http, true) => "/health".to_owned(),
        (_, _) => req.path,
    };
    if path.len() > MAX_PATH_BYTES || path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid(
            "health_check.path",
            format!("at most {MAX_PATH_BYTES} bytes without spaces or control characters"),
        ));
    }
    if kind == CheckKind::Http && !path.starts_with('/') {
        return Err(Error::invalid("health_check.path", "must start with /"));
    }
    let interval = in_range(
        "health_check.interval_seconds",
        req.interval_seconds,
        10,
        MAX_INTERVAL_SECS,
    )?;
    let timeout = in_range(
        "health_check.timeout_seconds",
        req.timeout_seconds,
        interval.min(2),
        interval,
    )?;
    let failures = in_range(
        "health_check.failures_before_unhealthy",
        req.failures_before_unhealthy,
        3,
        10,
    )?;
    let successes = in_range(
        "health_check.successes_before_healthy",
        req.successes_before_healthy,
        2,
        10,
    )?;
    let deregister_after = match u32::try_from(req.deregister_after_seconds) {
        Ok(0) => 0,
        Ok(n) if n >= interval => n,
        _ => {
            return Err(Error::invalid(
                "health_check.deregister_after_seconds",
                "must be 0 (never) or at least interval_seconds",
            ));
        }
    };
    Ok(Some(HealthCheck {
        kind,
        target,
        path,
        interval_secs: interval,
        timeout_secs: timeout,
        failures_before_unhealthy: failures,
        successes_before_healthy: successes,
        deregister_after_secs: deregister_after,
    }))
}

/// Address ranges never probed (`--health-check-deny`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenyList(pub Vec<ipnet::IpNet>);

impl DenyList {
    /// Whether `ip` is in a denied range (IPv4-mapped IPv6 addresses count
    /// as their IPv4 address).
    pub fn denies(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Refuses a check whose target is an address literal in the list.
    ///
    /// # Errors
    /// `InvalidArgument` on `health_check.target`.
    pub fn admit(&self, check: &HealthCheck) -> Result<()> {
        if let Some(ip) = literal_host(&check.target)
            && self.denies(ip)
        {
            return Err(Error::invalid(
                "health_check.target",
                "is in a range the registry never probes (--health-check-deny)",
            ));
        }
        Ok(())
    }
}

/// The address of `host:port` when the host is an IP literal (`[::1]:80`
/// included).
pub fn literal_host(target: &str) -> Option<IpAddr> {
    let (host, _) = target.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

/// The probe state of an agent with a check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeState {
    /// Consecutive failed probes.
    pub failures: u32,
    /// Consecutive passed probes.
    pub passes: u32,
    /// Whether the check counts as failing (the agent is UNHEALTHY).
    pub failing: bool,
    /// Time of the first failure of the current run of failures.
    pub failing_since: Option<Millis>,
    /// What the last probe found (`HTTP 503`, `SERVING`, `timeout`).
    pub output: String,
}

/// What one probe result does to the probe state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeStep {
    /// The state after it.
    pub state: ProbeState,
    /// Whether it renews the agent's deadline (a pass).
    pub renews: bool,
    /// Whether the agent is to be removed (failing for
    /// `deregister_after_secs`).
    pub remove: bool,
}

impl HealthCheck {
    /// The rule: a probe result `passed` with `output` at `now`, applied to
    /// `state` (BEHAVIOUR.md §10).
    pub fn step(&self, state: &ProbeState, passed: bool, output: String, now: Millis) -> ProbeStep {
        if passed {
            let passes = state.passes.saturating_add(1);
            ProbeStep {
                state: ProbeState {
                    failures: 0,
                    passes,
                    failing: state.failing && passes < self.successes_before_healthy,
                    failing_since: None,
                    output,
                },
                renews: true,
                remove: false,
            }
        } else {
            let failures = state.failures.saturating_add(1);
            let since = state.failing_since.unwrap_or(now);
            let remove = self.deregister_after_secs > 0
                && now - since >= i64::from(self.deregister_after_secs) * 1000;
            ProbeStep {
                state: ProbeState {
                    failures,
                    passes: 0,
                    failing: state.failing || failures >= self.failures_before_unhealthy,
                    failing_since: Some(since),
                    output,
                },
                renews: false,
                remove,
            }
        }
    }

    /// `failures:successes:deregister_after_ms`: what the Redis record keeps
    /// so its probe script can apply the rule (field `hc`).
    pub fn script_params(&self) -> String {
        format!(
            "{}:{}:{}",
            self.failures_before_unhealthy,
            self.successes_before_healthy,
            u64::from(self.deregister_after_secs) * 1000
        )
    }
}

/// The replica among `members` that probes agent `id`: rendezvous
/// (highest random weight) hashing, so every replica that sees the same
/// members picks the same owner, and when a member leaves only its agents
/// move. `None` without members.
pub fn owner(members: &[String], id: super::AgentId) -> Option<&str> {
    members
        .iter()
        .max_by_key(|m| (weight(m.as_bytes(), id.as_bytes()), m.as_str()))
        .map(String::as_str)
}

/// FNV-1a over both inputs, then a 64-bit finaliser (splitmix64): stable
/// across processes, versions and platforms, unlike std's hasher.
fn weight(member: &[u8], agent: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.iter().chain([0xff].iter()).chain(agent) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests;
