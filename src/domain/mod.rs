//! The registry's pure model: agents, their liveness and ownership rules, and
//! the queries over them. No I/O, no tonic, no Redis: everything here is plain
//! data and functions, tested without a server.
//!
//! Depends on: std, uuid, sha2/subtle (tokens), thiserror.

pub mod agent;
pub mod caller;
pub mod check;
pub mod clock;
pub mod labels;
pub mod query;
pub mod rpc;
pub mod token;
pub mod validate;

use std::{collections::BTreeMap, fmt, str::FromStr, sync::Arc};

pub use agent::{Agent, Telemetry};
pub use caller::{Caller, Identity};
pub use labels::Labels;
pub use token::{Ownership, Token, TokenHash};

/// Milliseconds since the Unix epoch: every deadline and timestamp inside the
/// registry. The wire carries whole seconds (see [`to_secs`]).
pub type Millis = i64;

/// Registry-wide revision: increased by every change, so a later change of any
/// agent has a larger revision than an earlier one.
pub type Revision = u64;

/// Whole Unix seconds of a millisecond timestamp, as the wire carries them.
pub fn to_secs(ms: Millis) -> i64 {
    ms.div_euclid(1000)
}

/// An agent's identity: a UUID, shown in lowercase hyphenated form.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(uuid::Uuid);

impl AgentId {
    /// A fresh random (v4) id.
    pub fn new_v4() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The 16 raw bytes, for compact encodings such as page tokens.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Rebuilds an id from [`AgentId::as_bytes`].
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for AgentId {
    type Err = uuid::Error;

    /// Accepts any standard textual UUID form (hyphenated, simple, braced,
    /// URN, any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// What kind of agent this is; the wire's `AgentType` without its zero value.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AgentType {
    /// Executes tasks.
    Worker = 1,
    /// Explores.
    Scout = 2,
    /// Guards.
    Guard = 3,
    /// Analyses.
    Analyst = 4,
}

impl AgentType {
    /// All types, in wire order.
    pub const ALL: [AgentType; 4] = [Self::Worker, Self::Scout, Self::Guard, Self::Analyst];

    /// The wire number, or `None` for 0 and unknown numbers.
    pub fn from_wire(n: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as i32 == n)
    }

    /// Parses a type name in any case (`worker`, `ANALYST`).
    pub fn parse_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }

    /// The enum name on the wire (`WORKER`), also the metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Worker => "WORKER",
            Self::Scout => "SCOUT",
            Self::Guard => "GUARD",
            Self::Analyst => "ANALYST",
        }
    }
}

/// Health of an agent as the registry reports it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Alive and performing.
    Healthy = 1,
    /// Failing most executions, or overdue on heartbeats.
    Unhealthy = 2,
    /// Alive but failing often.
    Degraded = 3,
}

impl Status {
    /// All statuses, in wire order.
    pub const ALL: [Status; 3] = [Self::Healthy, Self::Unhealthy, Self::Degraded];

    /// The wire number, or `None` for 0 and unknown numbers.
    pub fn from_wire(n: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as i32 == n)
    }

    /// Parses a status name in any case (`healthy`, `DEGRADED`).
    pub fn parse_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.name().eq_ignore_ascii_case(s))
    }

    /// The enum name on the wire (`HEALTHY`), also the metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Healthy => "HEALTHY",
            Self::Unhealthy => "UNHEALTHY",
            Self::Degraded => "DEGRADED",
        }
    }
}

/// How one change altered an agent; what watchers are told.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new agent (or one created again under a known id).
    Registered,
    /// Its registration or telemetry changed.
    Updated,
    /// Its status changed from `previous`.
    StatusChanged {
        /// The status before this change.
        previous: Status,
    },
    /// Removed on request.
    Deregistered,
    /// Removed because its heartbeats stopped.
    Expired,
    /// A keep-alive that changed only liveness (`last_seen`): views apply it,
    /// watchers never see it.
    Touched,
}

impl ChangeKind {
    /// The event name watchers and metrics see (`STATUS_CHANGED`); `None`
    /// for a keep-alive, which watchers never see.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::Registered => "REGISTERED",
            Self::Updated => "UPDATED",
            Self::StatusChanged { .. } => "STATUS_CHANGED",
            Self::Deregistered => "DEREGISTERED",
            Self::Expired => "EXPIRED",
            Self::Touched => return None,
        })
    }

    /// Whether the agent no longer exists after this change.
    pub fn is_removal(self) -> bool {
        matches!(self, Self::Deregistered | Self::Expired)
    }
}

