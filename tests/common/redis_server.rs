//! [`RedisProcess`]: a `redis-server` of the test's own.

use std::time::Duration;

use super::free_port;

/// A `redis-server` child process on a free loopback port, with no
/// persistence, in a temporary directory. Killed and reaped on drop; tests
/// can kill it (SIGKILL) and restart it on the same port.
pub struct RedisProcess {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl RedisProcess {
    /// Starts a fresh server and waits until it answers PING.
    pub async fn start() -> Self {
        let mut redis = Self {
            port: 0,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..10 {
            redis.port = free_port();
            if redis.spawn().await {
                return redis;
            }
            redis.kill();
        }
        panic!("could not start redis-server on a free port");
    }

    async fn spawn(&mut self) -> bool {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir.path().to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (make deps)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false; // exited: port taken
            }
            if self.ping().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Whether the server answers PING right now.
    pub async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let attempt = async {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(500), attempt).await,
            Ok(Some(_))
        )
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A direct connection, for inspecting keys or injecting faults.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// SIGKILLs the server and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if self.spawn().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not restart redis-server on port {}", self.port);
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
