//! An agent's record and the rules that move it: creation, re-registration,
//! heartbeats and the overdue transition, plus the status rule (BEHAVIOUR.md
//! §4). Stores call these so every store applies the same rules.

use compact_str::CompactString;

use super::{
    AgentId, AgentType, Labels, Millis, Revision, Status,
    check::{HealthCheck, ProbeState},
    to_secs,
};

/// Execution statistics an agent reports about itself.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Telemetry {
    /// Fraction of successful executions, `0.0..=1.0`.
    pub success_rate: f64,
    /// Mean execution time in milliseconds, `>= 0`.
    pub avg_duration_ms: i64,
    /// Executions so far, `>= 0`.
    pub total_executions: i64,
    /// Failed executions, `0..=total_executions`.
    pub failed_executions: i64,
    /// Unix seconds of the last execution, 0 = never.
    pub last_execution_at: i64,
}

impl Telemetry {
    /// The status rule: no executions yet → HEALTHY; success rate below 0.3 →
    /// UNHEALTHY; below 0.5 → DEGRADED; else HEALTHY.
    pub fn status(&self) -> Status {
        if self.total_executions == 0 {
            Status::Healthy
        } else if self.success_rate < 0.3 {
            Status::Unhealthy
        } else if self.success_rate < 0.5 {
            Status::Degraded
        } else {
            Status::Healthy
        }
    }
}

/// What a client asks to be registered as; validated before it gets here.
#[derive(Clone, Debug, PartialEq)]
pub struct Registration {
    /// Its type.
    pub agent_type: AgentType,
    /// Distinct capabilities, in the order first given.
    pub capabilities: Vec<CompactString>,
    /// Free-form labels.
    pub metadata: Labels,
    /// Namespace (`default` when none was given).
    pub namespace: CompactString,
    /// Cluster (`local` when none was given).
    pub cluster: CompactString,
    /// Version (`1.0.0` when none was given).
    pub version: CompactString,
    /// `host:port` it serves on, or empty.
    pub endpoint: CompactString,
    /// Initial telemetry, if any.
    pub telemetry: Option<Telemetry>,
    /// Heartbeat timeout granted, in seconds (already clamped).
    pub ttl_secs: u32,
    /// The active health check granted, if any (BEHAVIOUR.md §10).
    pub health_check: Option<HealthCheck>,
}

/// The metadata key legacy readers take an agent's address from.
pub const ENDPOINT_METADATA_KEY: &str = "endpoint";

impl Registration {
    /// Mirrors the endpoint both ways (BEHAVIOUR.md §7): an `endpoint` with
    /// no `metadata["endpoint"]` is copied there, and a valid
    /// `metadata["endpoint"]` (`host:port`) fills an empty `endpoint`. When
    /// both are given they are kept as sent. Runs after validation, so the
    /// mirrored entry does not count against the metadata limit.
    pub fn mirror_endpoint(&mut self) {
        match self.metadata.get(ENDPOINT_METADATA_KEY) {
            None if !self.endpoint.is_empty() => {
                self.metadata
                    .insert(ENDPOINT_METADATA_KEY.to_owned(), self.endpoint.clone());
            }
            Some(address) if self.endpoint.is_empty() => {
                if let Ok(valid) = super::validate::endpoint(address.as_str().to_owned()) {
                    self.endpoint = valid.into();
                }
            }
            _ => {}
        }
    }
}

