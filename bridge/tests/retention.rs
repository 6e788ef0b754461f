//! Retention (issue 12) against a real private PostgreSQL: the purge deletes only finished rows
//! past the retention (delivered copies; inbound rows injected or failed whose sealed expiry has
//! passed by the grace), never a queued, leased, failed-awaiting-DSN or pending row; it works in
//! batches; inbound dedup still refuses a replay within the retention; `queue_page` pages by id.
//! The ignored `bench_*` test measures the 5 s statistics and the purge over a million delivered
//! rows (docs/benchmarks.md, "Retention and history").

use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use toxmail_bridge::retention::Retention;
use toxmail_bridge::store::retention::EXPIRY_GRACE;
use toxmail_bridge::store::{InboundKey, NewInbound, NewOutbound, Purged, Store};
use toxmail_protocol::{MessageId, PublicKey, ToxId};
use toxmail_tests::postgres::PgServer;

const DAY: Duration = Duration::from_secs(86_400);
const KEEP: Duration = Duration::from_secs(30 * 86_400);

async fn fresh() -> (PgServer, Store, tokio_postgres::Client) {
    let server = PgServer::started().await;
    let store = Store::connect(&server.url(), 4).unwrap();
    store.migrate().await.unwrap();
    let (db, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    (server, store, db)
}

fn copy(recipient: &str) -> NewOutbound {
    NewOutbound {
        message_id: MessageId::random(),
        idem_key: None,
        recipient: recipient.to_owned(),
        envelope_sender: "alice@a.test".to_owned(),
        sender_identity: "alice@a.test".to_owned(),
        peer: ToxId::new(PublicKey([7; 32]), 1),
        envelope: b"SEALED".to_vec(),
        expires: SystemTime::now() + 5 * DAY,
        relays: vec![],
    }
}

async fn queue(store: &Store, n: usize) -> Vec<i64> {
    let copies: Vec<_> = (0..n).map(|i| copy(&format!("r{i}@b.test"))).collect();
    let queued = store.enqueue(&copies).await.unwrap();
    queued.iter().map(|q| q.id).collect()
}

/// Moves a copy's times `days` into the past, as if it had been queued (and delivered) then.
async fn age_copy(db: &tokio_postgres::Client, id: i64, days: f64) {
    db.execute(
        "UPDATE outbound SET created = created - make_interval(secs => $2), \
         delivered_at = delivered_at - make_interval(secs => $2) WHERE id = $1",
        &[&id, &(days * 86_400.0)],
    )
    .await
    .unwrap();
}

fn received(n: u8, expires: SystemTime) -> NewInbound {
    NewInbound {
        message_id: MessageId([n; 32]),
        sender_key: PublicKey([9; 32]),
        identity: "bob@b.test".to_owned(),
        envelope: b"sealed".to_vec(),
        sender_verdict: "none".to_owned(),
        expires,
    }
}

fn key(n: u8) -> InboundKey {
    InboundKey {
        sender: PublicKey([9; 32]),
        id: MessageId([n; 32]),
    }
}

/// Moves an inbound row's receipt `days` into the past.
async fn age_inbound(db: &tokio_postgres::Client, n: u8, days: f64) {
    db.execute(
        "UPDATE inbound SET received = received - make_interval(secs => $2) \
         WHERE message_id = $1",
        &[&&[n; 32][..], &(days * 86_400.0)],
    )
    .await
    .unwrap();
}

async fn ids(db: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    let rows = db.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

async fn inbound_left(db: &tokio_postgres::Client) -> Vec<u8> {
    let rows = db
        .query("SELECT message_id FROM inbound ORDER BY message_id", &[])
        .await
        .unwrap();
    rows.iter().map(|r| r.get::<_, &[u8]>(0)[0]).collect()
}

async fn purge(store: &Store, batch: i64) -> Purged {
    let retention = Retention { keep: KEEP, batch };
    let stop = CancellationToken::new();
    retention
        .purge(store, SystemTime::now(), &stop)
        .await
        .unwrap()
}

#[tokio::test]
async fn purge_deletes_only_delivered_copies_past_the_retention_in_batches() {
    let (_server, store, db) = fresh().await;
    let ids_ = queue(&store, 9).await;
    let [old_queued, queued, failed, recent, old @ ..] = &ids_[..] else {
        panic!("nine copies")
    };
    // Five delivered 31 days ago, one delivered 29 days ago.
    for id in old.iter().chain([recent]) {
        store.mark_delivered(*id).await.unwrap();
    }
    for id in old {
        age_copy(&db, *id, 31.0).await;
    }
    age_copy(&db, *recent, 29.0).await;
    // Open rows however old: queued, leased by a claim, failed with its DSN still to go out.
    age_copy(&db, *old_queued, 60.0).await;
    let lease = Duration::from_secs(3600);
    let claimed = store.claim_due(1, lease).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, *old_queued, "leased by the claim");
    let reason = "refused";
    let refused =
        toxmail_bridge::store::GiveUp::Refused(toxmail_bridge::events::DsnStatus(5, 1, 1));
    store.mark_failed(*failed, reason, refused).await.unwrap();
    age_copy(&db, *failed, 60.0).await;

    let purged = purge(&store, 2).await;
    assert_eq!(
        purged,
        Purged {
            outbound: 5,
            inbound: 0
        },
        "batches of 2: 2 + 2 + 1"
    );
    let left = ids(&db, "SELECT id FROM outbound ORDER BY id").await;
    assert_eq!(left, [*old_queued, *queued, *failed, *recent]);
    assert_eq!(
        purge(&store, 2).await,
        Purged::default(),
        "nothing more to do"
    );
    // The claimed copy is still the dispatcher's to finish.
    store.mark_delivered(*old_queued).await.unwrap();
}

#[tokio::test]
async fn purge_keeps_inbound_rows_pending_recent_or_not_yet_expired_past_the_grace() {
    let (_server, store, db) = fresh().await;
    let now = SystemTime::now();
    let long_expired = now - 20 * DAY;
    let within_grace = now - EXPIRY_GRACE + Duration::from_secs(600);
    // 1 pending; 2 injected, expired long ago; 3 injected but received recently; 4 injected, its
    // expiry within the grace; 5 failed (bounced), expired long ago; 6 a row from before schema
    // 11, without an expiry.
    for (n, expires) in [
        (1, long_expired),
        (2, long_expired),
        (3, long_expired),
        (4, within_grace),
        (5, long_expired),
        (6, long_expired),
    ] {
        assert!(store.record_inbound(&received(n, expires)).await.unwrap());
    }
    db.execute(
        "UPDATE inbound SET expires = NULL WHERE message_id = $1",
        &[&&[6u8; 32][..]],
    )
    .await
    .unwrap();
    for n in [2, 3, 4, 6] {
        store.mark_injected(&key(n), "bob@b.test").await.unwrap();
    }
    let status = toxmail_bridge::events::DsnStatus(5, 0, 0);
    store
        .mark_inbound_failed(&key(5), "bounced", "bob@b.test", status)
        .await
        .unwrap();
    for n in [1, 2, 4, 5, 6] {
        age_inbound(&db, n, 40.0).await;
    }
    age_inbound(&db, 3, 29.0).await;

    let purged = purge(&store, 1).await;
    assert_eq!(
        purged,
        Purged {
            outbound: 0,
            inbound: 3
        }
    );
    assert_eq!(inbound_left(&db).await, [1, 3, 4]);
    // The purged ids are recorded again if they come back (the inbox never lets a stale one
    // get this far: `store::retention::stale`); the kept ones still refuse a replay.
    for n in [1, 3, 4] {
        let replay = received(n, now + DAY);
        assert!(
            !store.record_inbound(&replay).await.unwrap(),
            "row {n} replayed"
        );
    }
}

#[tokio::test]
async fn inbound_dedup_refuses_a_replay_within_the_retention() {
    let (_server, store, db) = fresh().await;
    let now = SystemTime::now();
    assert!(
        store
            .record_inbound(&received(7, now - 3 * DAY))
            .await
            .unwrap()
    );
    store.mark_injected(&key(7), "bob@b.test").await.unwrap();
    age_inbound(&db, 7, 29.9).await;
    assert_eq!(purge(&store, 100).await, Purged::default());
    assert!(
        store
            .inbound_exists(&PublicKey([9; 32]), &MessageId([7; 32]))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_inbound(&received(7, now - 3 * DAY))
            .await
            .unwrap(),
        "a replay within the retention is a duplicate"
    );
    assert!(
        store
            .claim_inbound(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn queue_pages_by_id_over_open_copies_and_counts_what_follows() {
    let (_server, store, _db) = fresh().await;
    let all = queue(&store, 7).await;
    for id in [all[1], all[4]] {
        store.mark_delivered(id).await.unwrap();
    }
    let open: Vec<i64> = all
        .iter()
        .copied()
        .filter(|id| ![all[1], all[4]].contains(id))
        .collect();
    let page = store.queue_page(0, 2).await.unwrap();
    let listed: Vec<i64> = page.entries.iter().map(|e| e.id).collect();
    assert_eq!((listed.as_slice(), page.more), (&open[..2], 3));
    let page = store.queue_page(open[1], 2).await.unwrap();
    let listed: Vec<i64> = page.entries.iter().map(|e| e.id).collect();
    assert_eq!((listed.as_slice(), page.more), (&open[2..4], 1));
    let page = store.queue_page(open[3], 2).await.unwrap();
    let listed: Vec<i64> = page.entries.iter().map(|e| e.id).collect();
    assert_eq!((listed.as_slice(), page.more), (&open[4..], 0));
    let page = store.queue_page(open[4], 2).await.unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(page.more, 0);
}

/// `cargo nextest run -p toxmail-bridge --test retention --run-ignored only --no-capture`:
/// the 5 s statistics query with a million delivered rows, without the schema 11 index (as
/// before) and with it, then the purge rate.
#[tokio::test]
#[ignore = "benchmark: a million rows, about a minute"]
async fn bench_stats_and_purge_with_a_million_delivered_rows() {
    let (_server, store, db) = fresh().await;
    let open = 1000;
    queue(&store, open).await;
    let started = Instant::now();
    db.batch_execute(
        "INSERT INTO outbound (message_id, recipient, envelope_sender, sender_identity, peer, \
         envelope, state, expires, created, delivered_at) \
         SELECT sha256(int8send(g)), 'r' || g || '@b.test', 'alice@a.test', 'alice@a.test', \
                decode(repeat('07', 38), 'hex'), ''::bytea, 'delivered', \
                now() - interval '30 days', now() - interval '60 days' + g * interval '1 second', \
                now() - interval '60 days' + g * interval '1 second' \
         FROM generate_series(1, 1000000) g",
    )
    .await
    .unwrap();
    db.batch_execute("VACUUM ANALYZE outbound").await.unwrap();
    println!(
        "inserted 1,000,000 delivered rows in {:?}",
        started.elapsed()
    );

    let stats = || async {
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let s = store.queue_stats().await.unwrap();
            best = best.min(t.elapsed());
            assert_eq!(s.queued, open as i64);
        }
        best
    };
    let with_index = stats().await;
    db.batch_execute("DROP INDEX outbound_open; ANALYZE outbound;")
        .await
        .unwrap();
    let without = stats().await;
    println!("queue_stats, best of 5: {without:?} before schema 11, {with_index:?} after");
    let t = Instant::now();
    db.batch_execute("DROP INDEX outbound_delivered")
        .await
        .unwrap();
    db.batch_execute(
        "CREATE INDEX outbound_open ON outbound (id) INCLUDE (state, created, relayed_at) \
         WHERE state <> 'delivered'; \
         CREATE INDEX outbound_delivered ON outbound (delivered_at) WHERE state = 'delivered'",
    )
    .await
    .unwrap();
    println!("schema 11's outbound indexes built in {:?}", t.elapsed());
    db.batch_execute("ANALYZE outbound").await.unwrap();

    let t = Instant::now();
    let page = store.queue_page(0, 100).await.unwrap();
    println!("queue_page(100): {:?}, {} more", t.elapsed(), page.more);

    // 1,000,000 rows, delivered between 60 and 48 days ago: all past a 30-day retention.
    let t = Instant::now();
    let purged = purge(&store, toxmail_bridge::retention::BATCH).await;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(purged.outbound, 1_000_000);
    println!(
        "purge of delivered copies: {} rows in {secs:.1} s = {:.0} rows/s (batches of {})",
        purged.outbound,
        purged.outbound as f64 / secs,
        toxmail_bridge::retention::BATCH
    );

    // 1,000,000 injected inbound rows received 40 days ago, expired 35 days ago.
    db.batch_execute(
        "INSERT INTO inbound (message_id, sender_key, identity, envelope, state, received, \
                              injected_at, expires) \
         SELECT sha256(int8send(g)), sha256(int8send(-g)), 'bob@b.test', ''::bytea, 'injected', \
                now() - interval '40 days', now() - interval '40 days', \
                now() - interval '35 days' \
         FROM generate_series(1, 1000000) g",
    )
    .await
    .unwrap();
    db.batch_execute("VACUUM ANALYZE inbound").await.unwrap();
    let t = Instant::now();
    let purged = purge(&store, toxmail_bridge::retention::BATCH).await;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(purged.inbound, 1_000_000);
    println!(
        "purge of inbound rows: {} rows in {secs:.1} s = {:.0} rows/s",
        purged.inbound,
        purged.inbound as f64 / secs
    );
}
