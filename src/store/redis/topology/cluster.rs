//! The Cluster half of the topology: whether the seeds are a cluster, and
//! its clients.

use redis::cluster::ClusterClientBuilder;

use super::{CONNECT_TIMEOUT, connection::connection_config, unavailable};
use crate::{domain::Result, store::redis::classify};

pub(super) fn builder(nodes: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.to_vec())
}

/// Whether the first seed that answers says it is a cluster node.
pub(super) async fn probe(nodes: &[String]) -> Result<bool> {
    let mut last = unavailable("no seed node");
    for node in nodes {
        let attempt = async {
            let client = redis::Client::open(node.as_str())?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&connection_config(CONNECT_TIMEOUT))
                .await?;
            redis::cmd("INFO")
                .arg("cluster")
                .query_async::<String>(&mut conn)
                .await
        };
        match attempt.await {
            Ok(info) => return Ok(info.contains("cluster_enabled:1")),
            Err(error) => last = classify(error),
        }
    }
    Err(last)
}