/// A registered agent as the registry knows it. The token hash is not here:
/// it stays inside the store, so views, events and responses cannot leak it.
#[derive(Clone, Debug, PartialEq)]
pub struct Agent {
    /// Identity.
    pub id: AgentId,
    /// Type.
    pub agent_type: AgentType,
    /// Distinct capabilities.
    pub capabilities: Vec<CompactString>,
    /// Labels.
    pub metadata: Labels,
    /// Last reported telemetry (zeros when none was ever given).
    pub telemetry: Telemetry,
    /// Current status (UNHEALTHY while overdue).
    pub status: Status,
    /// Whether its heartbeat deadline passed (it awaits removal).
    pub overdue: bool,
    /// Unix seconds of its first registration; kept on re-registration.
    pub registered_at: i64,
    /// Exact time of the last Register/Heartbeat.
    pub last_seen_ms: Millis,
    /// Heartbeat timeout in seconds.
    pub ttl_secs: u32,
    /// Namespace.
    pub namespace: CompactString,
    /// Cluster.
    pub cluster: CompactString,
    /// Version.
    pub version: CompactString,
    /// Where it serves, or empty.
    pub endpoint: CompactString,
    /// Revision of its last change seen by watchers.
    pub revision: Revision,
    /// Its active health check as granted, if any.
    pub health_check: Option<HealthCheck>,
    /// What its probes found so far (default without a check).
    pub probe: ProbeState,
}

impl AsRef<Agent> for Agent {
    fn as_ref(&self) -> &Agent {
        self
    }
}

/// What a heartbeat changed, so the store emits exactly the right events.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatEffect {
    /// New telemetry differing from the old was given (UPDATED).
    pub telemetry_changed: bool,
    /// The status changed from this one (STATUS_CHANGED).
    pub previous_status: Option<Status>,
}

/// What a probe result changed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ProbeEffect {
    /// The status changed from this one (STATUS_CHANGED).
    pub previous_status: Option<Status>,
    /// The check failed for `deregister_after_seconds`: remove (EXPIRED).
    pub remove: bool,
}

/// The status rule with a check: UNHEALTHY while the check fails, else what
/// the telemetry gives.
pub fn status_of(telemetry: &Telemetry, probe: &ProbeState) -> Status {
    if probe.failing {
        Status::Unhealthy
    } else {
        telemetry.status()
    }
}

impl Agent {
    /// A new agent from a registration at `now` (revision 0 until the store
    /// assigns one).
    pub fn create(id: AgentId, reg: Registration, now: Millis) -> Self {
        let telemetry = reg.telemetry.unwrap_or_default();
        Self {
            id,
            agent_type: reg.agent_type,
            capabilities: reg.capabilities,
            metadata: reg.metadata,
            status: telemetry.status(),
            telemetry,
            overdue: false,
            registered_at: to_secs(now),
            last_seen_ms: now,
            ttl_secs: reg.ttl_secs,
            namespace: reg.namespace,
            cluster: reg.cluster,
            version: reg.version,
            endpoint: reg.endpoint,
            revision: 0,
            health_check: reg.health_check,
            probe: ProbeState::default(),
        }
    }

    /// This agent registered again under its id: everything replaced but the
    /// id and `registered_at`; telemetry kept when none is given.
    pub fn reregister(&self, reg: Registration, now: Millis) -> Self {
        let telemetry = reg.telemetry.unwrap_or(self.telemetry);
        Self {
            registered_at: self.registered_at,
            telemetry,
            ..Self::create(
                self.id,
                Registration {
                    telemetry: Some(telemetry),
                    ..reg
                },
                now,
            )
        }
    }

    /// A heartbeat at `now`: fresh liveness, telemetry replaced when given,
    /// status recomputed (which revives an overdue agent).
    pub fn heartbeat(&self, telemetry: Option<Telemetry>, now: Millis) -> (Self, HeartbeatEffect) {
        let telemetry_changed = telemetry.is_some_and(|t| t != self.telemetry);
        let telemetry = telemetry.unwrap_or(self.telemetry);
        let status = status_of(&telemetry, &self.probe);
        let next = Self {
            telemetry,
            status,
            overdue: false,
            last_seen_ms: now.max(self.last_seen_ms),
            ..self.clone()
        };
        let previous_status = (status != self.status).then_some(self.status);
        (
            next,
            HeartbeatEffect {
                telemetry_changed,
                previous_status,
            },
        )
    }

