//! A scheduler's local copy of the agents it may pick, kept by WatchAgents.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::RegistryClient;
use crate::{
    backoff::backoff,
    convert,
    domain::{
        Agent, Status,
        query::{Strategy, order_discovered, status_selects},
    },
    pb::{self, agent_change_event::EventType},
    sync,
};

/// First wait before watching again; doubles up to [`RETRY_CAP`].
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct CacheState {
    agents: HashMap<String, pb::AgentInfo>,
    revision: u64,
}

/// Agents matching a watch selection, kept current in the background.
///
/// ```no_run
/// # async fn run() -> Result<(), agent_registry::client::ClientError> {
/// use std::time::Duration;
/// use agent_registry::{client::{DiscoveryCache, RegistryClient}, pb};
///
/// let client = RegistryClient::connect_lazy("http://127.0.0.1:50051")?;
/// let cache = DiscoveryCache::start(client, pb::WatchAgentsRequest::default());
/// cache.wait_synced(Duration::from_secs(5)).await;
/// if let Some(agent) = cache.pick(&["gpu"], pb::DiscoveryStrategy::RoundRobin) {
///     println!("send the task to {}", agent.endpoint);
/// }
/// # Ok(())
/// # }
/// ```
///
/// After any interruption (`ABORTED`, `UNAVAILABLE`, a dropped stream, a
/// replica restart) it resumes from the last revision it saw
/// (`start_revision`, BEHAVIOUR.md §11): the registry replays what it missed,
/// with no snapshot. Only when the registry's history no longer reaches back
/// that far (`OUT_OF_RANGE`) does it watch again with a fresh snapshot and
/// replace its contents at the snapshot's end. Either way it converges to the
/// registry's set. It asks for progress bookmarks, so even an idle cache
/// holds a recent revision to resume from. Picks are local: no call per pick.
#[derive(Debug)]
pub struct DiscoveryCache {
    state: Arc<RwLock<CacheState>>,
    synced: watch::Receiver<bool>,
    resyncs: Arc<AtomicU64>,
    resumes: Arc<AtomicU64>,
    rotation: AtomicU64,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl DiscoveryCache {
    /// Starts watching `selection` (its `send_initial_snapshot` is forced on).
    pub fn start(client: RegistryClient, selection: pb::WatchAgentsRequest) -> Self {
        let state = Arc::new(RwLock::new(CacheState::default()));
        let (synced_tx, synced) = watch::channel(false);
        let resyncs = Arc::new(AtomicU64::new(0));
        let resumes = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(
            client,
            pb::WatchAgentsRequest {
                send_initial_snapshot: true,
                start_revision: 0,
                progress_notify: true,
                ..selection
            },
            Follower {
                state: state.clone(),
                synced: synced_tx,
                resyncs: resyncs.clone(),
                resumes: resumes.clone(),
            },
            stop.clone(),
        ));
        Self {
            state,
            synced,
            resyncs,
            resumes,
            rotation: AtomicU64::new(0),
            stop,
            task: Some(task),
        }
    }

    /// Waits until the cache holds a complete snapshot (at most `timeout`).
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut synced = self.synced.clone();
        matches!(
            tokio::time::timeout(timeout, synced.wait_for(|s| *s)).await,
            Ok(Ok(_))
        )
    }

    /// Whether the cache follows the registry right now (false while it
    /// re-watches; its contents are then the last known ones).
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// How many times the watch was interrupted.
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    /// How many interruptions were resumed from the last revision, without a
    /// snapshot.
    pub fn resumes(&self) -> u64 {
        self.resumes.load(Ordering::Relaxed)
    }

    /// Every cached agent, by id.
    pub fn agents(&self) -> Vec<pb::AgentInfo> {
        let state = sync::read(&self.state);
        let mut agents: Vec<pb::AgentInfo> = state.agents.values().cloned().collect();
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        agents
    }

    /// The revision of the last change applied.
    pub fn revision(&self) -> u64 {
        sync::read(&self.state).revision
    }

    /// One HEALTHY (else DEGRADED) agent having all `capabilities`, chosen by `strategy`
    /// exactly as DiscoverAgents would (ranked, round-robin, random).
    pub fn pick(
        &self,
        capabilities: &[&str],
        strategy: pb::DiscoveryStrategy,
    ) -> Option<pb::AgentInfo> {
        self.pick_n(capabilities, strategy, 1).into_iter().next()
    }

    /// Up to `n` agents having all `capabilities`, HEALTHY ones first and
    /// DEGRADED ones as the fallback, each group ordered by
    /// `strategy`.
    pub fn pick_n(
        &self,
        capabilities: &[&str],
        strategy: pb::DiscoveryStrategy,
        n: usize,
    ) -> Vec<pb::AgentInfo> {
        let state = sync::read(&self.state);
        let candidates: Vec<(Agent, &pb::AgentInfo)> = state
            .agents
            .values()
            // HEALTHY agents, then DEGRADED ones as the fallback (§4).
            .filter(|a| {
                Status::from_wire(a.status).is_some_and(|s| status_selects(Status::Healthy, s))
            })
            .filter(|a| {
                capabilities
                    .iter()
                    .all(|c| a.capabilities.iter().any(|have| have == c))
            })
            .filter_map(|a| to_domain(a).map(|d| (d, a)))
            .collect();
        let strategy = Strategy::from(strategy);
        let rotation = match strategy {
            Strategy::RoundRobin => self.rotation.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let by_id: HashMap<_, _> = candidates.iter().map(|(d, a)| (d.id, *a)).collect();
        let domain: Vec<&Agent> = candidates.iter().map(|(d, _)| d).collect();
        order_discovered(domain, strategy, n, rotation)
            .into_iter()
            .filter_map(|d| by_id.get(&d.id).map(|a| (*a).clone()))
            .collect()
    }

    /// Stops following the registry.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            // A panicked task has nothing left to clean up.
            let _ = task.await;
        }
    }
}

