//! Pacing per peer: at most `MAX_IN_FLIGHT_PER_PEER` deliveries and `MAX_IN_FLIGHT_KIB_PER_PEER`
//! envelope bytes to one peer under way at once; further deliveries wait in `Courier::deliver`.
//! A receiver bounds what one peer may have offered or in transfer (64, `max_peer_bytes`): the
//! sender stays well under it, so an honest burst is paced, never refused as a flood, and fewer
//! transfers compete for one congestion window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use toxmail_protocol::PublicKey;

/// Deliveries (and deposits) to one peer in flight at once.
pub const MAX_IN_FLIGHT_PER_PEER: usize = 16;
/// Envelope bytes to one peer in flight at once, in KiB (128 MiB: half the receiver's default
/// `max_peer_bytes`; a larger single envelope takes the whole lane).
const MAX_IN_FLIGHT_KIB_PER_PEER: u32 = 128 * 1024;

/// The pacing of deliveries per peer: a count and a byte budget.
#[derive(Debug)]
pub(super) struct Lane {
    count: Arc<Semaphore>,
    kib: Arc<Semaphore>,
}

/// Lanes by peer; a lane nobody uses (no permit out, nobody waiting) is dropped when the next
/// one is made.
#[derive(Debug, Default)]
pub(super) struct Lanes(Mutex<HashMap<PublicKey, Arc<Lane>>>);

impl Lanes {
    pub(super) fn get(&self, peer: PublicKey) -> Arc<Lane> {
        let mut lanes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lane) = lanes.get(&peer) {
            return lane.clone();
        }
        lanes.retain(|_, lane| {
            Arc::strong_count(lane) > 1 || lane.count.available_permits() < MAX_IN_FLIGHT_PER_PEER
        });
        let lane = Arc::new(Lane {
            count: Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_PEER)),
            kib: Arc::new(Semaphore::new(MAX_IN_FLIGHT_KIB_PER_PEER as usize)),
        });
        lanes.insert(peer, lane.clone());
        lane
    }

    /// Waits for room to send `size` bytes to `peer`; the room is given back when the permits
    /// are dropped (the verdict came, or the caller gave up).
    pub(super) async fn enter(
        &self,
        peer: PublicKey,
        size: usize,
    ) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let lane = self.get(peer);
        let kib = u32::try_from(size.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, MAX_IN_FLIGHT_KIB_PER_PEER);
        let count = lane.count.clone().acquire_owned().await.ok()?;
        let bytes = lane.kib.clone().acquire_many_owned(kib).await.ok()?;
        Some((count, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: PublicKey = PublicKey([1; 32]);

    #[tokio::test]
    async fn a_peer_gets_at_most_its_count_of_deliveries_at_once() {
        let lanes = Lanes::default();
        let mut held = Vec::new();
        for _ in 0..MAX_IN_FLIGHT_PER_PEER {
            held.push(lanes.enter(PEER, 10_000).await.unwrap());
        }
        let next = lanes.enter(PEER, 10_000);
        tokio::pin!(next);
        assert!(futures_poll_once(next.as_mut()).await.is_none(), "waits");
        // Another peer has a lane of its own.
        assert!(lanes.enter(PublicKey([2; 32]), 10_000).await.is_some());
        held.pop();
        assert!(next.await.is_some(), "goes when one finishes");
    }

    #[tokio::test]
    async fn large_envelopes_share_the_byte_budget_and_one_larger_than_it_still_goes() {
        let lanes = Lanes::default();
        let mib = 1024 * 1024;
        let first = lanes.enter(PEER, 100 * mib).await.unwrap();
        let second = lanes.enter(PEER, 100 * mib);
        tokio::pin!(second);
        assert!(
            futures_poll_once(second.as_mut()).await.is_none(),
            "over 128 MiB: waits"
        );
        drop(first);
        let second = second.await.unwrap();
        drop(second);
        // Bigger than the whole budget: takes all of it rather than waiting forever.
        assert!(lanes.enter(PEER, 300 * mib).await.is_some());
    }

    #[tokio::test]
    async fn idle_lanes_are_forgotten_and_busy_ones_kept() {
        let lanes = Lanes::default();
        let busy = lanes.enter(PEER, 1).await.unwrap();
        for n in 2..50u8 {
            drop(lanes.enter(PublicKey([n; 32]), 1).await.unwrap());
        }
        let map = lanes.0.lock().unwrap();
        assert!(map.len() <= 2, "{} lanes kept", map.len());
        assert!(map.contains_key(&PEER), "a lane in use is never dropped");
        drop(map);
        drop(busy);
    }

    /// Polls a future once: `Some` if it completed, `None` if it is waiting.
    async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| match std::pin::Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await
    }
}
