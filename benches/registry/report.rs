//! The Markdown report: every figure, its ratio to the ceiling and issue 10's goals
//! met or not, and the cell formatting it uses.

use std::{fmt::Write as _, time::Duration};

use crate::load::{Failures, Throughput};
use crate::population::{Population, Query};
use crate::watch::Watch;
use crate::workloads::Kind;

use crate::{CHANNELS, CONCURRENCY, Column, KINDS, ROUNDS, Report, load, machine};

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn rate(per_second: f64) -> String {
    if per_second >= 1000.0 {
        format!("{:.1}k/s", per_second / 1000.0)
    } else {
        format!("{per_second:.0}/s")
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.1}")
    }
}

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(String::new, |r| format!(" (**{r:.2}×**)"))
}

fn flagged(cell: String, failures: &Failures) -> String {
    if failures.count > 0 {
        format!("{cell} ⚠ {} failed", failures.count)
    } else {
        cell
    }
}

/// The Markdown tables.
pub(crate) fn render(
    report: &Report,
    population: &Population,
    queries: &[Query],
    took: Duration,
) -> String {
    let none = Column::default();
    let col = |k: Kind| report.columns.get(&k).unwrap_or(&none);
    let ceiling = col(Kind::Ceiling);
    let s = report.sizes;
    let mut out = String::new();
    let _ = writeln!(out, "\n## agent-registry benchmark (issue 10)\n");
    let _ = writeln!(
        out,
        "Machine: {}. Servers: separate processes (release builds) on loopback; load generator: \
         this process, {CONCURRENCY} calls in flight over {CHANNELS} connections. Scale {} \
         (`REGISTRY_BENCH_SCALE`). Run took {:.0} s.\n",
        machine(),
        s.scale,
        took.as_secs_f64()
    );
    let _ = writeln!(out, "| workload | ceiling | memory store | Redis store |");
    let _ = writeln!(out, "|---|---|---|---|");

    let tput = |pick: fn(&Column) -> &Option<Throughput>| -> Vec<String> {
        let base = pick(ceiling).as_ref().map(|t| t.per_second);
        KINDS
            .iter()
            .map(|&k| match pick(col(k)) {
                Some(t) => {
                    let r = if k == Kind::Ceiling {
                        None
                    } else {
                        base.map(|b| t.per_second / b)
                    };
                    flagged(
                        format!(
                            "{}{} · p50/p99 {} / {} ms",
                            rate(t.per_second),
                            ratio(r),
                            ms(t.p50),
                            ms(t.p99)
                        ),
                        &t.failures,
                    )
                }
                None => "—".into(),
            })
            .collect()
    };
    let mut row = |name: String, cells: Vec<String>| {
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    };
    row(
        format!(
            "Heartbeat, {} agents, {CONCURRENCY} concurrent ({ROUNDS} × {} calls)",
            thousands(s.heartbeat_agents),
            thousands(s.heartbeat_calls)
        ),
        tput(|c| &c.heartbeat),
    );
    row(
        format!(
            "Register, {} → {} agents, {CONCURRENCY} concurrent",
            thousands(s.heartbeat_agents),
            thousands(s.agents)
        ),
        tput(|c| &c.register),
    );
    row(
        format!(
            "ListAgents, page of 100 at {} agents, {CONCURRENCY} concurrent",
            thousands(s.agents)
        ),
        tput(|c| &c.list),
    );
    let base = ceiling.discover.as_ref().map(|d| d.figures.p99);
    row(
        format!(
            "DiscoverAgents at {} agents, one at a time, p50 / p99",
            thousands(s.agents)
        ),
        KINDS
            .iter()
            .map(|&k| match &col(k).discover {
                Some(d) => {
                    let r = (k != Kind::Ceiling)
                        .then(|| base.map(|b| d.figures.p99.as_secs_f64() / b.as_secs_f64()))
                        .flatten();
                    flagged(
                        format!(
                            "{} / {} ms{}",
                            ms(d.figures.p50),
                            ms(d.figures.p99),
                            ratio(r)
                        ),
                        &d.figures.failures,
                    )
                }
                None => "—".into(),
            })
            .collect(),
    );
    let watch_cells = |pick: fn(&Column) -> &Option<Watch>, memory: bool| -> Vec<String> {
        let base = pick(ceiling).as_ref().map(|w| w.p99);
        KINDS
            .iter()
            .map(|&k| match pick(col(k)) {
                Some(w) => {
                    let r = (k != Kind::Ceiling && !memory)
                        .then(|| base.map(|b| w.p99.as_secs_f64() / b.as_secs_f64()))
                        .flatten();
                    let mut cell = format!(
                        "{} / {} ms{}, {} missed",
                        ms(w.p50),
                        ms(w.p99),
                        ratio(r),
                        w.missed()
                    );
                    if memory {
                        cell = format!(
                            "{} per stream, {} missed",
                            kib(w.bytes_per_stream),
                            w.missed()
                        );
                    }
                    if w.failures.count > 0 {
                        cell = format!(
                            "{cell} ({} open, {} changes made) ⚠ {} failed",
                            w.open, w.made, w.failures.count
                        );
                    }
                    cell
                }
                None => "—".into(),
            })
            .collect()
    };
    row(
        format!(
            "WatchAgents, {} watchers × {} changes, p50 / p99 delivery",
            thousands(s.watchers),
            s.changes
        ),
        watch_cells(|c| &c.watch, false),
    );
    row(
        format!(
            "WatchAgents, {} watchers on one replica × {} changes, p50 / p99",
            thousands(s.many_watchers),
            s.many_changes
        ),
        watch_cells(|c| &c.many, false),
    );
    row(
        format!(
            "Server memory per open stream ({} watchers, RSS growth)",
            thousands(s.many_watchers)
        ),
        watch_cells(|c| &c.many, true),
    );
    row(
        format!(
            "Server memory per agent ({} agents, RSS growth)",
            thousands(s.agents)
        ),
        KINDS
            .iter()
            .map(|&k| {
                col(k)
                    .bytes_per_agent
                    .map_or_else(|| "—".into(), |b| format!("{b:.0} B"))
            })
            .collect(),
    );
    if let Some(load) = &report.load {
        row(
            format!(
                "Fresh Redis-backed replica: start → first read, {} agents in view",
                thousands(load.population as usize)
            ),
            vec![
                "—".into(),
                "—".into(),
                format!(
                    "{:.2} s, {:.0} B per agent (RSS over an empty replica)",
                    load.start.as_secs_f64(),
                    load.bytes_per_agent
                ),
            ],
        );
        row(
            "Fresh Redis-backed replica: start → first WatchAgents accepted".into(),
            vec![
                "—".into(),
                "—".into(),
                match &load.ready {
                    Ok(d) => format!("{:.2} s", d.as_secs_f64()),
                    Err(e) => format!("failed: {e}"),
                },
            ],
        );
        row(
            "Resync (pub/sub connection cut → new watch accepted)".into(),
            vec![
                "—".into(),
                "—".into(),
                match &load.resync {
                    Ok(d) => format!("{:.2} s", d.as_secs_f64()),
                    Err(e) => format!("failed: {e}"),
                },
            ],
        );
    }

    // Goals.
    let _ = writeln!(out, "\n### Issue 10's goals\n");
    let _ = writeln!(out, "| goal | store | measured | |");
    let _ = writeln!(out, "|---|---|---|---|");
    let mut goal = |name: &str, store: &str, measured: Option<(String, bool)>| {
        let (m, ok) = match measured {
            Some((m, true)) => (m, "met"),
            Some((m, false)) => (m, "**not met**"),
            None => ("—".into(), "not measured"),
        };
        let _ = writeln!(out, "| {name} | {store} | {m} | {ok} |");
    };
    let tput_ratio = |pick: fn(&Column) -> &Option<Throughput>, k: Kind, min: f64| {
        let b = pick(ceiling).as_ref()?.per_second;
        let t = pick(col(k)).as_ref()?;
        let r = t.per_second / b;
        Some((format!("{r:.2}×"), r >= min && t.failures.count == 0))
    };
    for (k, min) in [(Kind::Memory, 0.9), (Kind::Redis, 0.7)] {
        goal(
            &format!("Heartbeat ≥ {min}× ceiling"),
            k.label(),
            tput_ratio(|c| &c.heartbeat, k, min),
        );
    }
    for (k, min) in [(Kind::Memory, 0.9), (Kind::Redis, 0.7)] {
        goal(
            &format!("Register ≥ {min}× ceiling"),
            k.label(),
            tput_ratio(|c| &c.register, k, min),
        );
    }
    for k in [Kind::Memory, Kind::Redis] {
        let m = (|| {
            let b = ceiling.discover.as_ref()?.figures.p99.as_secs_f64();
            let d = col(k).discover.as_ref()?;
            let r = d.figures.p99.as_secs_f64() / b;
            Some((
                format!("{r:.2}×"),
                r <= 1.2 && d.figures.failures.count == 0,
            ))
        })();
        goal("DiscoverAgents p99 ≤ 1.2× ceiling p99", k.label(), m);
    }
    for k in [Kind::Memory, Kind::Redis] {
        let m = (|| {
            let b = ceiling.watch.as_ref()?.p99.as_secs_f64();
            let w = col(k).watch.as_ref()?;
            let r = w.p99.as_secs_f64() / b;
            Some((
                format!("{r:.2}×, {} missed", w.missed()),
                r <= 1.0 && w.missed() == 0 && w.open == s.watchers && w.made == s.changes,
            ))
        })();
        goal(
            &format!(
                "Watch, {} watchers: p99 ≤ 1.0× ceiling, 0 missed",
                thousands(s.watchers)
            ),
            k.label(),
            m,
        );
    }
    for k in [Kind::Memory, Kind::Redis] {
        let m = col(k).many.as_ref().map(|w| {
            (
                format!(
                    "{} missed, {} per stream",
                    w.missed(),
                    kib(w.bytes_per_stream)
                ),
                w.missed() == 0
                    && w.open == s.many_watchers
                    && w.made == s.many_changes
                    && w.bytes_per_stream <= 20.0 * 1024.0,
            )
        });
        goal(
            &format!(
                "{} watchers: 0 missed, ≤ 20 KiB per stream",
                thousands(s.many_watchers)
            ),
            k.label(),
            m,
        );
    }
    for k in [Kind::Memory, Kind::Redis] {
        let m = col(k)
            .bytes_per_agent
            .map(|b| (format!("{b:.0} B"), b <= 1024.0));
        goal(
            "View ≤ 1 KiB per agent (replica RSS growth while registering)",
            k.label(),
            m,
        );
    }
    let load = report.load.as_ref();
    goal(
        "View ≤ 1 KiB per agent (fresh replica, view loaded from Redis)",
        Kind::Redis.label(),
        load.map(|l| {
            (
                format!("{:.0} B", l.bytes_per_agent),
                l.bytes_per_agent <= 1024.0,
            )
        }),
    );
    goal(
        "View load ≤ 1 s (start)",
        Kind::Redis.label(),
        load.map(|l| {
            (
                format!("{:.2} s", l.start.as_secs_f64()),
                l.start <= Duration::from_secs(1),
            )
        }),
    );
    goal(
        "View load ≤ 1 s (resync)",
        Kind::Redis.label(),
        load.and_then(|l| l.resync.as_ref().ok()).map(|d| {
            (
                format!("{:.2} s", d.as_secs_f64()),
                *d <= Duration::from_secs(1),
            )
        }),
    );

    // The discover tail: by query shape, then the slowest calls.
    let shapes = [
        "1 capability",
        "1 capability + namespace",
        "2 capabilities",
        "2 capabilities + namespace",
    ];
    let shape = |q: &Query| (q.caps.len().min(2) - 1) * 2 + usize::from(q.namespace.is_some());
    let _ = writeln!(
        out,
        "\n### DiscoverAgents by query shape, p50 / p99 ms (calls)\n"
    );
    let _ = writeln!(out, "| query | ceiling | memory store | Redis store |");
    let _ = writeln!(out, "|---|---|---|---|");
    for (i, name) in shapes.iter().enumerate() {
        let cells: Vec<String> = KINDS
            .iter()
            .map(|&k| {
                let Some(d) = &col(k).discover else {
                    return "—".into();
                };
                let mut l: Vec<Duration> = d
                    .calls
                    .iter()
                    .filter(|(q, _)| shape(&queries[*q]) == i)
                    .map(|(_, l)| *l)
                    .collect();
                l.sort();
                format!(
                    "{} / {} ({})",
                    ms(load::quantile(&l, 0.5)),
                    ms(load::quantile(&l, 0.99)),
                    l.len()
                )
            })
            .collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    }
    for k in [Kind::Memory, Kind::Redis] {
        let Some(d) = &col(k).discover else { continue };
        let registered = report.populations.get(&k).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "\n### The 10 slowest DiscoverAgents calls, {}\n",
            k.label()
        );
        let _ = writeln!(
            out,
            "| ms | capabilities · filter | returned | HEALTHY matches | DEGRADED matches |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for slow in &d.slowest {
            let q = &queries[slow.query];
            let (healthy, degraded) = population.matches(q, registered);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                ms(slow.latency),
                q.describe(),
                slow.returned,
                thousands(healthy),
                thousands(degraded)
            );
        }
    }

    if !report.notes.is_empty() {
        let _ = writeln!(out, "\n### Other measurements\n");
        for note in &report.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    if !report.errors.is_empty() {
        let _ = writeln!(out, "\n### Errors\n");
        let _ = writeln!(out, "| step | server | error |");
        let _ = writeln!(out, "|---|---|---|");
        for (step, server, error) in &report.errors {
            let _ = writeln!(out, "| {step} | {server} | {} |", error.replace('|', "\\|"));
        }
    }
    out
}
