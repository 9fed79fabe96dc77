//! Prometheus metrics (BEHAVIOUR.md §6), all prefixed `service_registry_`.
//! Built once by the server and passed down; counters are updated on the hot
//! path without any lock. A leaf: whoever owns the view and the mailboxes
//! pushes the gauges ([`Gauges`]) when scraped, so every replica reports the
//! whole population.
//!
//! Depends on: prometheus, domain (label names).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::HashMap;

use crate::domain::{AgentType, ChangeKind, Status, rpc::Rpc};

const NAMESPACE: &str = "service_registry";

/// Every metric of the registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Agents by type and status (set from the view at scrape time).
    pub agents: IntGaugeVec,
    /// Register calls by result.
    pub register: IntCounterVec,
    /// Heartbeat calls by result.
    pub heartbeat: IntCounterVec,
    /// Deregister calls by result.
    pub deregister: IntCounterVec,
    /// DiscoverAgents calls by result.
    pub discover: IntCounterVec,
    /// NotifyAgent calls by result.
    pub notify: IntCounterVec,
    /// Call latency by operation.
    pub latency: HistogramVec,
    /// Open WatchAgents streams (set at scrape time).
    pub watchers: IntGauge,
    /// Open SubscribeNotifications streams (set at scrape time).
    pub subscribers: IntGauge,
    /// Changes applied by this replica's view, by event type.
    pub events: IntCounterVec,
    /// Agents this replica's reaper removed.
    pub expired: IntCounter,
    /// Store calls that failed (unreachable or broken store).
    pub store_errors: IntCounter,
    /// Watch and notification streams ended with ABORTED.
    pub streams_aborted: IntCounter,
    /// Refused credentials and calls, by reason (`missing`, `invalid`,
    /// `expired`, `denied`).
    pub auth_failures: IntCounterVec,
    /// Changed certificate, key, CA, JWT bundle or policy files that could
    /// not be used (the old ones stay).
    pub reload_errors: IntCounter,
    /// Calls and connections refused by a limit, by limit.
    pub limited: IntCounterVec,
    /// Active health check probes by kind and result (`pass`, `fail`).
    pub health_checks: IntCounterVec,
    /// Probe duration by kind.
    pub health_check_duration: HistogramVec,
}

