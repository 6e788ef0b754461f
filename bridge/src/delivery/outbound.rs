//! Outbound: hands queued copies to the sending identity's courier and records the outcome.
//!
//! One waiter per (sending identity, peer) with queued copies, not one task per copy: the waiter
//! asks the courier to reach the peer (`Courier::reach`: first contact sends the friend request)
//! and, while it is offline, deposits copies that waited `deposit_after_secs` at its relays a page
//! at a time. Once the peer is online the waiter claims its due copies in pages and starts one
//! transfer per copy, at most `MAX_IN_FLIGHT_PER_PEER` per peer and `queue.max_transfers` in
//! all; each transfer reads its envelope from the database when it starts. So memory depends on
//! the number of peers and transfers under way, not on the queue. Transfers ride out a peer that
//! drops mid-way; a copy past its expiry fails (the loop's query, or its transfer's timeout).
//! Backoff after refusals and errors as before. A delivery whose row the operator deleted or gave
//! up on (`toxmail-bridge queue delete/bounce`) is dropped at the loop's next pass (at most
//! `SAFETY_POLL` later); one that finishes first finds its row gone and records nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tox_runtime::transfer::{Courier, DeliveryError, MAX_IN_FLIGHT_PER_PEER};

use super::via_relay::{self, RelaySettings};
use super::{SAFETY_POLL, backoff};
use crate::events::DsnStatus;
use crate::metrics::{self, Delivery};
use crate::store::{GiveUp, OutboundRow, QueuedPeer, Store, StoreError};

/// A claimed row stays invisible to other claims this long while its delivery task runs.
const LEASE: Duration = Duration::from_secs(3600);
/// Deliveries are checked against the queue (deleted or bounced by the operator) at most this
/// often: a wake-up per intake commit must not cost a query over every row in flight.
const WITHDRAWN_CHECK: Duration = Duration::from_secs(1);
/// A transfer without a verdict this long gives its places back (the peer may have gone
/// offline mid-way; the courier would wait for it until the copy expires, holding a place under
/// the global cap): the copy is deferred with backoff and resumes from the peer's spool later.
const STALLED: Duration = Duration::from_secs(900);
/// How long `send_due` waits for the courier to confirm the peer is still online before a page.
const ONLINE_CHECK: Duration = Duration::from_secs(1);
/// Expired copies failed per query.
const EXPIRE_PAGE: i64 = 200;
/// `queue.max_transfer_mib`'s default, in KiB, for a dispatcher built without it.
const DEFAULT_TRANSFER_KIB: u32 = 256 * 1024;

/// The KiB of the transfer budget (`total` KiB) an envelope of `size` bytes takes: its size
/// rounded up, at least 1, and at most the whole budget (a larger one waits for all of it).
fn envelope_kib(size: i64, total: u32) -> u32 {
    let kib = u32::try_from((size.max(0) as u64).div_ceil(1024)).unwrap_or(u32::MAX);
    kib.clamp(1, total.max(1))
}

