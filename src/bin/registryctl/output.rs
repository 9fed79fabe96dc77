//! What the commands print: [`Printer`] writes each result as a table for
//! people or as one JSON object per line for scripts; below it, the JSON
//! forms of agents, events and notifications and the table layout. Times
//! are formatted in [`time`].

mod time;

use std::{
    collections::HashMap,
    io::{self, Write},
};

use agent_registry::{
    client::SessionState,
    pb::{self, agent_change_event::EventType},
};
use serde_json::{Value, json};
use tonic_health::pb::health_check_response::ServingStatus;

use self::time::{clock, relative, unix_now};
use crate::args::Format;

/// What `register` prints.
pub(crate) struct Registration<'a> {
    /// The agent's id.
    pub(crate) agent_id: &'a str,
    /// Its registration token.
    pub(crate) token: &'a str,
    /// The heartbeat timeout granted, when known.
    pub(crate) ttl_seconds: Option<i64>,
    /// How often to heartbeat, when known.
    pub(crate) heartbeat_interval_seconds: Option<i64>,
}

/// Writes every result in the chosen [`Format`]. Each write goes out at
/// once (stdout is line-buffered), so streams can be followed live.
pub(crate) struct Printer {
    format: Format,
}

/// Minimum column widths of the event rows of `watch` (streamed, so not
/// aligned on the longest value): EVENT, ID, TYPE, STATUS, NAMESPACE,
/// REVISION, CAPABILITIES.
const EVENT_WIDTHS: [usize; 7] = [14, 36, 7, 9, 10, 8, 0];
/// Header of the `watch` table.
const EVENT_HEADER: [&str; 7] = [
    "EVENT",
    "ID",
    "TYPE",
    "STATUS",
    "NAMESPACE",
    "REVISION",
    "CAPABILITIES",
];
/// Minimum column widths of `subscribe` rows: ID, TYPE, AGE, MESSAGE,
/// METADATA.
const NOTIFICATION_WIDTHS: [usize; 5] = [4, 10, 7, 24, 0];
/// Header of the `subscribe` table.
const NOTIFICATION_HEADER: [&str; 5] = ["ID", "TYPE", "AGE", "MESSAGE", "METADATA"];
/// Header of agent tables.
const AGENT_HEADER: [&str; 8] = [
    "ID",
    "TYPE",
    "STATUS",
    "CAPABILITIES",
    "NAMESPACE",
    "ENDPOINT",
    "LAST SEEN",
    "EXPIRES",
];

impl Printer {
    /// A printer writing in `format`.
    pub(crate) fn new(format: Format) -> Self {
        Self { format }
    }

    /// Writes `text` and a newline to stdout.
    fn line(&self, text: &str) -> io::Result<()> {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{text}")?;
        stdout.flush()
    }

    /// Writes one compact JSON object on its own line.
    fn json(&self, value: &Value) -> io::Result<()> {
        self.line(&value.to_string())
    }

