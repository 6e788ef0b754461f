//! The relay's store against a real private PostgreSQL 15 (`toxmail_tests::postgres`): the
//! relay-wide byte cap and the registration cap hold under concurrent writers, and the running
//! total follows deposits, deliveries and the purge; a release owes its depositor exactly one
//! receipt, which lives no longer than the envelope would have been held; the hand-on lists
//! held mail page by page without bodies and reads each body back whole, in chunks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;
use toxmail_protocol::{MessageId, PublicKey, ReleaseOutcome};
use toxmail_relay::store::{Cursor, DepositLimits, Held, HoldRefusal, Limit, Receipt, Store};
use toxmail_tests::postgres::PgServer;

const SIZE: usize = 1000;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn fresh(connections: usize) -> (PgServer, Store) {
    let server = PgServer::started().await;
    let store = Store::connect(&server.url(), connections).unwrap();
    assert_eq!(store.migrate().await.unwrap(), 4, "every migration applied");
    (server, store)
}

/// Generous per-depositor and per-recipient quotas: only `total_bytes` can bind.
fn limits(total_bytes: u64) -> DepositLimits {
    DepositLimits {
        daily_count: 1000,
        daily_bytes: 1 << 30,
        recipient_bytes: 1 << 30,
        total_bytes,
    }
}

fn envelope(recipient: u8, expires: u64) -> Held {
    Held {
        message_id: MessageId::random(),
        recipient: PublicKey([recipient; 32]),
        envelope: vec![0xee; SIZE],
        expires,
    }
}

