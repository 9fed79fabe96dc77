//! The prober: runs the active health checks (BEHAVIOUR.md §10) of the
//! agents this replica owns. Replicas announce themselves in the store every
//! second ([`Store::probers`]); each agent's prober is chosen among the live
//! ones by rendezvous hashing ([`check::owner`]), so exactly one replica
//! probes it, and when a replica stops its agents move to the others within
//! a few seconds. Results go through the store like heartbeats; the store's
//! atomic step decides every transition, so a duplicate result (two owners
//! for a moment while membership changes) cannot double an event.
//!
//! Depends on: domain (check, clock), store, view, metrics.

pub mod probe;

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{
        AgentId,
        check::{self, DenyList, HealthCheck},
        clock::Clock,
        error_chain,
    },
    metrics::Metrics,
    store::{ProbeCommand, Store},
    view::View,
};

/// How often the prober looks for due probes.
const TICK: Duration = Duration::from_millis(100);
/// How often a replica announces itself and reads the membership.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// Default bound of concurrent probes per replica.
pub const DEFAULT_CONCURRENCY: usize = 256;

/// The prober's settings.
#[derive(Clone, Debug)]
pub struct ProberConfig {
    /// Most probes in flight at once on this replica.
    pub concurrency: usize,
    /// Addresses never probed.
    pub deny: Arc<DenyList>,
}

/// When an agent's next probe is due, and whether one is running.
#[derive(Debug)]
struct Slot {
    next_at: Instant,
    running: bool,
}

/// Runs until `shutdown`, then withdraws this replica from the membership.
pub async fn run<S: Store>(
    store: Arc<S>,
    view: Arc<View>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    config: ProberConfig,
    shutdown: CancellationToken,
) {
    let me = AgentId::new_v4().to_string();
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut members: Vec<String> = Vec::new();
    let mut announced_at: Option<Instant> = None;
    let mut slots: HashMap<AgentId, Slot> = HashMap::new();
    let mut running: JoinSet<AgentId> = JoinSet::new();
    // Due probes waiting for a permit, oldest first.
    let mut ready: VecDeque<(AgentId, HealthCheck)> = VecDeque::new();
    let spawn = |agent_id: AgentId, check: HealthCheck, permit: OwnedSemaphorePermit| {
        probe_one(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            config.deny.clone(),
            agent_id,
            check,
            permit,
        )
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok(id) = done
                    && let Some(slot) = slots.get_mut(&id)
                {
                    slot.running = false;
                }
                // A permit is free: the next due probe need not wait a tick.
                start_ready(&mut ready, &mut running, &permits, &spawn);
                continue;
            }
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        if announced_at.is_none_or(|at| now.duration_since(at) >= ANNOUNCE_EVERY) {
            announced_at = Some(now);
            match store.probers(&me, clock.now(), false).await {
                Ok(live) => members = live,
                Err(error) => {
                    // Results could not be recorded either: probe nothing
                    // until the store answers (others take over meanwhile).
                    members.clear();
                    tracing::debug!(error = %error_chain(&error), "prober announcement failed");
                }
            }
        }
        if !members.contains(&me) {
            continue;
        }
        let mut present = 0usize;
        for agent in view.with_checks() {
            let Some(check) = agent.health_check.clone() else {
                continue;
            };
            if check::owner(&members, agent.id) != Some(me.as_str()) {
                slots.remove(&agent.id);
                continue;
            }
            present += 1;
            let slot = slots.entry(agent.id).or_insert(Slot {
                next_at: now,
                running: false,
            });
            if slot.running || slot.next_at > now {
                continue;
            }
            let interval = Duration::from_secs(u64::from(check.interval_secs));
            slot.next_at = (slot.next_at + interval).max(now);
            slot.running = true;
            ready.push_back((agent.id, check));
        }
        start_ready(&mut ready, &mut running, &permits, &spawn);
        if slots.len() > present {
            // Agents gone or handed to another replica.
            let owned: std::collections::HashSet<AgentId> = view
                .with_checks()
                .iter()
                .filter(|a| check::owner(&members, a.id) == Some(me.as_str()))
                .map(|a| a.id)
                .collect();
            slots.retain(|id, slot| slot.running || owned.contains(id));
        }
    }
    running.shutdown().await;
    if let Err(error) = store.probers(&me, clock.now(), true).await {
        tracing::debug!(error = %error_chain(&error), "prober could not withdraw");
    }
}

/// Starts queued probes while permits are free.
fn start_ready<F, Fut>(
    ready: &mut VecDeque<(AgentId, HealthCheck)>,
    running: &mut JoinSet<AgentId>,
    permits: &Arc<Semaphore>,
    spawn: &F,
) where
    F: Fn(AgentId, HealthCheck, OwnedSemaphorePermit) -> Fut,
    Fut: std::future::Future<Output = AgentId> + Send + 'static,
{
    while !ready.is_empty() {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            return; // at the concurrency bound: the rest wait for a permit
        };
        if let Some((agent_id, check)) = ready.pop_front() {
            running.spawn(spawn(agent_id, check, permit));
        }
    }
}

async fn probe_one<S: Store>(
    store: Arc<S>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    deny: Arc<DenyList>,
    agent_id: AgentId,
    check: HealthCheck,
    _permit: OwnedSemaphorePermit,
) -> AgentId {
    let started = std::time::Instant::now();
    let outcome = probe::probe(&check, &deny).await;
    metrics.observe_probe(
        check.kind.label(),
        outcome.passed,
        started.elapsed().as_secs_f64(),
    );
    let cmd = ProbeCommand {
        agent_id,
        passed: outcome.passed,
        output: outcome.output,
    };
    match store.record_probe(cmd, clock.now()).await {
        Ok(Some(kind)) if kind.name().is_some() => {
            tracing::info!(agent_id = %agent_id, event = ?kind, "health check transition");
        }
        Ok(_) => {}
        Err(error) => {
            metrics.store_errors.inc();
            tracing::debug!(agent_id = %agent_id, error = %error_chain(&error), "probe result not recorded");
        }
    }
    agent_id
}
