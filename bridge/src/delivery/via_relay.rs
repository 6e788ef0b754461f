//! Relay nodes, bridge side (docs/relay.md). Each identity befriends and registers with the
//! relays of `[relays].register_with` (renewed at every connection), tells every other peer that
//! comes online which relays hold its mail (`RelayList`), learns its peers' relays from theirs,
//! deposits a queued copy at the peer's relays once it has waited `deposit_after_secs`, and closes
//! the copy as delivered on a relay's `Released` receipt (or the recipient's own late ack).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tox_runtime::transfer::{Courier, PeerEvent};
use toxmail_protocol::{
    MessageId, PublicKey, Register, RelayFrame, RelayList, ReleaseOutcome, Released, ToxId,
};

use crate::config::Config;
use crate::metrics::{self, Delivery};
use crate::store::{OutboundRow, QueuedPeer, Store};

/// Copies deposited at once by one pair's relay fallback (each holds its envelope meanwhile).
const DEPOSIT_PAGE: i64 = 16;
/// A deposit that no relay took is tried again after at least this long.
const MIN_DEPOSIT_RETRY: Duration = Duration::from_secs(30);
/// One relay gets this long to confirm custody (it may first need a friend connection).
const DEPOSIT_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Relays that hold our identities' mail.
    pub own: Vec<ToxId>,
    /// `None`: never deposit.
    pub deposit_after: Option<Duration>,
    pub max_deposits: usize,
    pub register_for: Duration,
}

