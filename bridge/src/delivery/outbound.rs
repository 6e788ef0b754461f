//! Outbound: hands queued copies to the sending identity's courier and records the outcome.
//! The courier itself waits for the peer to come online (event driven) and rides out
//! disconnects; this loop only claims rows, keeps one delivery task per row, and applies backoff
//! after refusals and errors. At start-up every queued row is handed over at once. A delivery
//! whose row the operator deleted or gave up on (`toxmail-bridge queue delete/bounce`) is
//! dropped at the loop's next pass (at most `SAFETY_POLL` later); one that finishes first finds
//! its row gone and records nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tox_runtime::transfer::{Courier, DeliveryError};

use super::backoff;
use super::via_relay::{self, RelaySettings};
use crate::events::DsnStatus;
use crate::metrics::{self, Delivery};
use crate::store::{GiveUp, OutboundRow, Store, StoreError};

/// A claimed row stays invisible to other claims this long while its delivery task runs.
const LEASE: Duration = Duration::from_secs(3600);
/// Deliveries are checked against the queue (deleted or bounced by the operator) at most this
/// often: a wake-up per intake commit must not cost a query over every row in flight.
const WITHDRAWN_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Dispatcher {
    pub store: Store,
    /// Identity address → its courier.
    pub couriers: HashMap<String, Courier>,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub relays: Arc<RelaySettings>,
    /// Woken by the LMTP intake after each commit.
    pub wake: Notify,
    /// Wakes the notifier when the queue changed in a way it acts on: a copy failed (its DSN
    /// goes out now) or new copies were queued (their "delayed" notice falls due later).
    pub notices: Arc<Notify>,
    /// Rows with a delivery task, each with the token that stops it.
    inflight: Mutex<HashMap<i64, CancellationToken>>,
    /// When `drop_withdrawn` last asked the database.
    withdrawn_checked: Mutex<Option<Instant>>,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        couriers: HashMap<String, Courier>,
        retry_min: Duration,
        retry_max: Duration,
        relays: Arc<RelaySettings>,
    ) -> Self {
        Dispatcher {
            store,
            couriers,
            retry_min,
            retry_max,
            relays,
            wake: Notify::new(),
            notices: Arc::new(Notify::new()),
            inflight: Mutex::default(),
            withdrawn_checked: Mutex::default(),
        }
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut startup = true;
        loop {
            let rows = if startup {
                self.store.queued().await
            } else {
                self.store.claim_due(200, LEASE).await
            };
            match rows {
                Ok(rows) => {
                    startup = false;
                    for row in rows {
                        self.spawn(row);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "outbound queue not readable"),
            }
            let recheck = self.drop_withdrawn().await;
            // Sleep until a commit wakes us, the next retry falls due, or a skipped check is due.
            let due = self.store.next_outbound_due().await.unwrap_or(None);
            let due = match (due, recheck) {
                (Some(due), Some(recheck)) => Some(due.min(recheck)),
                (due, recheck) => due.or(recheck),
            };
            if !super::idle(&self.wake, due, &shutdown).await {
                return;
            }
        }
    }

    fn spawn(self: &Arc<Self>, row: OutboundRow) {
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
                _ = me.deliver(row) => {}
                // Dropping the delivery gives it up (the courier cancels its file).
                _ = stop.cancelled() => {
                    tracing::info!("delivery stopped: the operator deleted or bounced the copy");
                }
            }
            me.inflight.lock().expect("not poisoned").remove(&id);
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

    async fn deliver(&self, mut row: OutboundRow) {
        let Some(courier) = self.couriers.get(&row.sender_identity) else {
            let reason = format!("sending identity {} is not configured", row.sender_identity);
            let how = refused(&reason);
            self.retry_store(|| self.store.mark_failed(row.id, &reason, how))
                .await;
            return self.notices.notify_one();
        };
        let left = row
            .expires
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let envelope: Arc<[u8]> = std::mem::take(&mut row.envelope).into();
        let delivery = courier.deliver(row.peer, row.message_id, envelope.clone());
        let fallback =
            via_relay::deposit_when_due(&self.store, courier, &self.relays, &row, envelope);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(left, delivery) => outcome,
            never = fallback => match never {},
        };
        match outcome {
            Ok(Ok(())) => {
                tracing::info!("delivered: the peer stored it");
                metrics::delivery(Delivery::Delivered);
                let age = SystemTime::now().duration_since(row.created);
                metrics::delivered_after(age.unwrap_or_default());
                self.retry_store(|| self.store.mark_delivered(row.id)).await
            }
            Ok(Err(e)) if e.is_temporary() => {
                let wait = backoff(row.attempts, self.retry_min, self.retry_max);
                tracing::info!(error = %e, retry_in = ?wait, "delivery deferred");
                metrics::delivery(Delivery::Deferred);
                let (next, reason) = (SystemTime::now() + wait, e.to_string());
                self.retry_store(|| self.store.reschedule(row.id, next, &reason))
                    .await;
                // The loop sleeps until the earliest due row: this one is due sooner than its lease.
                self.wake.notify_one();
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "delivery failed permanently");
                metrics::delivery(Delivery::Failed);
                let reason = reason_of(&e);
                let how = refused(&reason);
                self.retry_store(|| self.store.mark_failed(row.id, &reason, how))
                    .await;
                self.notices.notify_one();
            }
            Err(_) => {
                tracing::warn!("message expired in the queue");
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

/// A permanent refusal, with the status its failed DSN will report.
fn refused(reason: &str) -> GiveUp {
    GiveUp::Refused(DsnStatus::from(super::notify::status_for(reason)))
}

fn reason_of(e: &DeliveryError) -> String {
    match e {
        DeliveryError::Refused(n) => format!("refused by the peer ({:?}): {}", n.code, n.detail),
        other => other.to_string(),
    }
}