#[derive(Debug)]
pub struct Dispatcher {
    pub store: Store,
    /// Identity address → its courier.
    pub couriers: HashMap<String, Courier>,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub relays: Arc<RelaySettings>,
    /// Woken by the LMTP intake after each commit (see [`Dispatcher::queued_for`]).
    pub wake: Notify,
    /// Wakes the notifier when the queue changed in a way it acts on: a copy failed (its DSN
    /// goes out now) or new copies were queued (their "delayed" notice falls due later).
    pub notices: Arc<Notify>,
    /// Transfers under way over all peers (`queue.max_transfers`).
    transfers: Arc<Semaphore>,
    /// KiB of envelopes that transfers under way hold in memory (`queue.max_transfer_mib`).
    bytes: Arc<Semaphore>,
    /// The permits of `bytes`: what one envelope may take at most.
    bytes_total: u32,
    /// Rows with a delivery task, each with the token that stops it.
    inflight: Mutex<HashMap<i64, CancellationToken>>,
    /// When `drop_withdrawn` last asked the database.
    withdrawn_checked: Mutex<Option<Instant>>,
    /// The waiter of each pair with queued copies, by the `Notify` that wakes it.
    waiters: Mutex<HashMap<QueuedPeer, Arc<Notify>>>,
    /// Pairs the intake queued copies for that had no waiter: the loop starts theirs.
    new_pairs: Mutex<HashSet<QueuedPeer>>,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        couriers: HashMap<String, Courier>,
        retry_min: Duration,
        retry_max: Duration,
        relays: Arc<RelaySettings>,
        max_transfers: usize,
    ) -> Self {
        Dispatcher {
            store,
            couriers,
            retry_min,
            retry_max,
            relays,
            wake: Notify::new(),
            notices: Arc::new(Notify::new()),
            transfers: Arc::new(Semaphore::new(max_transfers.max(1))),
            bytes: Arc::new(Semaphore::new(DEFAULT_TRANSFER_KIB as usize)),
            bytes_total: DEFAULT_TRANSFER_KIB,
            inflight: Mutex::default(),
            withdrawn_checked: Mutex::default(),
            waiters: Mutex::default(),
            new_pairs: Mutex::default(),
        }
    }

    /// Bounds the envelope bytes transfers under way hold at once to `mib` MiB.
    pub fn with_transfer_bytes(mut self, mib: u64) -> Self {
        let kib = u32::try_from(mib.saturating_mul(1024).max(1)).unwrap_or(u32::MAX >> 4);
        self.bytes = Arc::new(Semaphore::new(kib as usize));
        self.bytes_total = kib;
        self
    }

    /// The intake committed copies for these pairs: wakes their waiters, or has the loop start
    /// them.
    pub fn queued_for(&self, pairs: impl IntoIterator<Item = QueuedPeer>) {
        let waiters = self.waiters.lock().expect("not poisoned");
        let mut fresh = false;
        for pair in pairs {
            match waiters.get(&pair) {
                Some(wake) => wake.notify_one(),
                None => fresh |= self.new_pairs.lock().expect("not poisoned").insert(pair),
            }
        }
        drop(waiters);
        if fresh {
            self.wake.notify_one();
        }
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut released = false;
        let mut scanned: Option<Instant> = None;
        loop {
            if !released {
                // Leases and backoff of the last run: every queued copy is tried once now.
                match self.store.release_leases().await {
                    Ok(n) => {
                        tracing::debug!(rows = n, "copies of the last run due again");
                        (released, scanned) = (true, None);
                    }
                    Err(e) => tracing::debug!(error = %e, "outbound queue not readable"),
                }
            }
            let mut recheck = None;
            if released {
                recheck = self.start_waiters(&mut scanned, &shutdown).await;
            }
            self.expire().await;
            recheck = earliest(recheck, self.drop_withdrawn().await);
            let expiry = self.store.next_outbound_expiry().await.unwrap_or(None);
            if !super::idle(&self.wake, earliest(expiry, recheck), &shutdown).await {
                return;
            }
        }
    }

    /// Starts a waiter for each pair the intake named and, at start-up and every
    /// `SAFETY_POLL`, for each pair the database has (work written by another process).
    /// Returns when the next scan is due.
    async fn start_waiters(
        self: &Arc<Self>,
        scanned: &mut Option<Instant>,
        shutdown: &CancellationToken,
    ) -> Option<SystemTime> {
        let mut pairs: Vec<QueuedPeer> = {
            let mut new = self.new_pairs.lock().expect("not poisoned");
            new.drain().collect()
        };
        let scan_due = scanned.is_none_or(|at| at.elapsed() >= SAFETY_POLL);
        if scan_due {
            match self.store.queued_peers().await {
                Ok(all) => {
                    *scanned = Some(Instant::now());
                    pairs.extend(all);
                }
                Err(e) => tracing::debug!(error = %e, "outbound queue not readable"),
            }
        }
        for pair in pairs {
            let wake = {
                let mut waiters = self.waiters.lock().expect("not poisoned");
                if waiters.contains_key(&pair) {
                    continue;
                }
                let wake = Arc::new(Notify::new());
                waiters.insert(pair.clone(), wake.clone());
                wake
            };
            let me = self.clone();
            let span = tracing::info_span!("peer", identity = %pair.sender_identity, peer = %pair.peer.public_key());
            let task = me.wait_on(pair, wake, shutdown.clone());
            tokio::spawn(tracing::Instrument::instrument(task, span));
        }
        let wait = scanned.map_or(Duration::from_secs(1), |at| {
            SAFETY_POLL.saturating_sub(at.elapsed())
        });
        Some(SystemTime::now() + wait)
    }

    /// Fails the copies past their expiry that no transfer holds (a transfer times out at the
    /// copy's expiry by itself), and wakes their waiters (a pair may be empty now).
    async fn expire(&self) {
        loop {
            let Ok(expired) = self.store.expired(EXPIRE_PAGE).await else {
                return; // tried again at the next pass
            };
            let inflight: HashSet<i64> = {
                let inflight = self.inflight.lock().expect("not poisoned");
                expired
                    .iter()
                    .map(|(id, _)| *id)
                    .filter(|id| inflight.contains_key(id))
                    .collect()
            };
            let mut failed = 0;
            for (id, pair) in &expired {
                if inflight.contains(id) {
                    continue;
                }
                tracing::warn!(row = id, "message expired in the queue");
                metrics::delivery(Delivery::Expired);
                let reason = "expired: the peer did not come online in time";
                self.retry_store(|| self.store.mark_failed(*id, reason, GiveUp::Expired))
                    .await;
                failed += 1;
                let waiters = self.waiters.lock().expect("not poisoned");
                if let Some(wake) = waiters.get(pair) {
                    wake.notify_one();
                }
            }
            if failed > 0 {
                self.notices.notify_one();
            }
            if failed == 0 || expired.len() < EXPIRE_PAGE as usize {
                return;
            }
        }
    }

    /// One pair's waiter: until the pair has nothing queued, waits for the peer (depositing at
    /// its relays meanwhile), then starts transfers of its due copies.
    async fn wait_on(
        self: Arc<Self>,
        pair: QueuedPeer,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        let lane = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_PEER));
        loop {
            let idle_lane = lane.available_permits() == MAX_IN_FLIGHT_PER_PEER;
            match self.store.has_queued(&pair).await {
                Ok(false) if idle_lane => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "outbound queue not readable");
                    if !super::idle(&wake, None, &shutdown).await {
                        return;
                    }
                    continue;
                }
            }
            match self.couriers.get(&pair.sender_identity) {
                None => {
                    let reason = format!(
                        "sending identity {} is not configured",
                        pair.sender_identity
                    );
                    // X.3.5 "system incorrectly configured".
                    let failed = Outcome::Failed(reason, DsnStatus(5, 3, 5));
                    self.settle_due(&pair, &failed).await;
                }
                Some(courier) => {
                    let in_flight = |id| self.in_flight(id);
                    let reached = tokio::select! {
                        r = courier.reach(pair.peer) => Some(r),
                        never = via_relay::deposit_rounds(
                            &self.store, courier, &self.relays, &pair, &in_flight,
                        ) => match never {},
                        () = self.until_empty(&pair, &wake) => None,
                        _ = shutdown.cancelled() => return,
                    };
                    match reached {
                        Some(Ok(())) => {
                            self.send_due(courier, &pair, &lane, &wake, &shutdown).await
                        }
                        Some(Err(e)) => {
                            tracing::info!(error = %e, "peer not reachable");
                            self.settle_due(&pair, &Outcome::of(&e)).await;
                        }
                        None => continue,
                    }
                }
            }
            let due = self.store.next_due_for(&pair).await.unwrap_or(None);
            if !super::idle(&wake, due, &shutdown).await {
                return;
            }
        }
        self.waiters.lock().expect("not poisoned").remove(&pair);
        // Copies queued between the check and the removal get a new waiter.
        if self.store.has_queued(&pair).await.unwrap_or(true) {
            self.new_pairs.lock().expect("not poisoned").insert(pair);
            self.wake.notify_one();
        }
    }

    /// Returns once `pair` has nothing queued (checked at each wake-up, at least every
    /// `SAFETY_POLL`): its copies expired or the operator deleted them while the peer was away.
    async fn until_empty(&self, pair: &QueuedPeer, wake: &Notify) {
        let never = CancellationToken::new();
        loop {
            super::idle(wake, None, &never).await;
            if let Ok(false) = self.store.has_queued(pair).await {
                return;
            }
        }
    }

    /// The peer is online: claims its due copies a page at a time, as room in its lane and in
    /// the global cap allows, and starts a transfer for each. Returns when none is due.
    async fn send_due(
        self: &Arc<Self>,
        courier: &Courier,
        pair: &QueuedPeer,
        lane: &Arc<Semaphore>,
        wake: &Arc<Notify>,
        shutdown: &CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                room = Self::room(lane.clone(), self.transfers.clone()) => room,
                _ = shutdown.cancelled() => return,
            };
            let Some(first) = first else { return };
            // Still online? Copies for a peer that left wait as rows again, not in transfers
            // (the waiter goes back to `reach` and the relay fallback).
            let online = tokio::time::timeout(ONLINE_CHECK, courier.reach(pair.peer)).await;
            if !matches!(online, Ok(Ok(()))) {
                return;
            }
            let mut rooms = vec![first];
            while rooms.len() < MAX_IN_FLIGHT_PER_PEER {
                let Ok(in_lane) = lane.clone().try_acquire_owned() else {
                    break;
                };
                let Ok(global) = self.transfers.clone().try_acquire_owned() else {
                    break;
                };
                rooms.push((in_lane, global));
            }
            let rows = match self.store.claim_for(pair, rooms.len() as i64, LEASE).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::debug!(error = %e, "outbound queue not readable");
                    return;
                }
            };
            if rows.is_empty() {
                return;
            }
            for (row, room) in rows.into_iter().zip(rooms) {
                self.spawn(courier.clone(), row, room, wake.clone());
            }
        }
    }

    /// Room for one transfer: a place in the peer's lane and one under the global cap.
    async fn room(
        lane: Arc<Semaphore>,
        transfers: Arc<Semaphore>,
    ) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let in_lane = lane.acquire_owned().await.ok()?;
        let global = transfers.acquire_owned().await.ok()?;
        Some((in_lane, global))
    }

    /// Applies `outcome` to each of `pair`'s due copies (claimed a page at a time): the peer
    /// cannot be reached, or the sending identity is gone.
    async fn settle_due(&self, pair: &QueuedPeer, outcome: &Outcome) {
        loop {
            let Ok(rows) = self.store.claim_for(pair, 200, LEASE).await else {
                return;
            };
            if rows.is_empty() {
                return;
            }
            for row in rows {
                self.record(&row, outcome.clone()).await;
            }
        }
    }

    fn in_flight(&self, id: i64) -> bool {
        self.inflight
            .lock()
            .expect("not poisoned")
            .contains_key(&id)
    }

    fn spawn(
        self: &Arc<Self>,
        courier: Courier,
        row: OutboundRow,
        room: (OwnedSemaphorePermit, OwnedSemaphorePermit),
        wake: Arc<Notify>,
    ) {
        let stop = CancellationToken::new();
        {
            let mut inflight = self.inflight.lock().expect("not poisoned");
            if inflight.contains_key(&row.id) {
                return;
            }
            inflight.insert(row.id, stop.clone());
        }
        let me = self.clone();
        let span = tracing::info_span!("deliver", row = row.id, id = %row.message_id);
        let task = async move {
            let id = row.id;
            tokio::select! {
                _ = me.deliver(&courier, row) => {}
                // Dropping the delivery gives it up (the courier cancels its file).
                _ = stop.cancelled() => {
                    tracing::info!("delivery stopped: the operator deleted or bounced the copy");
                }
            }
            me.inflight.lock().expect("not poisoned").remove(&id);
            drop(room);
            // Its waiter may claim the next copy, or sleep until a rescheduled one is due.
            wake.notify_one();
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
    }

    /// Stops the deliveries of rows no longer queued: deleted or given up by the operator (or
    /// closed by a relay's receipt, which makes the direct attempt moot).
    /// Returns when to check again if it skipped the check (it checked less than
    /// `WITHDRAWN_CHECK` ago).
    async fn drop_withdrawn(&self) -> Option<SystemTime> {
        let ids: Vec<i64> = {
            let inflight = self.inflight.lock().expect("not poisoned");
            inflight.keys().copied().collect()
        };
        {
            let mut checked = self.withdrawn_checked.lock().expect("not poisoned");
            if ids.is_empty() {
                return None;
            }
            let since = checked.map(|at| at.elapsed());
            if let Some(wait) = since.and_then(|since| WITHDRAWN_CHECK.checked_sub(since)) {
                return Some(SystemTime::now() + wait);
            }
            *checked = Some(Instant::now());
        }
        let Ok(queued) = self.store.still_queued(&ids).await else {
            return None; // asked again at the next pass
        };
        let queued: HashSet<i64> = queued.into_iter().collect();
        let inflight = self.inflight.lock().expect("not poisoned");
        for id in ids.iter().filter(|id| !queued.contains(id)) {
            if let Some(stop) = inflight.get(id) {
                stop.cancel();
            }
        }
        None
    }

    /// One transfer: reads the envelope now, delivers it (raced with the relay fallback and
    /// the copy's expiry) and records the outcome.
    async fn deliver(&self, courier: &Courier, row: OutboundRow) {
        // Room for its envelope in memory before it is read; held until the verdict.
        let kib = envelope_kib(row.size, self.bytes_total);
        let Ok(_bytes) = self.bytes.acquire_many(kib).await else {
            return;
        };
        let envelope: Arc<[u8]> = match self.store.envelope(row.id).await {
            Ok(Some(envelope)) => envelope.into(),
            Ok(None) => return tracing::info!("copy no longer queued; not sent"),
            Err(e) => {
                tracing::info!(error = %e, "envelope not readable; tried again later");
                return self.record(&row, Outcome::Deferred(e.to_string())).await;
            }
        };
        let left = row
            .expires
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let delivery = courier.deliver(row.peer, row.message_id, envelope.clone());
        let fallback =
            via_relay::deposit_when_due(&self.store, courier, &self.relays, &row, envelope);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(left, delivery) => match outcome {
                Ok(Ok(())) => Outcome::Delivered,
                Ok(Err(e)) => Outcome::of(&e),
                Err(_) => Outcome::Expired,
            },
            never = fallback => match never {},
            () = tokio::time::sleep(STALLED) => {
                Outcome::Deferred(format!("no verdict within {} s; the peer may be offline", STALLED.as_secs()))
            }
        };
        self.record(&row, outcome).await
    }

    async fn record(&self, row: &OutboundRow, outcome: Outcome) {
        match outcome {
            Outcome::Delivered => {
                tracing::info!(row = row.id, "delivered: the peer stored it");
                metrics::delivery(Delivery::Delivered);
                let age = SystemTime::now().duration_since(row.created);
                metrics::delivered_after(age.unwrap_or_default());
                self.retry_store(|| self.store.mark_delivered(row.id)).await;
                // A "delivered" report may be owed (NOTIFY=SUCCESS).
                self.notices.notify_one();
            }
            Outcome::Deferred(reason) => {
                let wait = backoff(row.attempts, self.retry_min, self.retry_max);
                tracing::info!(row = row.id, error = %reason, retry_in = ?wait, "delivery deferred");
                metrics::delivery(Delivery::Deferred);
                let next = SystemTime::now() + wait;
                self.retry_store(|| self.store.reschedule(row.id, next, &reason))
                    .await;
            }
            Outcome::Failed(reason, status) => {
                tracing::warn!(row = row.id, error = %reason, "delivery failed permanently");
                metrics::delivery(Delivery::Failed);
                let how = GiveUp::Refused(status);
                self.retry_store(|| self.store.mark_failed(row.id, &reason, how))
                    .await;
                self.notices.notify_one();
            }
            Outcome::Expired => {
                tracing::warn!(row = row.id, "message expired in the queue");
                metrics::delivery(Delivery::Expired);
                let reason = "expired: the peer did not come online in time";
                self.retry_store(|| self.store.mark_failed(row.id, reason, GiveUp::Expired))
                    .await;
                self.notices.notify_one();
            }
        }
    }

    /// Records an outcome, retrying while the database is down: an ack must not be forgotten
    /// (if the process dies first, the row is delivered again and the peer acks the duplicate).
    async fn retry_store<F, Fut>(&self, mut op: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), crate::store::StoreError>>,
    {
        let mut wait = Duration::from_millis(200);
        loop {
            match op().await {
                Ok(()) => return,
                // The operator deleted the row (`queue delete`) or its bounce went out.
                Err(StoreError::NotFound(what)) => {
                    tracing::warn!(%what, "outcome not recorded: the row is gone");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record delivery outcome; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// How one attempt at a copy ended.
#[derive(Debug, Clone)]
enum Outcome {
    Delivered,
    /// Temporary: tried again after backoff.
    Deferred(String),
    /// Permanent: the reason (for the log and the DSN's diagnostic) and the DSN's status.
    Failed(String, DsnStatus),
    Expired,
}

impl Outcome {
    fn of(e: &DeliveryError) -> Outcome {
        if e.is_temporary() {
            Outcome::Deferred(e.to_string())
        } else {
            Outcome::Failed(reason_of(e), status_of(e))
        }
    }
}

fn earliest(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The enhanced status a permanent delivery error reports in its failed DSN, from its type.
fn status_of(e: &DeliveryError) -> DsnStatus {
    use toxmail_protocol::NackCode;
    let code = match e {
        DeliveryError::Refused(n) => Some(n.code),
        _ => None,
    };
    match (e, code) {
        // X.3.4 "message too big for system".
        (DeliveryError::TooLarge { .. }, _) | (_, Some(NackCode::TooLarge)) => DsnStatus(5, 3, 4),
        // X.1.1 "bad destination mailbox address".
        (_, Some(NackCode::UnknownMailbox)) => DsnStatus(5, 1, 1),
        // X.7.0 "other or undefined security status": the seal did not check out there.
        (_, Some(NackCode::Forged | NackCode::WrongRecipient)) => DsnStatus(5, 7, 0),
        // X.6.0 "other or undefined media error": a format or version the peer cannot take.
        (_, Some(NackCode::Malformed | NackCode::UnsupportedVersion)) => DsnStatus(5, 6, 0),
        // X.1.3 "bad destination system address": not a friend and no full Tox ID.
        (DeliveryError::UnknownFriend(_), _) => DsnStatus(5, 1, 3),
        _ => DsnStatus(5, 0, 0),
    }
}

fn reason_of(e: &DeliveryError) -> String {
    match e {
        DeliveryError::Refused(n) => format!("refused by the peer ({:?}): {}", n.code, n.detail),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::envelope_kib;

    #[test]
    fn an_envelope_takes_its_size_of_the_transfer_budget_within_bounds() {
        assert_eq!(envelope_kib(0, 1024), 1);
        assert_eq!(envelope_kib(1, 1024), 1);
        assert_eq!(envelope_kib(1024, 1024), 1);
        assert_eq!(envelope_kib(1025, 1024), 2);
        assert_eq!(envelope_kib(50 << 20, 256 << 10), 50 << 10);
        // Larger than the whole budget: waits for all of it, never for more than there is.
        assert_eq!(envelope_kib(i64::MAX, 256 << 10), 256 << 10);
        assert_eq!(envelope_kib(-5, 0), 1);
    }
}
