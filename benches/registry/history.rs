//! The change history's cost, and a fresh Redis-backed replica's view load and
//! resync time.

use std::time::{Duration, Instant};

use agent_registry::pb;

use crate::{
    load::{CALL_TIMEOUT, Failures, connect_many, status_text},
    procs::Server,
};

use crate::workloads::Target;

/// The change history (watch resume, BEHAVIOUR.md §11): what 1 000 watchers
/// resuming after 100 missed changes cost next to 10 watchers re-snapshotting
/// the whole registry instead, and what the history holds per change.
pub async fn history_cost(
    t: &Target,
    redis_url: Option<&str>,
) -> Result<(Vec<String>, Failures), String> {
    const MISSED: usize = 100;
    const RESUMERS: usize = 1_000;
    const SNAPSHOTTERS: usize = 10;
    let clients = &t.clients;
    let agents = t.registered(MISSED + 1);
    if agents.len() <= MISSED {
        return Err(format!("needs {} registered agents", MISSED + 1));
    }
    let streams = connect_many(&t.server.endpoint, 8).await?;
    // The revision "before the cut": from the first of MISSED changes.
    let mut probe = tokio::time::timeout(
        CALL_TIMEOUT,
        streams[0]
            .clone()
            .watch_agents(pb::WatchAgentsRequest::default()),
    )
    .await
    .map_err(|_| "watch: timed out".to_owned())?
    .map_err(|s| format!("watch: {}", status_text(&s)))?
    .into_inner();
    let mut start = None;
    for (i, (id, token, _)) in agents.iter().enumerate() {
        let mut client = clients[i % clients.len()].clone();
        let call = client.heartbeat(pb::HeartbeatRequest {
            agent_id: id.clone(),
            registration_token: token.clone(),
            telemetry: Some(pb::AgentTelemetry {
                success_rate: 0.99,
                total_executions: 1000 + i as i64,
                ..Default::default()
            }),
        });
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| "heartbeat: timed out".to_owned())?
            .map_err(|s| format!("heartbeat: {}", status_text(&s)))?;
        if start.is_none() {
            let event = tokio::time::timeout(CALL_TIMEOUT, probe.message())
                .await
                .map_err(|_| "first event: timed out".to_owned())?
                .map_err(|s| format!("first event: {}", status_text(&s)))?
                .ok_or("watch ended")?;
            start = Some(event.revision);
        }
    }
    drop(probe);
    let start = start.unwrap_or(0);
    let began = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..RESUMERS {
        let mut c = streams[w % streams.len()].clone();
        tasks.push(tokio::spawn(async move {
            let resume = c.watch_agents(pb::WatchAgentsRequest {
                start_revision: start,
                ..Default::default()
            });
            let stream = match tokio::time::timeout(CALL_TIMEOUT, resume).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(s)) => return (0, Some(format!("resume refused: {}", status_text(&s)))),
                Err(_) => return (0, Some("resume: no answer in 10 s".to_owned())),
            };
            let mut stream = stream.into_inner();
            let mut got = 0;
            while got < MISSED {
                match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                    Ok(Ok(Some(_))) => got += 1,
                    Ok(Ok(None)) => return (got, Some("stream ended".to_owned())),
                    Ok(Err(s)) => return (got, Some(status_text(&s))),
                    Err(_) => return (got, Some("no event in 30 s".to_owned())),
                }
            }
            (got, None)
        }));
    }
    let mut replayed = 0;
    let mut short = Failures::default();
    for task in tasks {
        match task.await {
            Ok((got, why)) => {
                replayed += got;
                if let Some(why) = why {
                    short.add(why);
                }
            }
            Err(e) => short.add(e.to_string()),
        }
    }
    let resume = began.elapsed();
    let began = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..SNAPSHOTTERS {
        let mut c = streams[w % streams.len()].clone();
        tasks.push(tokio::spawn(async move {
            let open = c.watch_agents(pb::WatchAgentsRequest {
                send_initial_snapshot: true,
                ..Default::default()
            });
            let Ok(Ok(stream)) = tokio::time::timeout(CALL_TIMEOUT, open).await else {
                return 0;
            };
            let mut stream = stream.into_inner();
            let synced = pb::agent_change_event::EventType::Synced as i32;
            let mut bytes = 0usize;
            while let Ok(Ok(Some(event))) =
                tokio::time::timeout(Duration::from_secs(30), stream.message()).await
            {
                bytes += prost::Message::encoded_len(&event);
                if event.event_type == synced {
                    break;
                }
            }
            bytes
        }));
    }
    let mut snapshot_bytes = 0;
    for task in tasks {
        snapshot_bytes += task.await.unwrap_or(0);
    }
    let snapshot = began.elapsed();
    let mut lines = vec![format!(
        "resume: {RESUMERS} watchers × {MISSED} missed changes in {:.0} ms ({replayed} of {} \
         events, {:.2} ms per watcher{}); re-snapshot of {} agents: {SNAPSHOTTERS} watchers in \
         {:.0} ms ({:.0} ms and {:.1} MB per watcher)",
        resume.as_secs_f64() * 1e3,
        RESUMERS * MISSED,
        resume.as_secs_f64() * 1e3 / RESUMERS as f64,
        short
            .first
            .as_ref()
            .map_or_else(String::new, |first| format!(
                "; {} watchers short, first: {first}",
                short.count
            )),
        t.population(),
        snapshot.as_secs_f64() * 1e3,
        snapshot.as_secs_f64() * 1e3 / SNAPSHOTTERS as f64,
        snapshot_bytes as f64 / SNAPSHOTTERS as f64 / 1e6,
    )];
    if let Some(url) = redis_url {
        let len: u64 = crate::procs::redis_cmd(url, &["XLEN", "{registry}:history"]).await?;
        let bytes: u64 = crate::procs::redis_cmd(
            url,
            &["MEMORY", "USAGE", "{registry}:history", "SAMPLES", "0"],
        )
        .await?;
        lines.push(format!(
            "Redis history: {len} changes, {:.1} MiB, {} bytes/change",
            bytes as f64 / (1 << 20) as f64,
            bytes / len.max(1)
        ));
    }
    Ok((lines, short))
}