/// One change of the registry, in revision order on the feed.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The revision this change created; also `agent.revision` unless touched.
    pub revision: Revision,
    /// What happened.
    pub kind: ChangeKind,
    /// The agent after the change (its last state for removals).
    pub agent: Arc<Agent>,
    /// When it happened.
    pub at: Millis,
}

/// Every agent at one revision, to (re)build a view.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The revision the snapshot reflects.
    pub revision: Revision,
    /// Every agent.
    pub agents: Vec<Arc<Agent>>,
}

/// A change read back from the change history, with what watch selection
/// matching needs of the agent before it (`None`: not known to differ from
/// after, or no agent before).
#[derive(Clone, Debug, PartialEq)]
pub struct Replayed {
    /// The change as it was published.
    pub change: Change,
    /// The agent before the change, when its selection fields (type,
    /// capabilities, namespace) may have differed.
    pub before: Option<Arc<Agent>>,
}

/// What the change history holds after a revision.
#[derive(Clone, Debug, PartialEq)]
pub enum History {
    /// The next changes, in revision order (empty: none yet).
    Changes(Vec<Replayed>),
    /// The history no longer reaches back that far.
    Compacted {
        /// The oldest revision a watch can resume after.
        oldest: Revision,
    },
}

/// A message pushed to an agent through NotifyAgent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Per-agent counter, starting at 1.
    pub id: u64,
    /// The agent it is for.
    pub agent_id: AgentId,
    /// Free-form type, `INFO` when the sender gave none.
    pub kind: String,
    /// The payload.
    pub message: String,
    /// Sender-supplied metadata.
    pub metadata: BTreeMap<String, String>,
    /// When it was accepted.
    pub at: Millis,
}

/// Why a registry operation did not happen. Variants are named by what the
/// caller can do; `service::status` maps each to the gRPC code of that name.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `field` names the offending field.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The request field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The agent does not exist (any more). The message begins with the
    /// original service's wording, `Agente <id> não encontrado`: existing
    /// callers re-register only when they find it (BEHAVIOUR.md §7).
    #[error("Agente {0} não encontrado (agent is not registered; register again)")]
    NotFound(AgentId),
    /// The call needs the agent's registration token and carried none.
    #[error("registration token required")]
    Unauthenticated,
    /// The registration token does not match the agent's.
    #[error("registration token does not match")]
    PermissionDenied,
    /// A watch asked to resume from a revision the change history no longer
    /// reaches back to; `oldest` is the oldest revision it can resume after.
    #[error(
        "start_revision: the change history was compacted; the oldest revision to resume after is {oldest}; watch again with send_initial_snapshot"
    )]
    Compacted {
        /// The oldest revision a watch can resume after.
        oldest: Revision,
    },
    /// A limit of the registry was reached (BEHAVIOUR.md §9); the message
    /// says which and what to do.
    #[error("{0}")]
    ResourceExhausted(String),
    /// This replica does not follow a reachable store right now (the store
    /// is down, or the view is still loading): refused before touching it.
    #[error("registry store unavailable; retry later")]
    NotServing,
    /// The store cannot be reached; try again later.
    #[error("store unavailable")]
    Unavailable {
        /// What failed underneath (logged, never sent to clients).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A bug or a corrupt record.
    #[error("internal error")]
    Internal {
        /// What failed underneath (logged, never sent to clients).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// The store cannot be reached, because of `source`.
    pub fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable {
            source: source.into(),
        }
    }

    /// A bug or corrupt data, because of `source`.
    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal {
            source: source.into(),
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

/// An error and its causes, `: `-separated: what logs and messages show, since
/// the useful part (e.g. "Connection refused") often sits in a source.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Result of registry operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_any_form_and_print_lowercase_hyphenated() {
        let canonical = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        for form in [
            canonical,
            "67E55044-10B1-426F-9247-BB680E5FE0C8",
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8",
        ] {
            assert_eq!(form.parse::<AgentId>().unwrap().to_string(), canonical);
        }
        assert!("not-a-uuid".parse::<AgentId>().is_err());
    }

    #[test]
    fn wire_enums_refuse_zero_and_unknown() {
        assert_eq!(AgentType::from_wire(0), None);
        assert_eq!(AgentType::from_wire(5), None);
        assert_eq!(AgentType::from_wire(4), Some(AgentType::Analyst));
        assert_eq!(Status::parse_name("dEgRaDeD"), Some(Status::Degraded));
        assert_eq!(Status::parse_name("sick"), None);
    }

    #[test]
    fn seconds_floor_toward_the_past() {
        assert_eq!(to_secs(1_999), 1);
        assert_eq!(to_secs(-1), -1);
    }
}
