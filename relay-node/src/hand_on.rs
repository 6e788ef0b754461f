//! Hand-on in pages: the envelopes held for an online recipient are listed a page at a time (ids
//! and sizes only) and each body is read from the store only when there is room for it: at most
//! [`Budget::count`] envelopes and [`Budget::bytes`] bytes per recipient, and
//! [`Budget::total_bytes`] across all recipients of the process, are in memory at once; the next
//! starts as an earlier one is acknowledged or refused. Each is deleted only after its ack (or a
//! refusal for good), as before. One drain runs per recipient; it stops when the recipient goes
//! offline (what it was sending stays held) and runs again when asked while it runs.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tox_runtime::transfer::{Courier, DeliveryError};
use toxmail_protocol::{MessageId, NackClass, PublicKey, ReleaseOutcome};

use crate::metrics;
use crate::store::{Cursor, Listed, Store};

/// Envelopes listed per query (ids and sizes: a few KiB).
const LISTING: u32 = 64;
const MIB: u64 = 1024 * 1024;

/// How much of the held mail may be in memory for the hand-on at once.
#[derive(Debug)]
pub struct Budget {
    /// Envelopes in flight to one recipient.
    pub count: usize,
    /// Bytes in flight to one recipient (an envelope larger than this goes alone).
    pub bytes: u64,
    /// Bytes in flight to all recipients together (an envelope larger than this goes alone).
    pub total_bytes: u64,
    total: Arc<Semaphore>,
    /// Envelope bodies are read one at a time.
    reading: tokio::sync::Mutex<()>,
}

/// The budget of every mailroom in the process that does not bring its own: a relay runs one
/// mailroom, a bridge serving its friends one per identity, all sharing it.
static SHARED: LazyLock<Arc<Budget>> =
    LazyLock::new(|| Arc::new(Budget::new(4, 16 * MIB, 32 * MIB)));