impl Drop for DiscoveryCache {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An agent in domain form, for the ranking rules.
fn to_domain(info: &pb::AgentInfo) -> Option<Agent> {
    let id = info.agent_id.parse().ok()?;
    convert::agent_from_wire(id, info.clone())
}

/// The background side of a [`DiscoveryCache`].
struct Follower {
    state: Arc<RwLock<CacheState>>,
    synced: watch::Sender<bool>,
    resyncs: Arc<AtomicU64>,
    resumes: Arc<AtomicU64>,
}

async fn follow(
    client: RegistryClient,
    selection: pb::WatchAgentsRequest,
    follower: Follower,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    // The revision to resume after, once the cache holds a complete set.
    let mut resume: Option<u64> = None;
    loop {
        let request = match resume {
            Some(revision) => pb::WatchAgentsRequest {
                send_initial_snapshot: false,
                start_revision: revision,
                ..selection.clone()
            },
            None => selection.clone(),
        };
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            opened = client.watch(request) => opened,
        };
        match opened {
            Ok(mut stream) => {
                let mut snapshot: Option<HashMap<String, pb::AgentInfo>> = match resume {
                    Some(_) => {
                        follower.resumes.fetch_add(1, Ordering::Relaxed);
                        follower.synced.send_replace(true);
                        None
                    }
                    None => Some(HashMap::new()),
                };
                loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => return,
                        next = stream.message() => next,
                    };
                    match next {
                        Ok(Some(event)) => {
                            failures = 0;
                            apply(&follower, &mut snapshot, event);
                            if snapshot.is_none() {
                                resume = Some(sync::read(&follower.state).revision);
                            }
                        }
                        Err(status) if status.code() == tonic::Code::OutOfRange => {
                            resume = None;
                            break;
                        }
                        _ => break,
                    }
                }
            }
            // The history no longer reaches back: a snapshot it is.
            Err(error) if error.code() == tonic::Code::OutOfRange => resume = None,
            Err(_) => {}
        }
        follower.synced.send_replace(false);
        follower.resyncs.fetch_add(1, Ordering::Relaxed);
        failures = failures.saturating_add(1);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff(failures - 1, RETRY_BASE, RETRY_CAP)) => {}
        }
    }
}

/// Applies one event. `snapshot` collects SNAPSHOT events until SYNCED
/// replaces the cache's contents with it.
fn apply(
    follower: &Follower,
    snapshot: &mut Option<HashMap<String, pb::AgentInfo>>,
    event: pb::AgentChangeEvent,
) {
    let kind = EventType::try_from(event.event_type).unwrap_or(EventType::Unspecified);
    match (kind, snapshot.as_mut(), event.agent) {
        (EventType::Snapshot, Some(fresh), Some(agent)) => {
            fresh.insert(agent.agent_id.clone(), agent);
        }
        (EventType::Synced, Some(_), _) => {
            let fresh = snapshot.take().unwrap_or_default();
            let mut state = sync::write(&follower.state);
            state.agents = fresh;
            state.revision = event.revision;
            drop(state);
            follower.synced.send_replace(true);
        }
        (EventType::Deregistered | EventType::Expired, None, Some(agent)) => {
            let mut state = sync::write(&follower.state);
            state.agents.remove(&agent.agent_id);
            state.revision = event.revision;
        }
        (
            EventType::Registered | EventType::Updated | EventType::StatusChanged,
            None,
            Some(agent),
        ) => {
            let mut state = sync::write(&follower.state);
            state.revision = event.revision;
            state.agents.insert(agent.agent_id.clone(), agent);
        }
        (EventType::Bookmark, None, _) => {
            let mut state = sync::write(&follower.state);
            state.revision = state.revision.max(event.revision);
        }
        _ => {}
    }
}