    /// The id and token of a registration.
    pub(crate) fn registration(&self, r: &Registration<'_>) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&json!({
                "agent_id": r.agent_id,
                "registration_token": r.token,
                "ttl_seconds": r.ttl_seconds,
                "heartbeat_interval_seconds": r.heartbeat_interval_seconds,
            })),
            Format::Table => {
                let seconds =
                    |s: Option<i64>| s.map_or_else(|| "-".to_owned(), |s| format!("{s}s"));
                self.line(&table(
                    &[],
                    &[
                        vec!["AGENT ID".into(), r.agent_id.into()],
                        vec!["TOKEN".into(), r.token.into()],
                        vec!["TTL".into(), seconds(r.ttl_seconds)],
                        vec![
                            "HEARTBEAT EVERY".into(),
                            seconds(r.heartbeat_interval_seconds),
                        ],
                    ],
                ))
            }
        }
    }

    /// A change of a kept-alive session's state.
    pub(crate) fn session_state(&self, agent_id: &str, state: &SessionState) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&json!({
                "agent_id": agent_id,
                "status": state.status.as_str_name(),
                "connected": state.connected,
                "registrations": state.registrations,
                "last_error": state.last_error,
            })),
            Format::Table => {
                let connection = match &state.last_error {
                    _ if state.connected => "connected".to_owned(),
                    Some(error) => format!("disconnected ({error})"),
                    None => "disconnected".to_owned(),
                };
                self.line(&format!(
                    "{} status {}, {connection}, registrations {}",
                    clock(unix_now()),
                    state.status.as_str_name(),
                    state.registrations
                ))
            }
        }
    }

    /// The answer to a heartbeat.
    pub(crate) fn heartbeat(
        &self,
        agent_id: &str,
        response: &pb::HeartbeatResponse,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&json!({
                "agent_id": agent_id,
                "status": response.status().as_str_name(),
                "last_seen": response.last_seen,
                "expires_at": response.expires_at,
            })),
            Format::Table => {
                let now = unix_now();
                self.line(&table(
                    &["ID", "STATUS", "LAST SEEN", "EXPIRES"],
                    &[vec![
                        agent_id.to_owned(),
                        response.status().as_str_name().to_owned(),
                        relative(response.last_seen, now),
                        relative(response.expires_at, now),
                    ]],
                ))
            }
        }
    }

    /// The outcome of a deregistration.
    pub(crate) fn deregistered(&self, agent_id: &str, success: bool) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&json!({ "agent_id": agent_id, "success": success })),
            Format::Table if success => self.line(&format!("deregistered {agent_id}")),
            Format::Table => self.line(&format!("{agent_id} was not registered")),
        }
    }

    /// One agent, with its metadata and telemetry.
    pub(crate) fn agent_detail(&self, agent: &pb::AgentInfo) -> io::Result<()> {
        if self.format == Format::Json {
            return self.json(&agent_json(agent));
        }
        self.agents(std::slice::from_ref(agent))?;
        let mut extra = Vec::new();
        if !agent.metadata.is_empty() {
            extra.push(vec!["METADATA".to_owned(), pairs(&agent.metadata)]);
        }
        if let Some(t) = &agent.telemetry {
            extra.push(vec![
                "TELEMETRY".to_owned(),
                format!(
                    "success rate {:.2}, {} executions, {} failed, avg {} ms",
                    t.success_rate, t.total_executions, t.failed_executions, t.avg_duration_ms
                ),
            ]);
        }
        extra.push(vec![
            "CLUSTER".to_owned(),
            format!("{} (version {})", agent.cluster, agent.version),
        ]);
        extra.push(vec![
            "REGISTERED".to_owned(),
            relative(agent.registered_at, unix_now()),
        ]);
        extra.push(vec!["REVISION".to_owned(), agent.revision.to_string()]);
        self.line("")?;
        self.line(&table(&[], &extra))
    }

    /// Agents: a table, or one JSON object per agent per line.
    pub(crate) fn agents(&self, agents: &[pb::AgentInfo]) -> io::Result<()> {
        match self.format {
            Format::Json => agents.iter().try_for_each(|a| self.json(&agent_json(a))),
            Format::Table => {
                let now = unix_now();
                let rows: Vec<Vec<String>> = agents.iter().map(|a| agent_row(a, now)).collect();
                self.line(&table(&AGENT_HEADER, &rows))
            }
        }
    }

    /// The header of a `watch` table (nothing in JSON).
    pub(crate) fn event_header(&self) -> io::Result<()> {
        match self.format {
            Format::Json => Ok(()),
            Format::Table => self.line(&fixed_row(&EVENT_HEADER, &EVENT_WIDTHS)),
        }
    }

    /// One change event.
    pub(crate) fn event(&self, event: &pb::AgentChangeEvent) -> io::Result<()> {
        if self.format == Format::Json {
            return self.json(&event_json(event));
        }
        let kind = event.event_type().as_str_name();
        let revision = event.revision.to_string();
        let cells: Vec<String> = match &event.agent {
            Some(a) => {
                let mut status = a.status().as_str_name().to_owned();
                if event.event_type() == EventType::StatusChanged {
                    status = format!("{status} (was {})", event.previous_status().as_str_name());
                }
                vec![
                    kind.to_owned(),
                    a.agent_id.clone(),
                    a.agent_type().as_str_name().to_owned(),
                    status,
                    a.namespace.clone(),
                    revision,
                    a.capabilities.join(","),
                ]
            }
            None => {
                let mut cells = vec!["-".to_owned(); EVENT_WIDTHS.len()];
                cells[0] = kind.to_owned();
                cells[5] = revision;
                cells
            }
        };
        self.line(&fixed_row(&cells, &EVENT_WIDTHS))
    }

    /// The header of a `subscribe` table (nothing in JSON).
    pub(crate) fn notification_header(&self) -> io::Result<()> {
        match self.format {
            Format::Json => Ok(()),
            Format::Table => self.line(&fixed_row(&NOTIFICATION_HEADER, &NOTIFICATION_WIDTHS)),
        }
    }

    /// One notification.
    pub(crate) fn notification(&self, n: &pb::AgentNotification) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&notification_json(n)),
            Format::Table => self.line(&fixed_row(
                &[
                    n.notification_id.clone(),
                    n.notification_type.clone(),
                    relative(n.timestamp, unix_now()),
                    n.message.clone(),
                    pairs(&n.metadata),
                ],
                &NOTIFICATION_WIDTHS,
            )),
        }
    }

    /// The answer to a notification.
    pub(crate) fn notified(
        &self,
        agent_id: &str,
        response: &pb::NotifyAgentResponse,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&json!({
                "agent_id": agent_id,
                "success": response.success,
                "error": response.error,
                "notification_id": response.notification_id,
                "delivered": response.delivered,
            })),
            Format::Table => self.line(&table(
                &["AGENT", "NOTIFICATION ID", "DELIVERED"],
                &[vec![
                    agent_id.to_owned(),
                    response.notification_id.clone(),
                    if response.delivered {
                        "yes".to_owned()
                    } else {
                        "no (queued)".to_owned()
                    },
                ]],
            )),
        }
    }

    /// The health status.
    pub(crate) fn health(&self, service: &str, status: ServingStatus) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&json!({
                "service": service,
                "status": status.as_str_name(),
            })),
            Format::Table => self.line(status.as_str_name()),
        }
    }
}