    /// A probe result at `now` (BEHAVIOUR.md §10): the probe state moves by
    /// the check's rule, a pass renews liveness as a heartbeat does (and
    /// revives an overdue agent), the status is recomputed. `None` when the
    /// agent has no check (a result that arrived after it was re-registered
    /// without one).
    pub fn probed(&self, passed: bool, output: String, now: Millis) -> Option<(Self, ProbeEffect)> {
        let check = self.health_check.as_ref()?;
        let step = check.step(&self.probe, passed, output, now);
        let overdue = self.overdue && !step.renews;
        let status = if overdue {
            Status::Unhealthy
        } else {
            status_of(&self.telemetry, &step.state)
        };
        let last_seen_ms = if step.renews {
            now.max(self.last_seen_ms)
        } else {
            self.last_seen_ms
        };
        let next = Self {
            status,
            overdue,
            last_seen_ms,
            probe: step.state,
            ..self.clone()
        };
        let effect = ProbeEffect {
            previous_status: (status != self.status).then_some(self.status),
            remove: step.remove,
        };
        Some((next, effect))
    }

    /// The heartbeat deadline passed: the agent turns UNHEALTHY. Returns the
    /// new record and the previous status when the status changed.
    pub fn mark_overdue(&self) -> (Self, Option<Status>) {
        let next = Self {
            status: Status::Unhealthy,
            overdue: true,
            ..self.clone()
        };
        let previous = (self.status != Status::Unhealthy).then_some(self.status);
        (next, previous)
    }

    /// When it turns UNHEALTHY without a heartbeat (exact).
    pub fn deadline_ms(&self) -> Millis {
        self.last_seen_ms + i64::from(self.ttl_secs) * 1000
    }

