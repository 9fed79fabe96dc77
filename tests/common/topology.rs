//! Redis topologies of real processes on loopback, for BEHAVIOUR.md §8: a
//! primary with a replica and three Sentinels, and a six-node Redis Cluster
//! (three primaries, three replicas). Every process runs in its own
//! temporary directory on a free 127.0.0.1 port, without persistence, and is
//! SIGKILLed and reaped on drop. Every wait is bounded in count and time.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::free_port;

/// How long any topology may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One `redis-server` process (a data node or, with `--sentinel`, a
/// Sentinel), restartable with the same arguments.
pub struct Node {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    /// Holds the node's files (and a Sentinel's rewritten config).
    dir: tempfile::TempDir,
}

impl Node {
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (make deps)");
        self.child = Some(child);
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command on a fresh connection, bounded by 1 s; `None` when the
    /// node does not answer or refuses.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let attempt = async {
            let client = redis::Client::open(self.url()).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            cmd.query_async::<T>(&mut conn).await.ok()
        };
        tokio::time::timeout(Duration::from_secs(1), attempt)
            .await
            .ok()
            .flatten()
    }

    /// `INFO <section>` as text (empty when the node does not answer).
    pub async fn info(&self, section: &str) -> String {
        self.query::<String>(redis::cmd("INFO").arg(section))
            .await
            .unwrap_or_default()
    }

    /// Whether `INFO replication` says `role:master`.
    pub async fn is_primary(&self) -> bool {
        self.info("replication").await.contains("role:master")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `redis-server <args>` (plus port, loopback bind and no
/// persistence) on a free port, retrying another port if it does not
/// answer; `config` (a file written into its directory first, e.g. a
/// Sentinel's) is passed as the first argument when given.
async fn start_node(
    config: Option<&dyn Fn(u16) -> String>,
    args: &dyn Fn(u16) -> Vec<String>,
) -> Node {
    for _ in 0..10 {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        if let Some(config) = config {
            let path = dir.path().join("node.conf");
            std::fs::write(&path, config(port)).unwrap();
            all.push(path.to_str().unwrap().to_owned());
        }
        all.extend(
            [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.path().to_str().unwrap(),
                "--repl-diskless-sync-delay",
                "0",
            ]
            .map(str::to_owned),
        );
        all.extend(args(port));
        let mut node = Node {
            port,
            args: all,
            child: None,
            dir,
        };
        node.spawn();
        for _ in 0..250 {
            if !node.is_running() {
                break; // port taken: try another
            }
            if node.query::<String>(&redis::cmd("PING")).await.is_some() {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node.kill();
    }
    panic!("could not start redis-server on a free port");
}

/// Polls `cond` every 50 ms, at most `timeout`; panics naming `what`.
async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

// === Sentinel ===

/// A primary, one replica and three Sentinels monitoring it as `mymaster`
/// (quorum 2, down-after 1 s, failover-timeout 3 s).
pub struct SentinelTopology {
    /// The data nodes: `[0]` starts as the primary, `[1]` as its replica.
    pub data: Vec<Node>,
    /// The three Sentinels.
    pub sentinels: Vec<Node>,
}

/// The monitored primary's name.
pub const MASTER: &str = "mymaster";

impl SentinelTopology {
    /// Starts the topology and waits until the replica is in sync and every
    /// Sentinel knows the replica and the other two Sentinels (so that a
    /// failover can be authorised at once).
    pub async fn start() -> Self {
        let primary = start_node(None, &|_| Vec::new()).await;
        let primary_port = primary.port;
        let replica = start_node(None, &move |_| {
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary_port.to_string(),
            ]
        })
        .await;
        let config = move |port: u16| {
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel resolve-hostnames no\n\
                 sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 3000\n\
                 sentinel parallel-syncs {MASTER} 1\n"
            )
        };
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let node = start_node(Some(&config), &|_| vec!["--sentinel".into()]).await;
            sentinels.push(node);
        }
        let topology = Self {
            data: vec![primary, replica],
            sentinels,
        };
        topology.wait_replicas_in_sync().await;
        topology.wait_sentinels_agree().await;
        topology
    }

    /// `127.0.0.1:a,127.0.0.1:b,127.0.0.1:c`, for `--redis-sentinels`.
    pub fn sentinels_arg(&self) -> String {
        self.sentinels
            .iter()
            .map(Node::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The registry flags for this topology.
    pub fn store_args(&self) -> Vec<String> {
        vec![
            "--store".into(),
            "redis".into(),
            "--redis-sentinels".into(),
            self.sentinels_arg(),
            "--redis-sentinel-master".into(),
            MASTER.into(),
        ]
    }

    /// Waits until every live replica reports `master_link_status:up`.
    pub async fn wait_replicas_in_sync(&self) {
        for node in &self.data {
            if node.child.is_none() {
                continue;
            }
            wait_for(START_TIMEOUT, "replica in sync", || async {
                let info = node.info("replication").await;
                info.contains("role:master") || info.contains("master_link_status:up")
            })
            .await;
        }
    }

    /// Waits until every Sentinel sees the replica and two other Sentinels.
    pub async fn wait_sentinels_agree(&self) {
        for sentinel in &self.sentinels {
            wait_for(START_TIMEOUT, "Sentinels discover each other", || async {
                let fields: Option<std::collections::HashMap<String, String>> = sentinel
                    .query(redis::cmd("SENTINEL").arg("MASTER").arg(MASTER))
                    .await;
                fields.is_some_and(|f| {
                    f.get("num-other-sentinels").map(String::as_str) == Some("2")
                        && f.get("num-slaves").map(String::as_str) == Some("1")
                })
            })
            .await;
        }
    }

    /// The port the Sentinels name as the primary now (by the first
    /// Sentinel that answers).
    pub async fn primary_port(&self) -> Option<u16> {
        for sentinel in &self.sentinels {
            let addr: Option<Vec<String>> = sentinel
                .query(
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(MASTER),
                )
                .await;
            if let Some(port) = addr.and_then(|a| a.get(1).and_then(|p| p.parse().ok())) {
                return Some(port);
            }
        }
        None
    }

    /// The data node the Sentinels name as the primary.
    pub async fn primary_index(&self) -> usize {
        let port = self.primary_port().await.expect("a Sentinel answers");
        self.data
            .iter()
            .position(|n| n.port == port)
            .expect("the primary is one of ours")
    }

    /// Waits (at most 20 s) until the Sentinels name a primary other than
    /// port `old` and that node answers as a primary; returns its index.
    pub async fn wait_promotion(&self, old: u16) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if let Some(port) = self.primary_port().await
                && port != old
                && let Some(index) = self.data.iter().position(|n| n.port == port)
                && self.data[index].is_primary().await
            {
                return index;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no failover within 20 s");
    }
}

// === Cluster ===

/// A six-node Redis Cluster: three primaries with one replica each
/// (node timeout 1 s, replicas always allowed to take over).
pub struct ClusterTopology {
    /// Every node.
    pub nodes: Vec<Node>,
}

impl ClusterTopology {
    /// Starts six nodes, joins them with `redis-cli --cluster create`, and
    /// waits until the cluster is ok and every replica is in sync.
    pub async fn start() -> Self {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            // The cluster bus port defaults to port + 10000, which overflows
            // for a high free port: give each node one of its own.
            let bus = free_port();
            let node = start_node(None, &move |_| {
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-replica-validity-factor",
                    "0",
                    "--cluster-port",
                    &bus.to_string(),
                ]
                .map(str::to_owned)
                .to_vec()
            })
            .await;
            nodes.push(node);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(node.addr());
        }
        let status = tokio::task::spawn_blocking(move || {
            create
                .args(["--cluster-replicas", "1", "--cluster-yes"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        })
        .await
        .unwrap()
        .expect("redis-cli must be installed");
        assert!(status.success(), "redis-cli --cluster create failed");
        let topology = Self { nodes };
        topology.wait_healthy().await;
        topology
    }

    /// `127.0.0.1:a,…` of every node, for `--redis-cluster-nodes`.
    pub fn nodes_arg(&self) -> String {
        self.nodes
            .iter()
            .map(Node::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The registry flags for this topology.
    pub fn store_args(&self) -> Vec<String> {
        vec![
            "--store".into(),
            "redis".into(),
            "--redis-cluster-nodes".into(),
            self.nodes_arg(),
        ]
    }

    /// Waits until every live node says `cluster_state:ok` and every live
    /// replica's link to its primary is up.
    pub async fn wait_healthy(&self) {
        for node in &self.nodes {
            if node.child.is_none() {
                continue;
            }
            let deadline = tokio::time::Instant::now() + START_TIMEOUT;
            loop {
                let cluster = node
                    .query::<String>(redis::cmd("CLUSTER").arg("INFO"))
                    .await
                    .unwrap_or_default();
                let replication = node.info("replication").await;
                if cluster.contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
                {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node {} not healthy after {START_TIMEOUT:?}:\n{cluster}\n{replication}",
                    node.port
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The port of the node that serves `key`'s slot as primary now, as
    /// the first live node's `CLUSTER NODES` says (test-side inspection).
    pub async fn primary_port_of(&self, key: &str) -> Option<u16> {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let Some(slot) = node
                .query::<u16>(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
                .await
            else {
                continue;
            };
            let Some(text) = node
                .query::<String>(redis::cmd("CLUSTER").arg("NODES"))
                .await
            else {
                continue;
            };
            for line in text.lines() {
                let fields: Vec<&str> = line.split(' ').collect();
                if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                    continue;
                }
                let serves = fields[8..].iter().any(|range| {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
                });
                if serves {
                    let port = fields[1]
                        .split('@')
                        .next()
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| p.parse().ok());
                    return port;
                }
            }
        }
        None
    }

    /// The index of the node serving the registry's slot (prefix
    /// `registry`) as primary.
    pub async fn registry_primary(&self) -> usize {
        let port = self
            .primary_port_of("{registry}:rev")
            .await
            .expect("a node answers");
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("one of ours")
    }

    /// Waits (at most 20 s) until the registry's slot is served by a live
    /// primary other than port `old`; returns its index.
    pub async fn wait_promotion(&self, old: u16) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if let Some(port) = self.primary_port_of("{registry}:rev").await
                && port != old
                && let Some(index) = self.nodes.iter().position(|n| n.port == port)
                && self.nodes[index].is_primary().await
            {
                return index;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no cluster failover within 20 s");
    }
}