/// An agent as JSON, with the proto field names and enums by name.
fn agent_json(a: &pb::AgentInfo) -> Value {
    json!({
        "agent_id": a.agent_id,
        "agent_type": a.agent_type().as_str_name(),
        "capabilities": a.capabilities,
        "metadata": a.metadata,
        "telemetry": a.telemetry.as_ref().map(|t| json!({
            "success_rate": t.success_rate,
            "avg_duration_ms": t.avg_duration_ms,
            "total_executions": t.total_executions,
            "failed_executions": t.failed_executions,
            "last_execution_at": t.last_execution_at,
        })),
        "status": a.status().as_str_name(),
        "registered_at": a.registered_at,
        "last_seen": a.last_seen,
        "namespace": a.namespace,
        "cluster": a.cluster,
        "version": a.version,
        "schema_version": a.schema_version,
        "endpoint": a.endpoint,
        "expires_at": a.expires_at,
        "revision": a.revision,
        "health_check": a.health_check.as_ref().map(|c| json!({
            "kind": c.kind().as_str_name(),
            "target": c.target,
            "path": c.path,
            "interval_seconds": c.interval_seconds,
            "timeout_seconds": c.timeout_seconds,
            "failures_before_unhealthy": c.failures_before_unhealthy,
            "successes_before_healthy": c.successes_before_healthy,
            "deregister_after_seconds": c.deregister_after_seconds,
        })),
        "health_output": a.health_output,
    })
}

/// A change event as JSON (`agent` is null for SYNCED).
fn event_json(e: &pb::AgentChangeEvent) -> Value {
    json!({
        "event_type": e.event_type().as_str_name(),
        "agent": e.agent.as_ref().map(agent_json),
        "timestamp": e.timestamp,
        "revision": e.revision,
        "previous_status": e.previous_status().as_str_name(),
    })
}

/// A notification as JSON.
fn notification_json(n: &pb::AgentNotification) -> Value {
    json!({
        "notification_id": n.notification_id,
        "agent_id": n.agent_id,
        "notification_type": n.notification_type,
        "message": n.message,
        "metadata": n.metadata,
        "timestamp": n.timestamp,
    })
}

/// The cells of an agent's table row.
fn agent_row(a: &pb::AgentInfo, now: i64) -> Vec<String> {
    vec![
        a.agent_id.clone(),
        a.agent_type().as_str_name().to_owned(),
        a.status().as_str_name().to_owned(),
        dash_if_empty(a.capabilities.join(",")),
        dash_if_empty(a.namespace.clone()),
        dash_if_empty(a.endpoint.clone()),
        relative(a.last_seen, now),
        relative(a.expires_at, now),
    ]
}

/// `-` for an empty cell, so columns stay readable.
fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

/// `k=v,k=v`, sorted by key (`-` when empty).
fn pairs(map: &HashMap<String, String>) -> String {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort();
    dash_if_empty(
        entries
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Renders rows (and a header row unless `header` is empty) as columns
/// aligned on their widest cell, two spaces apart, without trailing blanks.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut all: Vec<Vec<&str>> = Vec::with_capacity(rows.len() + 1);
    if !header.is_empty() {
        all.push(header.to_vec());
    }
    all.extend(rows.iter().map(|r| r.iter().map(String::as_str).collect()));
    let columns = all.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            all.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    all.iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().map(|s| (*s).to_owned()).collect();
            fixed_row(&cells, &widths)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One row with each cell padded to at least its column's width (the last
/// cell is not padded), two spaces apart.
fn fixed_row<S: AsRef<str>>(cells: &[S], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let cell = cell.as_ref();
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(cell);
        if i + 1 < cells.len() {
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    line.truncate(line.trim_end().len());
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["ID", "NAME"],
            &[
                vec!["1".into(), "a".into()],
                vec!["123".into(), "bb".into()],
            ],
        );
        assert_eq!(text, "ID   NAME\n1    a\n123  bb");
    }
}