/// `held_total` as the deposits see it, and what `held` really sums to.
async fn totals(server: &PgServer) -> (i64, i64) {
    let (client, conn) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT (SELECT bytes FROM held_total),
                    (SELECT COALESCE(sum(size), 0)::bigint FROM held)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

const fn bytes(n: i64) -> (i64, i64) {
    (n * SIZE as i64, n * SIZE as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deposits_never_hold_more_than_total_bytes() {
    let (server, store) = fresh(16).await;
    let limits = limits(5 * SIZE as u64);
    // 24 deposits at once, each from its own depositor for its own recipient: room for 5.
    let mut set = JoinSet::new();
    for n in 0..24u8 {
        let store = store.clone();
        set.spawn(async move {
            let held = envelope(n, now() + 3600);
            store.hold(&held, &PublicKey([100 + n; 32]), limits).await
        });
    }
    let (mut held, mut full) = (0, 0);
    while let Some(result) = set.join_next().await {
        match result.unwrap().expect("no storage error") {
            Ok(_) => held += 1,
            Err(HoldRefusal::Over(Limit::TotalBytes)) => full += 1,
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    println!("24 concurrent deposits against room for 5: {held} held, {full} refused");
    assert_eq!((held, full), (5, 19));
    assert_eq!(totals(&server).await, bytes(5));
    assert_eq!(store.status().await.unwrap().held, 5);

    // The check made before any byte moves agrees.
    let one = PublicKey([1; 32]);
    let refusal = store.quota_refusal(&one, &one, SIZE as u64, limits).await;
    assert_eq!(refusal.unwrap(), Some(Limit::TotalBytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_deposits_racing_for_the_last_room_under_total_bytes_store_exactly_one() {
    let (server, store) = fresh(4).await;
    // Room for one more each round: the cap grows by one envelope per round.
    for round in 1..=10u8 {
        let limits = limits(u64::from(round) * SIZE as u64);
        let racer = |n: u8| {
            let store = store.clone();
            let held = envelope(2 * round + n, now() + 3600);
            tokio::spawn(async move { store.hold(&held, &PublicKey([200 + n; 32]), limits).await })
        };
        let (first, second) = (racer(0), racer(1));
        let outcomes = [first.await.unwrap(), second.await.unwrap()].map(|r| r.unwrap());
        let stored = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(stored, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes.contains(&Err(HoldRefusal::Over(Limit::TotalBytes))),
            "the other is refused for the total (temporary)"
        );
        assert_eq!(totals(&server).await, bytes(i64::from(round)));
    }
}

#[tokio::test]
async fn the_hand_on_lists_held_mail_a_page_at_a_time_and_reads_bodies_whole() {
    let (_server, store) = fresh(4).await;
    let depositor = PublicKey([7; 32]);
    let mut kept = Vec::new();
    for n in 0..5usize {
        let mut held = envelope(1, now() + 3600);
        // Two larger than a read chunk (1 MiB), one of them not a whole number of chunks.
        held.envelope = (0..[10, 3 << 20, 20, (1 << 20) + 7, 30][n])
            .map(|i| (i % 251) as u8)
            .collect();
        store
            .hold(&held, &depositor, limits(1 << 30))
            .await
            .unwrap()
            .unwrap();
        kept.push(held);
    }
    // Held for someone else, and one that expired: not listed.
    for other in [envelope(2, now() + 3600), envelope(1, now() - 10)] {
        store
            .hold(&other, &depositor, limits(1 << 30))
            .await
            .unwrap()
            .unwrap();
    }
    let recipient = PublicKey([1; 32]);
    let mut listed = Vec::new();
    let mut cursor = Cursor::START;
    loop {
        let page = store.held_page(&recipient, cursor, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        cursor = Cursor::after(last);
        listed.extend(page);
    }
    let ids: Vec<_> = listed.iter().map(|l| l.message_id).collect();
    let want: Vec<_> = kept.iter().map(|h| h.message_id).collect();
    assert_eq!(ids, want, "each once, oldest first");
    for (l, h) in listed.iter().zip(&kept) {
        assert_eq!(l.size, h.envelope.len() as u64);
        let body = store
            .held_envelope(&recipient, &l.message_id, l.size)
            .await
            .unwrap();
        assert_eq!(body.as_deref(), Some(&h.envelope[..]), "exact bytes");
    }
    // A size that does not match the row is an error, not a short envelope.
    let wrong = store.held_envelope(&recipient, &ids[0], 11).await;
    assert!(wrong.is_err());
    // Released: no longer listed or read.
    store
        .release(&recipient, &ids[1], ReleaseOutcome::Delivered)
        .await
        .unwrap();
    assert_eq!(
        store
            .held_envelope(&recipient, &ids[1], listed[1].size)
            .await
            .unwrap(),
        None
    );
    let page = store
        .held_page(&recipient, Cursor::START, 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 4);
    assert!(page.iter().all(|l| l.message_id != ids[1]));
}

#[tokio::test]
async fn the_running_total_follows_deliveries_and_the_purge() {
    let (server, store) = fresh(4).await;
    let limits = limits(3 * SIZE as u64);
    let depositor = PublicKey([7; 32]);
    let first = envelope(1, now() + 3600);
    store
        .hold(&first, &depositor, limits)
        .await
        .unwrap()
        .unwrap();
    // Held for a second, then expired: the purge takes it.
    let soon = envelope(2, now() + 1);
    store
        .hold(&soon, &depositor, limits)
        .await
        .unwrap()
        .unwrap();
    let third = envelope(3, now() + 3600);
    store
        .hold(&third, &depositor, limits)
        .await
        .unwrap()
        .unwrap();
    let fourth = envelope(4, now() + 3600);
    assert_eq!(
        store.hold(&fourth, &depositor, limits).await.unwrap(),
        Err(HoldRefusal::Over(Limit::TotalBytes)),
        "full"
    );
    // The same deposit again is confirmed, not counted twice, even when full.
    assert!(
        store
            .hold(&first, &depositor, limits)
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(totals(&server).await, bytes(3));

    // A delivery frees its bytes.
    assert_eq!(
        store
            .release(
                &first.recipient,
                &first.message_id,
                ReleaseOutcome::Delivered
            )
            .await
            .unwrap(),
        Some(depositor)
    );
    assert_eq!(totals(&server).await, bytes(2));
    store
        .hold(&fourth, &depositor, limits)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(totals(&server).await, bytes(3));

    // The purge frees the expired one's.
    let purged = async {
        while store.purge_expired().await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), purged)
        .await
        .expect("expired envelope purged");
    assert_eq!(totals(&server).await, bytes(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_never_pass_max_registrations_and_renewals_always_do() {
    let (_server, store) = fresh(16).await;
    let until = now() + 3600;
    let mut set = JoinSet::new();
    for n in 0..16u8 {
        let store = store.clone();
        set.spawn(async move {
            let key = PublicKey([n; 32]);
            (key, store.register(&key, until, 3).await.unwrap())
        });
    }
    let mut taken = Vec::new();
    while let Some(result) = set.join_next().await {
        let (key, registered) = result.unwrap();
        if registered {
            taken.push(key);
        }
    }
    assert_eq!(taken.len(), 3, "exactly max_registrations recorded");
    assert_eq!(store.status().await.unwrap().registrations, 3);
    let outsider = (0..16u8)
        .map(|n| PublicKey([n; 32]))
        .find(|k| !taken.contains(k))
        .unwrap();
    assert!(!store.is_registered(&outsider).await.unwrap());
    assert!(
        !store.register(&outsider, until, 3).await.unwrap(),
        "still full"
    );

    // Renewing one in force is never refused, nor is ending one; an ended one frees a place.
    assert!(store.register(&taken[0], until + 60, 3).await.unwrap());
    assert!(store.register(&taken[1], 0, 3).await.unwrap());
    assert!(!store.is_registered(&taken[1]).await.unwrap());
    assert!(store.register(&outsider, until, 3).await.unwrap());
    assert!(store.is_registered(&outsider).await.unwrap());
    assert_eq!(store.status().await.unwrap().registrations, 3);
}

#[tokio::test]
async fn a_release_owes_its_depositor_one_receipt_until_sent_or_expired() {
    let (_server, store) = fresh(4).await;
    let (depositor, other) = (PublicKey([7; 32]), PublicKey([8; 32]));
    let kept = envelope(1, now() + 3600);
    let brief = envelope(1, now() + 2);
    for held in [&kept, &brief] {
        store
            .hold(held, &depositor, limits(1 << 30))
            .await
            .unwrap()
            .unwrap();
    }
    let released = store
        .release(&kept.recipient, &kept.message_id, ReleaseOutcome::Delivered)
        .await
        .unwrap();
    assert_eq!(released, Some(depositor));
    // Released again (a second ack, a race with the purge): nothing more is owed.
    let again = store
        .release(&kept.recipient, &kept.message_id, ReleaseOutcome::Delivered)
        .await
        .unwrap();
    assert_eq!(again, None);
    let owed = Receipt {
        message_id: kept.message_id,
        outcome: ReleaseOutcome::Delivered,
    };
    assert_eq!(store.receipts_for(&depositor).await.unwrap(), vec![owed]);
    assert!(
        store.receipts_for(&other).await.unwrap().is_empty(),
        "only the depositor's"
    );
    store
        .receipt_sent(&depositor, &kept.message_id)
        .await
        .unwrap();
    assert!(store.receipts_for(&depositor).await.unwrap().is_empty());

    // A receipt for an envelope held until `brief.expires` is purged with that expiry.
    store
        .release(
            &brief.recipient,
            &brief.message_id,
            ReleaseOutcome::Rejected,
        )
        .await
        .unwrap();
    assert_eq!(store.receipts_for(&depositor).await.unwrap().len(), 1);
    let gone = async {
        while !store.receipts_for(&depositor).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        store.purge_expired().await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(30), gone)
        .await
        .unwrap();
}