/// The gauges' values at scrape time, from whoever owns what they count.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    /// Agents per (type, status).
    pub population: HashMap<(AgentType, Status), usize>,
    /// Open WatchAgents streams.
    pub watchers: usize,
    /// Open SubscribeNotifications streams.
    pub subscribers: usize,
}

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// # Errors
    /// Only if two metrics had the same name (a bug).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help).namespace(NAMESPACE), &["result"])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let metrics = Self {
            register: counter(
                "register_total",
                "Register calls by result (ok or gRPC code)",
            )?,
            heartbeat: counter("heartbeat_total", "Heartbeat calls by result")?,
            deregister: counter("deregister_total", "Deregister calls by result")?,
            discover: counter("discover_total", "DiscoverAgents calls by result")?,
            notify: counter("notify_total", "NotifyAgent calls by result")?,
            agents: IntGaugeVec::new(
                Opts::new("agents_total", "Registered agents by type and status")
                    .namespace(NAMESPACE),
                &["agent_type", "status"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new("latency_seconds", "Call latency by operation")
                    .namespace(NAMESPACE)
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ]),
                &["operation"],
            )?,
            watchers: IntGauge::with_opts(
                Opts::new("watchers", "Open WatchAgents streams").namespace(NAMESPACE),
            )?,
            subscribers: IntGauge::with_opts(
                Opts::new("subscribers", "Open SubscribeNotifications streams")
                    .namespace(NAMESPACE),
            )?,
            events: IntCounterVec::new(
                Opts::new(
                    "events_total",
                    "Changes applied by this replica, by event type",
                )
                .namespace(NAMESPACE),
                &["event_type"],
            )?,
            expired: IntCounter::with_opts(
                Opts::new("expired_total", "Agents removed by this replica's reaper")
                    .namespace(NAMESPACE),
            )?,
            store_errors: IntCounter::with_opts(
                Opts::new("store_errors_total", "Store calls that failed").namespace(NAMESPACE),
            )?,
            streams_aborted: IntCounter::with_opts(
                Opts::new(
                    "watch_aborted_total",
                    "Watch and notification streams ended with ABORTED",
                )
                .namespace(NAMESPACE),
            )?,
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "auth_failures_total",
                    "Refused credentials and calls, by reason",
                )
                .namespace(NAMESPACE),
                &["reason"],
            )?,
            reload_errors: IntCounter::with_opts(
                Opts::new(
                    "reload_errors_total",
                    "Changed credential or policy files that could not be used",
                )
                .namespace(NAMESPACE),
            )?,
            limited: IntCounterVec::new(
                Opts::new("limited_total", "Calls and connections refused by a limit")
                    .namespace(NAMESPACE),
                &["limit"],
            )?,
            health_checks: IntCounterVec::new(
                Opts::new(
                    "health_checks_total",
                    "Active health check probes by kind and result",
                )
                .namespace(NAMESPACE),
                &["kind", "result"],
            )?,
            health_check_duration: HistogramVec::new(
                HistogramOpts::new(
                    "health_check_duration_seconds",
                    "Active health check probe duration by kind",
                )
                .namespace(NAMESPACE)
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
                &["kind"],
            )?,
            registry,
        };
        for c in [
            Box::new(metrics.agents.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.latency.clone()),
            Box::new(metrics.watchers.clone()),
            Box::new(metrics.subscribers.clone()),
            Box::new(metrics.events.clone()),
            Box::new(metrics.expired.clone()),
            Box::new(metrics.store_errors.clone()),
            Box::new(metrics.streams_aborted.clone()),
            Box::new(metrics.auth_failures.clone()),
            Box::new(metrics.reload_errors.clone()),
            Box::new(metrics.limited.clone()),
            Box::new(metrics.health_checks.clone()),
            Box::new(metrics.health_check_duration.clone()),
        ] {
            metrics.registry.register(c)?;
        }
        Ok(metrics)
    }

    /// Records one finished call of `rpc`: its latency, its result (`ok` or
    /// the gRPC code name) for the counted methods, and a store error when
    /// the result says the store failed.
    pub fn observe_call(&self, rpc: Rpc, result: &str, seconds: f64) {
        self.latency
            .with_label_values(&[rpc.operation()])
            .observe(seconds);
        let family = match rpc {
            Rpc::Register => Some(&self.register),
            Rpc::Heartbeat => Some(&self.heartbeat),
            Rpc::Deregister => Some(&self.deregister),
            Rpc::DiscoverAgents => Some(&self.discover),
            Rpc::NotifyAgent => Some(&self.notify),
            _ => None,
        };
        if let Some(family) = family {
            family.with_label_values(&[result]).inc();
        }
        if matches!(result, "UNAVAILABLE" | "INTERNAL") {
            self.store_errors.inc();
        }
    }

    /// Records one probe of an active check of `kind` (`grpc`, `http`,
    /// `tcp`).
    pub fn observe_probe(&self, kind: &str, passed: bool, seconds: f64) {
        let result = if passed { "pass" } else { "fail" };
        self.health_checks.with_label_values(&[kind, result]).inc();
        self.health_check_duration
            .with_label_values(&[kind])
            .observe(seconds);
    }

    /// Counts a change the view applied (keep-alives are not events).
    pub fn count_event(&self, kind: ChangeKind) {
        if let Some(label) = kind.name() {
            self.events.with_label_values(&[label]).inc();
        }
    }

    /// The Prometheus text exposition, with the gauges set to `gauges`.
    ///
    /// # Errors
    /// When encoding fails (a bug); the caller answers 500.
    pub fn render(&self, gauges: &Gauges) -> Result<String, prometheus::Error> {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        for agent_type in AgentType::ALL {
            for status in Status::ALL {
                let n = gauges
                    .population
                    .get(&(agent_type, status))
                    .copied()
                    .unwrap_or(0);
                self.agents
                    .with_label_values(&[agent_type.name(), status.name()])
                    .set(gauge(n));
            }
        }
        self.watchers.set(gauge(gauges.watchers));
        self.subscribers.set(gauge(gauges.subscribers));
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_labelled_by_result() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_call(Rpc::Register, "ok", 0.001);
        metrics.observe_call(Rpc::Register, "INVALID_ARGUMENT", 0.001);
        metrics.observe_call(Rpc::GetAgent, "UNAVAILABLE", 0.001);
        let text = metrics.render(&Gauges::default()).unwrap();
        assert!(text.contains("service_registry_store_errors_total 1"));
        assert!(text.contains("service_registry_register_total{result=\"ok\"} 1"));
        assert!(text.contains("service_registry_register_total{result=\"INVALID_ARGUMENT\"} 1"));
        assert!(
            text.contains(
                "service_registry_agents_total{agent_type=\"WORKER\",status=\"HEALTHY\"} 0"
            )
        );
        assert!(text.contains("service_registry_watchers 0"));
    }
}