/// A fresh Redis-backed replica against a Redis already holding the
/// registry.
#[derive(Clone, Debug)]
pub struct Load {
    /// Process start to the first answered GetAgent of `probe`.
    pub start: Duration,
    /// Agents in its view then (its `service_registry_agents_total` gauges).
    pub population: u64,
    /// Its RSS over an empty replica's, per agent, in bytes.
    pub bytes_per_agent: f64,
    /// Process start to the first WatchAgents accepted (a replica refuses
    /// new streams while it does not consider its view current).
    pub ready: Result<Duration, String>,
    /// The first refusal of a watch after the first read, if any.
    pub refused: Option<String>,
    /// Pub/sub connection cut to a new watch accepted again.
    pub resync: Result<Duration, String>,
    /// The last lines the fresh replica logged (warnings and errors).
    pub log: String,
}

/// Starts a replica of an empty registry (another key prefix, for the
/// baseline RSS), then a fresh one against the loaded registry, timing it
/// until it answers a read; then cuts its pub/sub connection (`CLIENT KILL
/// TYPE pubsub`) and times the resync.
pub async fn view_load(
    redis_url: &str,
    dir: &std::path::Path,
    probe: &str,
) -> Result<Load, String> {
    let flags = ["--store", "redis", "--redis-url", redis_url];
    let mut empty = Server::registry(
        "redis-empty",
        &[&flags[..], &["--redis-prefix", "bench-empty"]].concat(),
        dir,
    )?;
    empty.ready().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_empty = empty.child.rss()?;
    drop(empty);

    let started = Instant::now();
    let mut fresh = Server::registry("redis-fresh", &flags, dir)?;
    let mut last = String::from("never connected");
    let mut answered = None;
    while started.elapsed() < Duration::from_secs(60) {
        if let Some(why) = fresh.child.exited() {
            return Err(why);
        }
        if let Ok(mut client) = crate::load::connect(&fresh.endpoint).await {
            let get = client.get_agent(pb::GetAgentRequest {
                agent_id: probe.to_owned(),
            });
            match tokio::time::timeout(CALL_TIMEOUT, get).await {
                Ok(Ok(_)) => {
                    answered = Some((started.elapsed(), client));
                    break;
                }
                Ok(Err(s)) => last = status_text(&s),
                Err(_) => last = "GetAgent timed out".into(),
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let Some((start, mut client)) = answered else {
        return Err(format!("no answer within 60 s: {last}"));
    };
    let population = fresh.population().await?;
    let rss_loaded = fresh.child.rss()?;

    let mut refused = None;
    let mut stream = None;
    while started.elapsed() < Duration::from_secs(90) {
        let open = client.watch_agents(pb::WatchAgentsRequest::default());
        match tokio::time::timeout(CALL_TIMEOUT, open).await {
            Ok(Ok(s)) => {
                stream = Some((started.elapsed(), s.into_inner()));
                break;
            }
            Ok(Err(s)) => {
                refused.get_or_insert_with(|| {
                    format!(
                        "{} at {:.2} s",
                        status_text(&s),
                        started.elapsed().as_secs_f64()
                    )
                });
            }
            Err(_) => {
                refused.get_or_insert_with(|| "watch: no answer in 10 s".into());
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready = stream.as_ref().map(|(d, _)| *d).ok_or_else(|| {
        format!(
            "no watch accepted within 90 s of the start: {}",
            refused.clone().unwrap_or_default()
        )
    });
    let resync = async {
        let Some((_, mut old)) = stream else {
            return Err("not measured: the replica accepted no watch".to_owned());
        };
        let cut = Instant::now();
        let killed: i64 =
            crate::procs::redis_cmd(redis_url, &["CLIENT", "KILL", "TYPE", "pubsub"]).await?;
        if killed == 0 {
            return Err("CLIENT KILL TYPE pubsub killed no connection".into());
        }
        // The replica noticed once its open streams end.
        let noticed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(_)) = old.message().await {}
        });
        noticed
            .await
            .map_err(|_| "open watch still running 10 s after the cut".to_owned())?;
        while cut.elapsed() < Duration::from_secs(30) {
            let open = client.watch_agents(pb::WatchAgentsRequest::default());
            if let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, open).await {
                return Ok(cut.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err("no watch accepted within 30 s of the cut".into())
    }
    .await;
    Ok(Load {
        start,
        population,
        bytes_per_agent: rss_loaded.saturating_sub(rss_empty) as f64 / population.max(1) as f64,
        ready,
        refused,
        resync,
        log: fresh.child.log_tail(4),
    })
}