    /// When it is removed without a heartbeat (exact).
    pub fn removal_ms(&self, grace: std::time::Duration) -> Millis {
        self.deadline_ms() + i64::try_from(grace.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// The next transition due for this agent: the deadline while live, the
    /// removal time while overdue.
    pub fn next_due_ms(&self, grace: std::time::Duration) -> Millis {
        if self.overdue {
            self.removal_ms(grace)
        } else {
            self.deadline_ms()
        }
    }

    /// `last_seen` in whole seconds, as on the wire.
    pub fn last_seen(&self) -> i64 {
        to_secs(self.last_seen_ms)
    }

    /// `expires_at` in whole seconds, as on the wire: `last_seen + ttl`.
    pub fn expires_at(&self) -> i64 {
        self.last_seen() + i64::from(self.ttl_secs)
    }

    /// Whether it has every one of `capabilities`.
    pub fn has_all(&self, capabilities: &[String]) -> bool {
        capabilities
            .iter()
            .all(|c| self.capabilities.iter().any(|have| have == c))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn registration() -> Registration {
        Registration {
            agent_type: AgentType::Worker,
            capabilities: vec!["a".into()],
            metadata: Labels::new(),
            namespace: "default".into(),
            cluster: "local".into(),
            version: "1.0.0".into(),
            endpoint: Default::default(),
            telemetry: None,
            ttl_secs: 10,
            health_check: None,
        }
    }

    fn telemetry(rate: f64, total: i64) -> Telemetry {
        Telemetry {
            success_rate: rate,
            total_executions: total,
            ..Telemetry::default()
        }
    }

    #[test]
    fn status_rule_boundaries() {
        assert_eq!(telemetry(0.0, 0).status(), Status::Healthy);
        assert_eq!(telemetry(0.29, 5).status(), Status::Unhealthy);
        assert_eq!(telemetry(0.3, 5).status(), Status::Degraded);
        assert_eq!(telemetry(0.49, 5).status(), Status::Degraded);
        assert_eq!(telemetry(0.5, 5).status(), Status::Healthy);
    }

    #[test]
    fn heartbeat_without_telemetry_keeps_it_and_stays_healthy() {
        let a = Agent::create(AgentId::new_v4(), registration(), 1_000);
        let (b, effect) = a.heartbeat(None, 5_000);
        assert_eq!(b.status, Status::Healthy);
        assert_eq!(b.last_seen_ms, 5_000);
        assert_eq!(
            effect,
            HeartbeatEffect {
                telemetry_changed: false,
                previous_status: None
            }
        );
    }

    #[test]
    fn heartbeat_reports_telemetry_and_status_changes() {
        let a = Agent::create(AgentId::new_v4(), registration(), 1_000);
        let (b, effect) = a.heartbeat(Some(telemetry(0.1, 10)), 2_000);
        assert_eq!(b.status, Status::Unhealthy);
        assert!(effect.telemetry_changed);
        assert_eq!(effect.previous_status, Some(Status::Healthy));
        let (_, same) = b.heartbeat(Some(telemetry(0.1, 10)), 3_000);
        assert!(!same.telemetry_changed);
        assert_eq!(same.previous_status, None);
    }

    #[test]
    fn overdue_then_heartbeat_revives() {
        let a = Agent::create(AgentId::new_v4(), registration(), 1_000);
        let (o, prev) = a.mark_overdue();
        assert_eq!(
            (o.status, o.overdue, prev),
            (Status::Unhealthy, true, Some(Status::Healthy))
        );
        let (r, effect) = o.heartbeat(None, 2_000);
        assert_eq!((r.status, r.overdue), (Status::Healthy, false));
        assert_eq!(effect.previous_status, Some(Status::Unhealthy));
    }

    #[test]
    fn reregister_keeps_registered_at_and_old_telemetry_when_none_given() {
        let mut reg = registration();
        reg.telemetry = Some(telemetry(0.4, 10));
        let a = Agent::create(AgentId::new_v4(), reg, 1_000);
        let mut again = registration();
        again.namespace = "other".into();
        let b = a.reregister(again, 9_000);
        assert_eq!(b.registered_at, 1);
        assert_eq!(b.last_seen_ms, 9_000);
        assert_eq!(b.namespace, "other");
        assert_eq!(b.telemetry, a.telemetry);
        assert_eq!(b.status, Status::Degraded);
    }

    fn checked() -> Agent {
        let mut reg = registration();
        reg.health_check = crate::domain::check::grant(
            crate::domain::check::CheckRequest {
                kind: 3,
                target: "a:1".into(),
                interval_seconds: 1,
                failures_before_unhealthy: 1,
                successes_before_healthy: 1,
                ..Default::default()
            },
            "",
        )
        .unwrap();
        Agent::create(AgentId::new_v4(), reg, 1_000)
    }

    #[test]
    fn a_failing_check_overrides_telemetry_and_a_pass_revives() {
        let a = checked();
        let (down, effect) = a.probed(false, "timeout".into(), 2_000).unwrap();
        assert_eq!(effect.previous_status, Some(Status::Healthy));
        assert_eq!((down.status, down.last_seen_ms), (Status::Unhealthy, 1_000));
        let (beat, effect) = down.heartbeat(Some(telemetry(1.0, 10)), 3_000);
        assert_eq!(
            (beat.status, effect.previous_status),
            (Status::Unhealthy, None)
        );
        let (overdue, _) = beat.mark_overdue();
        let (up, effect) = overdue.probed(true, "connected".into(), 20_000).unwrap();
        assert_eq!(effect.previous_status, Some(Status::Unhealthy));
        assert_eq!(
            (up.status, up.overdue, up.last_seen_ms),
            (Status::Healthy, false, 20_000)
        );
        assert_eq!(up.probe.output, "connected");
        let plain = Agent::create(AgentId::new_v4(), registration(), 0);
        assert!(plain.probed(true, String::new(), 1).is_none());
    }

    #[test]
    fn deadlines_count_from_the_exact_last_seen() {
        let a = Agent::create(AgentId::new_v4(), registration(), 1_500);
        assert_eq!(a.deadline_ms(), 11_500);
        assert_eq!(a.removal_ms(std::time::Duration::from_secs(2)), 13_500);
        assert_eq!((a.last_seen(), a.expires_at()), (1, 11));
    }
}