impl Budget {
    pub fn new(count: usize, bytes: u64, total_bytes: u64) -> Budget {
        Budget {
            count: count.max(1),
            bytes,
            total_bytes,
            total: Arc::new(Semaphore::new(kib(total_bytes, total_bytes))),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// The process-wide budget (4 envelopes and 16 MiB per recipient, 32 MiB in all).
    pub fn shared() -> Arc<Budget> {
        SHARED.clone()
    }
}

/// `size` in KiB permits of a semaphore holding `cap` bytes: at least one, at most all of it.
fn kib(size: u64, cap: u64) -> usize {
    let cap = cap.div_ceil(1024).clamp(1, u64::from(u32::MAX));
    usize::try_from(size.div_ceil(1024).clamp(1, cap)).unwrap_or(usize::MAX)
}

/// Room for one envelope: given back when dropped (its hand-on ended).
#[derive(Debug)]
struct Room {
    _permits: [OwnedSemaphorePermit; 3],
}

/// One recipient's share of the budget, for one drain.
#[derive(Debug)]
struct Lane {
    count: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

impl Lane {
    fn new(budget: &Budget) -> Lane {
        Lane {
            count: Arc::new(Semaphore::new(budget.count)),
            bytes: Arc::new(Semaphore::new(kib(budget.bytes, budget.bytes))),
        }
    }

    /// Waits for room for an envelope of `size` bytes: in this recipient's count and bytes, then
    /// in the process's bytes (each taken whole, always in this order, so none waits on another).
    async fn room(&self, budget: &Budget, size: u64) -> Option<Room> {
        let one = self.count.clone().acquire_owned().await.ok()?;
        let mine = kib(size, budget.bytes) as u32;
        let mine = self.bytes.clone().acquire_many_owned(mine).await.ok()?;
        let all = kib(size, budget.total_bytes) as u32;
        let all = budget.total.clone().acquire_many_owned(all).await.ok()?;
        Some(Room {
            _permits: [one, mine, all],
        })
    }
}

/// One recipient's drain: asked again while it ran, and how to stop it.
#[derive(Debug)]
struct Drain {
    again: bool,
    stop: CancellationToken,
}

/// Hands held envelopes to their online recipients; cloned into each drain.
#[derive(Clone, Debug)]
pub(crate) struct HandOn {
    store: Store,
    courier: Courier,
    budget: Arc<Budget>,
    drains: Arc<Mutex<HashMap<PublicKey, Drain>>>,
    /// Hears the depositor of every envelope released (it is owed a receipt).
    released: mpsc::UnboundedSender<PublicKey>,
}

impl HandOn {
    pub(crate) fn new(
        store: Store,
        courier: Courier,
        budget: Arc<Budget>,
        released: mpsc::UnboundedSender<PublicKey>,
    ) -> HandOn {
        HandOn {
            store,
            courier,
            budget,
            drains: Arc::default(),
            released,
        }
    }

    fn drains(&self) -> std::sync::MutexGuard<'_, HashMap<PublicKey, Drain>> {
        self.drains.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands on what is held for `recipient` (online and registered): starts its drain, or has
    /// the running one list again once it is through, so nothing deposited meanwhile waits.
    pub(crate) fn start(&self, recipient: PublicKey) {
        let mut drains = self.drains();
        if let Some(drain) = drains.get_mut(&recipient) {
            drain.again = true;
            if drain.stop.is_cancelled() {
                drain.stop = CancellationToken::new();
            }
            return;
        }
        let drain = Drain {
            again: false,
            stop: CancellationToken::new(),
        };
        drains.insert(recipient, drain);
        tokio::spawn(self.clone().drain(recipient));
    }

    /// `recipient` went offline: its drain gives up what it is sending (still held) and ends.
    pub(crate) fn stop(&self, recipient: &PublicKey) {
        if let Some(drain) = self.drains().get_mut(recipient) {
            drain.again = false;
            drain.stop.cancel();
        }
    }

    async fn drain(self, recipient: PublicKey) {
        loop {
            let stop = {
                let mut drains = self.drains();
                let drain = drains
                    .get_mut(&recipient)
                    .expect("a drain's entry outlives it");
                drain.again = false;
                drain.stop.clone()
            };
            if !stop.is_cancelled() {
                self.pages(recipient, &stop).await;
            }
            let mut drains = self.drains();
            if !drains.get(&recipient).is_some_and(|d| d.again) {
                drains.remove(&recipient);
                return;
            }
        }
    }

    /// Lists what is held for `recipient` page by page and hands each envelope on as room frees;
    /// returns when all have ended (delivered, refused, kept for later) or `stop` was cancelled.
    async fn pages(&self, recipient: PublicKey, stop: &CancellationToken) {
        let lane = Lane::new(&self.budget);
        let mut running = JoinSet::new();
        let mut cursor = Cursor::START;
        'pages: loop {
            let page = match self.store.held_page(&recipient, cursor, LISTING).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(peer = %recipient, error = %e, "cannot list held mail");
                    break;
                }
            };
            let last_page = page.len() < LISTING as usize;
            for listed in page {
                cursor = Cursor::after(&listed);
                while running.try_join_next().is_some() {}
                let room = tokio::select! {
                    _ = stop.cancelled() => break 'pages,
                    room = lane.room(&self.budget, listed.size) => room,
                };
                let Some(room) = room else { break 'pages };
                let (this, stop) = (self.clone(), stop.clone());
                running.spawn(async move { this.one(recipient, listed, room, stop).await });
            }
            if last_page {
                break;
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// Reads one envelope and hands it on; `room` is given back when this returns.
    async fn one(self, recipient: PublicKey, listed: Listed, room: Room, stop: CancellationToken) {
        let id = listed.message_id;
        let read = async {
            let _one_at_a_time = self.budget.reading.lock().await;
            self.store.held_envelope(&recipient, &id, listed.size).await
        };
        let envelope = tokio::select! {
            _ = stop.cancelled() => return,
            read = read => match read {
                Ok(Some(envelope)) => envelope,
                Ok(None) => return, // acknowledged or purged since it was listed
                Err(e) => return tracing::warn!(peer = %recipient, %id, error = %e, "cannot read held mail"),
            },
        };
        if let Some(depositor) =
            hand_on(&self.courier, &self.store, recipient, id, envelope, &stop).await
        {
            let _ = self.released.send(depositor);
        }
        drop(room);
    }
}

/// Delivers one held envelope to its recipient (the key it is sealed to) and deletes it once
/// acknowledged, or once the recipient refused it for good. A temporary refusal is retried after
/// a growing pause while the envelope is still held; other failures, and `stop`, leave it for
/// the next time the recipient comes online. Returns the depositor once it is owed a receipt.
async fn hand_on(
    courier: &Courier,
    store: &Store,
    recipient: PublicKey,
    id: MessageId,
    envelope: Arc<[u8]>,
    stop: &CancellationToken,
) -> Option<PublicKey> {
    let mut pause = Duration::from_secs(2);
    let outcome = loop {
        let started = Instant::now();
        let delivered = tokio::select! {
            _ = stop.cancelled() => return None, // the delivery is given up; the envelope stays
            d = courier.deliver(recipient, id, envelope.clone()) => d,
        };
        match delivered {
            Ok(()) => {
                metrics::HANDON_SECONDS.observe(started.elapsed().as_secs_f64());
                tracing::info!(peer = %recipient, %id, "held envelope delivered; deleting it");
                break ReleaseOutcome::Delivered;
            }
            Err(DeliveryError::Refused(n)) if n.class == NackClass::Temporary => {
                tracing::info!(peer = %recipient, %id, detail = %n.detail, retry_in = ?pause,
                    "recipient refused for now");
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(300));
                if !matches!(store.held_by(&recipient, &id).await, Ok(Some(_))) {
                    return None; // expired and purged meanwhile, or the store is down
                }
            }
            Err(e) if e.is_temporary() => {
                tracing::info!(peer = %recipient, %id, error = %e, "hand-on failed; kept");
                return None;
            }
            Err(e) => {
                tracing::warn!(peer = %recipient, %id, error = %e, "recipient refused for good; deleting");
                break ReleaseOutcome::Rejected;
            }
        }
    };
    // Past the verdict, `stop` no longer applies: the recipient has it (or refused it for good).
    let mut wait = Duration::from_millis(200);
    loop {
        match store.release(&recipient, &id, outcome).await {
            Ok(depositor) => return depositor,
            Err(e) => {
                tracing::warn!(%id, error = %e, "cannot delete a delivered envelope; retrying")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_takes_its_size_in_kib_at_least_one_and_at_most_the_whole_budget() {
        assert_eq!(kib(1, 32 * MIB), 1);
        assert_eq!(kib(1024, 32 * MIB), 1);
        assert_eq!(kib(1025, 32 * MIB), 2);
        assert_eq!(kib(10 * MIB, 32 * MIB), 10 * 1024);
        assert_eq!(kib(40 * MIB, 32 * MIB), 32 * 1024, "a large one goes alone");
        assert_eq!(kib(0, 0), 1);
    }

    #[tokio::test]
    async fn three_ten_mib_envelopes_fit_one_recipients_budget_and_the_fourth_waits_for_room() {
        let budget = Budget::new(4, 32 * MIB, 48 * MIB);
        let (lane, other) = (Lane::new(&budget), Lane::new(&budget));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(lane.room(&budget, 10 * MIB).await.unwrap());
        }
        assert!(
            lane.bytes.available_permits() < kib(10 * MIB, budget.bytes),
            "a fourth 10 MiB envelope would wait"
        );
        // Another recipient finds 18 MiB of the process's 48 left: one more 10 MiB envelope.
        held.push(other.room(&budget, 10 * MIB).await.unwrap());
        assert!(budget.total.available_permits() < kib(10 * MIB, budget.total_bytes));
        held.clear();
        assert_eq!(lane.bytes.available_permits(), 32 * 1024, "room given back");
        assert_eq!(budget.total.available_permits(), 48 * 1024);
        // Small envelopes: the count binds.
        for _ in 0..4 {
            held.push(lane.room(&budget, 1000).await.unwrap());
        }
        assert_eq!(lane.count.available_permits(), 0);
    }
}
