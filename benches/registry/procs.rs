//! The run's child processes: `redis-server`, registry replicas (the real
//! release binary) and the ceiling (this binary again). Each is killed when
//! its guard drops, on every path out of the run, a panic included.

use std::{
    io::Read,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use agent_registry::pb;

use crate::load::{Client, connect};

/// The environment variable that makes this binary serve the ceiling at
/// the address it names instead of running the benchmark.
pub const CEILING_ENV: &str = "AGENT_REGISTRY_BENCH_CEILING";

/// How long a child may take to answer its first call.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A free loopback port (bound, then released for the child to bind).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// A running child; killed and reaped on drop.
pub struct Child {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Child {
    /// Starts `command` with stdout and stderr in `<dir>/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> Result<Self, String> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = command
            .stdin(Stdio::piped())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", command.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss(&self) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| format!("{path}: no VmRSS"))
    }

    /// `Some(why)` when the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited ({status}); last log lines: {}",
                self.name,
                self.log_tail(5)
            )),
            Ok(None) => None,
            Err(e) => Some(format!("{}: {e}", self.name)),
        }
    }

    /// The last `lines` lines of the child's log, on one line.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let text = strip_ansi(&text);
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join(" ⏎ ");
        if tail.is_empty() {
            "(empty)".to_owned()
        } else {
            tail
        }
    }
}

/// `text` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway `redis-server` on a free loopback port.
pub struct Redis {
    _child: Child,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
}

impl Redis {
    /// Starts it and waits (bounded) until it answers PING.
    pub async fn start(dir: &Path) -> Result<Self, String> {
        let port = free_port()?;
        let data = dir.join("redis");
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(&data);
        let mut child = Child::spawn("redis-server", command, dir)
            .map_err(|e| format!("{e} (redis-server must be installed: make deps)"))?;
        let url = format!("redis://127.0.0.1:{port}");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Some(why) = child.exited() {
                return Err(why);
            }
            if redis_cmd::<String>(&url, &["PING"]).await.is_ok() {
                return Ok(Self { _child: child, url });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err("redis-server did not answer PING within 10 s".into())
    }
}

/// One Redis command on a fresh connection (bounded to 10 s).
pub async fn redis_cmd<T: redis::FromRedisValue>(url: &str, args: &[&str]) -> Result<T, String> {
    let call = async {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async::<T>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| format!("redis {} timed out", args[0]))?
}

/// `used_memory` of the Redis at `url`, in bytes.
pub async fn redis_used_memory(url: &str) -> Result<u64, String> {
    let info: String = redis_cmd(url, &["INFO", "memory"]).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "INFO memory: no used_memory".to_owned())
}

/// A server process the bench talks to over loopback gRPC.
pub struct Server {
    /// The child (its pid gives the RSS).
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The registry's metrics port (none for the ceiling).
    pub metrics_port: Option<u16>,
}

impl Server {
    /// The real server (release binary of this package), with `extra` flags.
    pub fn registry(name: &str, extra: &[&str], dir: &Path) -> Result<Self, String> {
        let port = free_port()?;
        let metrics = free_port()?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_agent-registry"));
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--metrics-port",
                &metrics.to_string(),
                "--http-port",
                "none",
            ])
            // 10 000 watchers plus the bench's own streams fit.
            .args(["--max-streams", "20000", "--max-ttl", "3600"])
            .args(extra)
            .env("RUST_LOG", server_log());
        Ok(Self {
            child: Child::spawn(name, command, dir)?,
            endpoint: format!("http://127.0.0.1:{port}"),
            metrics_port: Some(metrics),
        })
    }

    /// The ceiling: this very binary, re-executed with [`CEILING_ENV`].
    pub fn ceiling(dir: &Path) -> Result<Self, String> {
        let port = free_port()?;
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut command = Command::new(exe);
        command.env(
            CEILING_ENV,
            SocketAddr::from(([127, 0, 0, 1], port)).to_string(),
        );
        Ok(Self {
            child: Child::spawn("ceiling", command, dir)?,
            endpoint: format!("http://127.0.0.1:{port}"),
            metrics_port: None,
        })
    }

    /// Waits (bounded) until the server answers a ListAgents; returns a
    /// client connection and how long it took.
    pub async fn ready(&mut self) -> Result<(Client, Duration), String> {
        let started = Instant::now();
        let mut last = String::from("never connected");
        while started.elapsed() < START_TIMEOUT {
            if let Some(why) = self.child.exited() {
                return Err(why);
            }
            match connect(&self.endpoint).await {
                Ok(mut client) => {
                    let probe = client.list_agents(pb::ListAgentsRequest {
                        page_size: 1,
                        ..Default::default()
                    });
                    match tokio::time::timeout(Duration::from_secs(10), probe).await {
                        Ok(Ok(_)) => return Ok((client, started.elapsed())),
                        Ok(Err(status)) => last = crate::load::status_text(&status),
                        Err(_) => last = "ListAgents timed out".into(),
                    }
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(format!(
            "not answering after {START_TIMEOUT:?}: {last}; log: {}",
            self.child.log_tail(5)
        ))
    }

    /// The sum of the registry's `service_registry_agents_total` gauges.
    pub async fn population(&self) -> Result<u64, String> {
        let port = self.metrics_port.ok_or("no metrics port")?;
        let url = format!("http://127.0.0.1:{port}/metrics");
        let get = async {
            reqwest::get(&url)
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())
        };
        let text = tokio::time::timeout(Duration::from_secs(10), get)
            .await
            .map_err(|_| "metrics scrape timed out".to_owned())??;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("service_registry_agents_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }
}

/// The servers' `RUST_LOG`: `REGISTRY_BENCH_SERVER_LOG`, or `warn`.
pub fn server_log() -> String {
    std::env::var("REGISTRY_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into())
}