impl RelaySettings {
    pub fn from_config(config: &Config) -> RelaySettings {
        let r = &config.relays;
        RelaySettings {
            own: config.own_relays(),
            deposit_after: (r.deposit_after_secs > 0)
                .then(|| Duration::from_secs(r.deposit_after_secs)),
            max_deposits: r.max_deposits,
            register_for: Duration::from_secs(r.register_secs),
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Runs one identity's relay duties until `shutdown`.
pub async fn agent(
    courier: Courier,
    store: Store,
    settings: Arc<RelaySettings>,
    shutdown: CancellationToken,
) {
    let mut events = courier.subscribe();
    let own: HashSet<PublicKey> = settings.own.iter().map(|r| r.public_key()).collect();
    // Which identity registered, in the log: each identity registers on its own.
    let me = courier.node().info().await.ok().map(|i| i.public_key);
    for relay in &settings.own {
        if let Err(e) = courier.add_relay(*relay).await {
            tracing::warn!(relay = %relay, error = %e, "cannot befriend relay");
        }
    }
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        match event {
            PeerEvent::Online(pk) if own.contains(&pk) => {
                let expires = unix(SystemTime::now() + settings.register_for);
                let frame = RelayFrame::Register(Register { expires });
                if !courier.send_relay_frame(pk, frame).await {
                    tracing::warn!(relay = %pk, "registration not sent");
                }
            }
            PeerEvent::Online(pk) if !settings.own.is_empty() => {
                let list = RelayFrame::RelayList(RelayList {
                    relays: settings.own.clone(),
                });
                courier.send_relay_frame(pk, list).await;
            }
            PeerEvent::Relay { from, frame } => on_relay_frame(&store, &own, me, from, frame).await,
            PeerEvent::Relayed { origin, via, id } => {
                tracing::info!(peer = %origin, relay = %via, %id, "received through a relay")
            }
            PeerEvent::Receipt { from, id } => on_receipt(&store, from, id).await,
            PeerEvent::Online(_) | PeerEvent::Offline(_) => {}
        }
    }
}

async fn on_relay_frame(
    store: &Store,
    own: &HashSet<PublicKey>,
    me: Option<PublicKey>,
    from: PublicKey,
    f: RelayFrame,
) {
    match f {
        RelayFrame::RelayList(list) => {
            tracing::info!(peer = %from, relays = list.relays.len(), "peer told us its relays");
            if let Err(e) = store.set_peer_relays(&from, &list.relays).await {
                tracing::warn!(peer = %from, error = %e, "peer's relays not recorded");
            }
        }
        RelayFrame::Holding(h) if own.contains(&from) => {
            let key = me.map(|k| k.to_string()).unwrap_or_default();
            tracing::info!(relay = %from, %key, until = h.expires, held = h.count, "registered with relay")
        }
        RelayFrame::Refuse(r) if own.contains(&from) => {
            tracing::warn!(relay = %from, code = ?r.code, detail = %r.detail, "relay refused our registration")
        }
        RelayFrame::Released(r) => on_released(store, from, r).await,
        other => tracing::debug!(peer = %from, frame = ?other, "relay frame ignored"),
    }
}

/// A relay says it no longer holds `r.message_id`. Only `Delivered` from the relay recorded as
/// holding our copy closes it; anything else (another key, an id we do not hold there, a copy
/// already closed) changes nothing. Other outcomes leave the copy to its own retries and expiry.
async fn on_released(store: &Store, from: PublicKey, r: Released) {
    let id = r.message_id;
    if r.outcome != ReleaseOutcome::Delivered {
        return tracing::info!(relay = %from, %id, outcome = ?r.outcome, "relay no longer holds a copy");
    }
    match store.close_released(&id, &from).await {
        Ok(Some(row)) => {
            metrics::delivery(Delivery::Delivered);
            tracing::info!(row, relay = %from, %id, "delivered via relay: the recipient acked it there")
        }
        Ok(None) => {
            tracing::debug!(relay = %from, %id, "receipt for no copy in its custody; ignored")
        }
        Err(e) => tracing::warn!(relay = %from, %id, error = %e, "receipt not recorded"),
    }
}

/// The recipient acked an id we are not sending (it got the copy through a relay): closes our
/// queued copy of it to that peer, if there is one.
async fn on_receipt(store: &Store, from: PublicKey, id: MessageId) {
    match store.close_acked(&id, &from).await {
        Ok(Some(row)) => {
            metrics::delivery(Delivery::Delivered);
            tracing::info!(row, peer = %from, %id, "delivered: the recipient acked it")
        }
        Ok(None) => {
            tracing::debug!(peer = %from, %id, "ack for no queued copy to this peer; ignored")
        }
        Err(e) => tracing::warn!(peer = %from, %id, error = %e, "receipt not recorded"),
    }
}

/// The relays to deposit `row` at: those the peer published in DNS, then those it told us.
async fn candidates(store: &Store, row: &OutboundRow, max: usize) -> Vec<ToxId> {
    let told = store
        .peer_relays(&row.peer.public_key())
        .await
        .unwrap_or_default();
    let mut seen = HashSet::new();
    row.relays
        .iter()
        .chain(told.iter())
        .filter(|r| seen.insert(r.public_key()))
        .take(max)
        .copied()
        .collect()
}

/// Once `row` has waited `deposit_after`, deposits it at up to `max_deposits` of the peer's
/// relays and records custody; retries while no relay took it. Never returns: the caller races
/// it against the direct delivery, whose ack (or the recipient's, as a duplicate) ends both.
pub async fn deposit_when_due(
    store: &Store,
    courier: &Courier,
    settings: &RelaySettings,
    row: &OutboundRow,
    envelope: Arc<[u8]>,
) -> Infallible {
    let (Some(after), false) = (settings.deposit_after, row.relayed) else {
        return std::future::pending().await;
    };
    if let Ok(wait) = (row.created + after).duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    loop {
        let relays = candidates(store, row, settings.max_deposits).await;
        if relays.is_empty() {
            tracing::info!("peer still offline and no relay of its known; waiting");
        }
        if deposit_at(store, courier, row, relays, envelope.clone()).await {
            return std::future::pending().await;
        }
        tokio::time::sleep(after.max(MIN_DEPOSIT_RETRY)).await;
    }
}

/// While `pair`'s peer is offline (the caller races this against `Courier::reach`): deposits its
/// copies that have waited `deposit_after` and no relay holds, a page at a time, each envelope
/// read when its deposit starts; copies no relay took are tried again every
/// `max(deposit_after, 30 s)`. Copies `in_flight` (their transfer races its own deposit) are
/// left out. Never returns.
pub async fn deposit_rounds(
    store: &Store,
    courier: &Courier,
    settings: &RelaySettings,
    pair: &QueuedPeer,
    in_flight: &(dyn Fn(i64) -> bool + Sync),
) -> Infallible {
    let Some(after) = settings.deposit_after else {
        return std::future::pending().await;
    };
    let retry = after.max(MIN_DEPOSIT_RETRY);
    // Copies up to `cursor` were tried this round.
    let (mut cursor, mut round) = (0i64, tokio::time::Instant::now());
    loop {
        match store.deposit_due(pair, after, cursor, DEPOSIT_PAGE).await {
            Ok(page) if !page.is_empty() => {
                cursor = page.last().map_or(cursor, |row| row.id);
                // Dropping this future (the peer came online) aborts the deposits under way.
                let mut deposits = tokio::task::JoinSet::new();
                for row in page.into_iter().filter(|row| !in_flight(row.id)) {
                    let (store, courier) = (store.clone(), courier.clone());
                    let max = settings.max_deposits;
                    deposits.spawn(async move { deposit_copy(&store, &courier, max, &row).await });
                }
                while deposits.join_next().await.is_some() {}
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "outbound queue not readable"),
        }
        // Until the next copy falls due for its first deposit, or the next round of retries.
        let next_round = round + retry;
        let first = store.first_undeposited(pair, cursor).await.ok().flatten();
        let next_first = first.map(|created| {
            let wait = (created + after)
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::time::Instant::now() + wait
        });
        let until = next_first.map_or(next_round, |t| t.min(next_round));
        let soonest = tokio::time::Instant::now() + Duration::from_millis(100);
        tokio::time::sleep_until(until.max(soonest)).await;
        if tokio::time::Instant::now() >= next_round {
            (cursor, round) = (0, tokio::time::Instant::now());
        }
    }
}

/// Deposits one copy at up to `max_deposits` of the peer's relays at once and records custody;
/// false when no relay took it.
async fn deposit_copy(store: &Store, courier: &Courier, max: usize, row: &OutboundRow) -> bool {
    let relays = candidates(store, row, max).await;
    if relays.is_empty() {
        tracing::debug!(
            row = row.id,
            "peer offline and no relay of its known; waiting"
        );
        return false;
    }
    let envelope: Arc<[u8]> = match store.envelope(row.id).await {
        Ok(Some(envelope)) => envelope.into(),
        Ok(None) => return false, // delivered or given up meanwhile
        Err(e) => {
            tracing::debug!(row = row.id, error = %e, "envelope not readable; deposit later");
            return false;
        }
    };
    deposit_at(store, courier, row, relays, envelope).await
}

/// Deposits `envelope` at all of `relays` at once and records which took it; true if any did.
async fn deposit_at(
    store: &Store,
    courier: &Courier,
    row: &OutboundRow,
    relays: Vec<ToxId>,
    envelope: Arc<[u8]>,
) -> bool {
    // All at once: a relay that is down must not hold up the others for its timeout.
    // Dropping this future (the direct delivery won) aborts the deposits still running.
    let mut deposits = tokio::task::JoinSet::new();
    for (n, relay) in relays.into_iter().enumerate() {
        let (courier, envelope) = (courier.clone(), envelope.clone());
        let (id, expires) = (row.message_id, unix(row.expires));
        deposits.spawn(async move {
            let deposit = courier.deposit(relay, id, envelope, expires);
            (
                n,
                relay,
                tokio::time::timeout(DEPOSIT_TIMEOUT, deposit).await,
            )
        });
    }
    let mut held = Vec::new();
    while let Some(done) = deposits.join_next().await {
        let Ok((n, relay, outcome)) = done else {
            continue; // a panicked deposit task: that relay holds nothing we know of
        };
        match outcome {
            Ok(Ok(())) => held.push((n, relay.to_string())),
            Ok(Err(e)) => tracing::info!(relay = %relay, error = %e, "deposit refused"),
            Err(_) => tracing::info!(relay = %relay, "relay did not answer the deposit"),
        }
    }
    // In the order the relays were chosen, whichever answered first.
    held.sort();
    let held: Vec<String> = held.into_iter().map(|(_, r)| r).collect();
    if !held.is_empty() {
        tracing::info!(
            relays = held.len(),
            "peer offline: copy in a relay's custody"
        );
        match store.mark_relayed(row.id, &held.join(",")).await {
            Ok(()) => metrics::delivery(Delivery::Relayed),
            Err(e) => {
                tracing::warn!(error = %e, "custody not recorded; the copy may be deposited again")
            }
        }
        return true;
    }
    false
}
