//! The Sentinel half of the topology: which primary the Sentinels name,
//! and their `+switch-master` announcements.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use redis::{
    aio::PubSubStream,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{
    CONNECT_TIMEOUT, Endpoints, MAX_BACKOFF, Mode, SentinelEndpoints, Topology,
    connection::Primary, unavailable,
};
use crate::{domain::Result, store::redis::classify, sync};

pub(super) fn client(
    s: &SentinelEndpoints,
) -> std::result::Result<SentinelClient, redis::RedisError> {
    SentinelClient::build(
        s.sentinels.clone(),
        s.master.clone(),
        Some(node_info(s)),
        SentinelServerType::Master,
    )
}

fn node_info(s: &SentinelEndpoints) -> SentinelNodeConnectionInfo {
    let mut redis_info = redis::RedisConnectionInfo::default();
    if let Some(username) = &s.username {
        redis_info = redis_info.set_username(username);
    }
    if let Some(password) = &s.password {
        redis_info = redis_info.set_password(password);
    }
    let mut info = SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info);
    if s.tls {
        info = info.set_tls_mode(redis::TlsMode::Secure);
    }
    info
}

impl Topology {
    pub(super) async fn sentinel_primary(&self) -> Result<redis::Client> {
        let sentinel = self
            .sentinel
            .as_ref()
            .ok_or_else(|| unavailable("not a Sentinel topology"))?;
        sentinel
            .lock()
            .await
            .async_get_client()
            .await
            .map_err(classify)
    }

    /// The connections to the primary the Sentinels name (and whose role
    /// the crate verified), resolving it first when none is current. One
    /// resolution serves every connection until [`Topology::forget`].
    pub(super) async fn sentinel_primary_connections(&self) -> Result<(u64, Arc<Primary>)> {
        let Some(Mode::Sentinel {
            current,
            generation,
        }) = self.mode.get()
        else {
            return Err(unavailable("not a Sentinel topology"));
        };
        let known = || sync::read(current).clone();
        if let Some(known) = known() {
            return Ok(known);
        }
        let sentinel = self
            .sentinel
            .as_ref()
            .ok_or_else(|| unavailable("not a Sentinel topology"))?;
        // One resolution at a time: the others wait for its result.
        let mut sentinel = sentinel.lock().await;
        if let Some(known) = known() {
            return Ok(known);
        }
        let client = tokio::time::timeout(CONNECT_TIMEOUT, sentinel.async_get_client())
            .await
            .map_err(|_| unavailable("no Sentinel named a primary in time"))?
            .map_err(classify)?;
        let primary = Primary::new(client.clone(), self.response_timeout).map_err(classify)?;
        let resolved = (
            generation.fetch_add(1, Ordering::AcqRel) + 1,
            Arc::new(primary),
        );
        *sync::write(current) = Some(resolved.clone());
        tracing::info!(
            primary = %client.get_connection_info().addr(),
            "primary resolved through Sentinel"
        );
        Ok(resolved)
    }

    /// The pool of resolution `generation` may point at a primary that is
    /// gone: the next call resolves again (a later resolution is kept).
    pub(super) fn forget(&self, generation: u64) {
        if let Some(Mode::Sentinel { current, .. }) = self.mode.get() {
            let mut current = sync::write(current);
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                *current = None;
            }
        }
    }

    /// Every connection must find the primary again.
    pub(super) fn switched(&self) {
        if let Some(Mode::Sentinel { current, .. }) = self.mode.get() {
            *sync::write(current) = None;
        }
        self.switches.send_modify(|n| *n += 1);
    }

    /// Runs until `shutdown`: on a Sentinel topology, listens to the
    /// Sentinels' `+switch-master` announcements and makes every connection
    /// find the new primary at once. Nothing to do on the others.
    pub async fn run_announcements(self: Arc<Self>, shutdown: CancellationToken) {
        let Endpoints::Sentinel(s) = &self.endpoints else {
            return;
        };
        let mut backoff = Duration::from_millis(50);
        while !shutdown.is_cancelled() {
            match self.announcements().await {
                Ok(mut stream) => {
                    backoff = Duration::from_millis(50);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            message = stream.next() => {
                                let Some(message) = message else { break };
                                let payload: String = message.get_payload().unwrap_or_default();
                                if payload.split(' ').next() == Some(s.master.as_str()) {
                                    tracing::warn!(master = %s.master, "Sentinel announced a new primary");
                                    self.switched();
                                }
                            }
                        }
                    }
                    tracing::debug!("lost the Sentinel announcements; reconnecting");
                }
                Err(error) => {
                    tracing::debug!(error = %crate::domain::error_chain(&error), "no Sentinel to listen to; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn announcements(&self) -> Result<PubSubStream> {
        let sentinel = self
            .sentinel
            .as_ref()
            .ok_or_else(|| unavailable("not a Sentinel topology"))?;
        let connect = async {
            // The lock only for choosing the Sentinel: resolutions of the
            // primary must not wait for this subscription.
            let client = {
                let mut sentinel = sentinel.lock().await;
                sentinel.async_get_sentinel_client().await?
            };
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 3, connect).await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(unavailable("Sentinel did not answer in time")),
        }
    }
}
