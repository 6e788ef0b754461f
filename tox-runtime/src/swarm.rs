//! A private Tox network on 127.0.0.1 for tests, demos and benchmarks: nodes bootstrap only from
//! each other (or from a `tox-bootstrapd` the caller started on loopback), never from public nodes.

use std::time::{Duration, Instant};

use toxmail_protocol::PublicKey;

use crate::error::Result;
use crate::node::{Handle, NodeInfo};

/// Bootstraps every node from every other one over 127.0.0.1.
pub async fn link(nodes: &[(&Handle, &NodeInfo)]) -> Result<()> {
    for (handle, me) in nodes {
        for (_, other) in nodes {
            if other.public_key == me.public_key {
                continue;
            }
            if let Some(bootstrap) = other.as_loopback_bootstrap() {
                handle.bootstrap(&bootstrap).await?;
            }
        }
    }
    Ok(())
}

/// Waits until `peer` is a friend of `handle` with a live connection; false after `timeout`.
pub async fn wait_friend_online(handle: &Handle, peer: &PublicKey, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(friends) = handle.friends().await
            && friends
                .iter()
                .any(|f| f.public_key == *peer && f.connection.is_online())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
