//! Peer presence: records when an identity's node sees a peer come online or go offline, so
//! `toxmail-bridge queue list` can say "peer offline since …". A write that fails is dropped:
//! presence is for the operator's eyes, no delivery decision reads it.

use tokio_util::sync::CancellationToken;
use tox_runtime::transfer::{Courier, PeerEvent};

use crate::store::Store;

/// Follows `courier`'s peer events until shutdown. Every peer counts as offline from the start
/// (nothing is known of the time the node was down) and again once the node stops.
pub async fn follow(identity: String, courier: Courier, store: Store, shutdown: CancellationToken) {
    // Subscribed first: an event that comes during the reset waits in the channel.
    let mut events = courier.subscribe();
    reset(&store, &identity).await;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            e = events.recv() => match e {
                Some(e) => e,
                None => break,
            },
        };
        let (peer, online) = match event {
            PeerEvent::Online(pk) => (pk, true),
            PeerEvent::Offline(pk) => (pk, false),
            _ => continue,
        };
        if let Err(e) = store.set_presence(&identity, &peer, online).await {
            tracing::debug!(%identity, %peer, online, error = %e, "peer presence not recorded");
        }
    }
    reset(&store, &identity).await;
}

async fn reset(store: &Store, identity: &str) {
    if let Err(e) = store.reset_presence(identity).await {
        tracing::debug!(%identity, error = %e, "peer presence not reset");
    }
}
