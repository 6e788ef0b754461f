//! The PostgreSQL store against a real private PostgreSQL 15 (`toxmail_tests::postgres`):
//! migrations, idempotent enqueue, SKIP LOCKED claims and leases, dedup, and a database outage.

use std::time::{Duration, Instant, SystemTime};

use toxmail_bridge::events::DsnStatus;
use toxmail_bridge::store::lease::{Acquired, LeaseKeeper, Owner, Renewal};
use toxmail_bridge::store::{
    GiveUp, InboundKey, NewInbound, NewOutbound, QueuedPeer, Store, StoreError,
};
use toxmail_protocol::{MessageId, PublicKey, ToxId};
use toxmail_tests::postgres::PgServer;

async fn fresh() -> (PgServer, Store) {
    let started = Instant::now();
    let server = PgServer::started().await;
    eprintln!("PgServer::start took {:?}", started.elapsed());
    let store = Store::connect(&server.url(), 4).unwrap();
    assert_eq!(
        store.migrate().await.unwrap(),
        14,
        "every migration applied"
    );
    (server, store)
}

fn tox_id(n: u8) -> ToxId {
    ToxId::new(PublicKey([n; 32]), 0x0102_0304)
}

fn copy(idem_key: Option<&str>, recipient: &str, envelope: &[u8]) -> NewOutbound {
    NewOutbound {
        message_id: MessageId::random(),
        idem_key: idem_key.map(str::to_owned),
        recipient: recipient.to_owned(),
        envelope_sender: "alice@a.example".to_owned(),
        sender_identity: "alice@a.example".to_owned(),
        peer: tox_id(7),
        envelope: envelope.to_vec(),
        expires: SystemTime::now() + Duration::from_secs(5 * 86_400),
        relays: vec![tox_id(8), tox_id(9)],
    }
}

fn inbound(message_id: MessageId, envelope: &[u8]) -> NewInbound {
    NewInbound {
        message_id,
        sender_key: PublicKey([9; 32]),
        identity: "bob@b.example".to_owned(),
        envelope: envelope.to_vec(),
        sender_verdict: "none".to_owned(),
        expires: SystemTime::now() + Duration::from_secs(5 * 86_400),
    }
}

fn key(message_id: MessageId) -> InboundKey {
    InboundKey {
        sender: PublicKey([9; 32]),
        id: message_id,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn migrate_second_run_applies_nothing() {
    let (_server, store) = fresh().await;
    assert_eq!(store.migrate().await.unwrap(), 0);
    store.ping().await.unwrap();
}

#[tokio::test]
async fn directory_identity_conflicts_and_contact_upserts() {
    let (_server, store) = fresh().await;
    store
        .add_identity("bob@b.example", &tox_id(1))
        .await
        .unwrap();
    let again = store.add_identity("bob@b.example", &tox_id(2)).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let identities = store.identities().await.unwrap();
    assert_eq!(identities.len(), 1);
    assert_eq!(identities[0].tox_id, tox_id(1));

    store
        .add_contact("carol@c.example", &tox_id(3))
        .await
        .unwrap();
    store
        .add_contact("carol@c.example", &tox_id(4))
        .await
        .unwrap();
    let contacts = store.contacts().await.unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].tox_id, tox_id(4));
    assert!(store.remove_contact("carol@c.example").await.unwrap());
    assert!(!store.remove_contact("carol@c.example").await.unwrap());
    assert!(store.contacts().await.unwrap().is_empty());
}

#[tokio::test]
async fn enqueue_same_idem_key_and_recipient_returns_existing_row() {
    let (_server, store) = fresh().await;
    let batch = [
        copy(Some("4F1A2B"), "bob@b.example", b"e1"),
        copy(Some("4F1A2B"), "carol@b.example", b"e2"),
    ];
    let first = store.enqueue(&batch).await.unwrap();
    assert!(first.iter().all(|e| !e.duplicate));
    assert_ne!(first[0].id, first[1].id);

    // Postfix retries the same LMTP transaction: nothing new is queued.
    let retry = store.enqueue(&batch).await.unwrap();
    assert_eq!(
        retry.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![first[0].id, first[1].id]
    );
    assert!(retry.iter().all(|e| e.duplicate));

    // Without an idem key every copy is new.
    let anonymous = [
        copy(None, "bob@b.example", b"e3"),
        copy(None, "bob@b.example", b"e4"),
    ];
    let queued = store.enqueue(&anonymous).await.unwrap();
    assert!(queued.iter().all(|e| !e.duplicate));

    let rows = store.queued().await.unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(store.envelope(rows[0].id).await.unwrap().unwrap(), b"e1");
    assert_eq!(rows[0].peer, tox_id(7));
    assert_eq!(rows[0].attempts, 0);
    assert_eq!(store.queue_list().await.unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_due_concurrent_claimers_get_disjoint_rows() {
    let (_server, store) = fresh().await;
    let copies: Vec<_> = (0..40)
        .map(|i| copy(None, &format!("r{i}@b.example"), b"x"))
        .collect();
    store.enqueue(&copies).await.unwrap();

    let claimers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let rows = store.claim_due(3, Duration::from_secs(600)).await.unwrap();
                    if rows.is_empty() {
                        return ids;
                    }
                    ids.extend(rows.iter().map(|r| r.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count, "a row was claimed twice");
    assert_eq!(count, 40);
}

#[tokio::test]
async fn claim_due_skips_rows_locked_by_another_transaction() {
    let (server, store) = fresh().await;
    let queued = store
        .enqueue(&[
            copy(None, "a@b.example", b"x"),
            copy(None, "b@b.example", b"y"),
        ])
        .await
        .unwrap();

    let (mut client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM outbound WHERE id = $1 FOR UPDATE",
        &[&queued[0].id],
    )
    .await
    .unwrap();

    let claim = tokio::time::timeout(
        Duration::from_secs(5),
        store.claim_due(10, Duration::from_secs(60)),
    );
    let rows = claim
        .await
        .expect("claim must not wait for the lock")
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![queued[1].id]
    );
    tx.rollback().await.unwrap();
    let rows = store.claim_due(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![queued[0].id]
    );
}

#[tokio::test]
async fn claim_due_lease_hides_row_until_it_passes() {
    let (_server, store) = fresh().await;
    let id = store
        .enqueue(&[copy(None, "a@b.example", b"x")])
        .await
        .unwrap()[0]
        .id;
    let lease = Duration::from_millis(1500);
    let claimed = store.claim_due(10, lease).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempts, 1);
    let leased_at = Instant::now();
    assert!(store.claim_due(10, lease).await.unwrap().is_empty());
    // The row is still queued: start-up sees it even while leased.
    assert_eq!(store.queued().await.unwrap().len(), 1);

    let again = loop {
        let rows = store.claim_due(10, lease).await.unwrap();
        if !rows.is_empty() {
            break rows;
        }
        assert!(
            leased_at.elapsed() < Duration::from_secs(10),
            "lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(leased_at.elapsed() >= lease - Duration::from_millis(200));
    assert_eq!((again[0].id, again[0].attempts), (id, 2));

    // reschedule moves the next attempt; the row stays queued.
    store
        .reschedule(
            id,
            SystemTime::now() + Duration::from_secs(3600),
            "peer offline",
        )
        .await
        .unwrap();
    let listed = store.queue_list().await.unwrap();
    assert_eq!(listed[0].state, "queued");
    assert_eq!(listed[0].last_error.as_deref(), Some("peer offline"));
}

#[tokio::test]
async fn relays_and_custody_are_kept_with_the_row_and_peer_relay_lists_replace() {
    let (_server, store) = fresh().await;
    let queued = store
        .enqueue(&[copy(None, "a@b.example", b"sealed")])
        .await
        .unwrap();
    let row = store.queued().await.unwrap().remove(0);
    assert_eq!(row.relays, vec![tox_id(8), tox_id(9)]);
    assert!(!row.relayed);
    store.mark_relayed(queued[0].id, "R1").await.unwrap();
    assert!(store.queued().await.unwrap()[0].relayed, "custody recorded");

    let peer = PublicKey([7; 32]);
    assert!(store.peer_relays(&peer).await.unwrap().is_empty());
    store
        .set_peer_relays(&peer, &[tox_id(1), tox_id(2)])
        .await
        .unwrap();
    store.set_peer_relays(&peer, &[tox_id(3)]).await.unwrap();
    assert_eq!(store.peer_relays(&peer).await.unwrap(), vec![tox_id(3)]);
    store.set_peer_relays(&peer, &[]).await.unwrap();
    assert!(
        store.peer_relays(&peer).await.unwrap().is_empty(),
        "an empty list withdraws"
    );
}

#[tokio::test]
async fn mark_delivered_empties_envelope_and_failed_keeps_it() {
    let (server, store) = fresh().await;
    let marker = b"MARKER-4c1d0e5a-sealed-bytes";
    let queued = store
        .enqueue(&[
            copy(None, "a@b.example", marker),
            copy(None, "b@b.example", b"kept"),
        ])
        .await
        .unwrap();
    assert!(contains(&server.dump(), marker));

    store.mark_delivered(queued[0].id).await.unwrap();
    store
        .mark_failed(queued[1].id, "expired", GiveUp::Expired)
        .await
        .unwrap();
    assert!(
        !contains(&server.dump(), marker),
        "a delivered envelope is still stored"
    );
    assert!(store.queued().await.unwrap().is_empty());
    let listed = store.queue_list().await.unwrap();
    assert_eq!(listed.len(), 1, "delivered rows are not listed");
    assert_eq!(
        (listed[0].id, listed[0].state.as_str()),
        (queued[1].id, "failed")
    );
    assert!(contains(&server.dump(), b"kept"));

    // A late failure does not undo a delivery; unknown ids are NotFound.
    store
        .mark_failed(queued[0].id, "late", GiveUp::Expired)
        .await
        .unwrap();
    assert_eq!(store.queue_list().await.unwrap().len(), 1);
    assert!(matches!(
        store.mark_delivered(999_999).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn record_inbound_same_sealer_and_id_is_stored_once_another_sealer_is_not_a_duplicate() {
    let (_server, store) = fresh().await;
    let id = MessageId::random();
    let sealer = PublicKey([9; 32]);
    assert!(!store.inbound_exists(&sealer, &id).await.unwrap());
    assert!(store.record_inbound(&inbound(id, b"sealed")).await.unwrap());
    assert!(!store.record_inbound(&inbound(id, b"other")).await.unwrap());
    assert!(store.inbound_exists(&sealer, &id).await.unwrap());
    // Issue 8: a stranger who stored its envelope under this id first does not make the real
    // sender's copy a duplicate, and the real sender's id does not hide the stranger's.
    let stranger = PublicKey([4; 32]);
    assert!(!store.inbound_exists(&stranger, &id).await.unwrap());
    let squat = NewInbound {
        sender_key: stranger,
        ..inbound(id, b"squat")
    };
    assert!(store.record_inbound(&squat).await.unwrap());
    let claimed = store
        .claim_inbound(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let envelopes: Vec<&[u8]> = claimed.iter().map(|r| &r.envelope[..]).collect();
    assert!(envelopes.contains(&&b"sealed"[..]) && envelopes.contains(&&b"squat"[..]));
    store
        .mark_injected(&claimed[0].key(), "a@b.example")
        .await
        .unwrap();
    store
        .mark_injected(&claimed[1].key(), "a@b.example")
        .await
        .unwrap();
}

#[tokio::test]
async fn claim_inbound_then_mark_injected_keeps_id_for_dedup() {
    let (server, store) = fresh().await;
    let marker = b"MARKER-inbound-9b7e";
    let (first, second) = (MessageId::random(), MessageId::random());
    store.record_inbound(&inbound(first, marker)).await.unwrap();
    store
        .record_inbound(&inbound(second, b"later"))
        .await
        .unwrap();

    let claimed = store
        .claim_inbound(1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].message_id, claimed[0].attempts), (first, 1));
    assert_eq!(claimed[0].sender_key, PublicKey([9; 32]));
    store
        .mark_injected(&key(first), "a@b.example")
        .await
        .unwrap();
    assert!(!contains(&server.dump(), marker));
    assert!(!store.record_inbound(&inbound(first, marker)).await.unwrap());

    let claimed = store
        .claim_inbound(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|r| r.message_id).collect::<Vec<_>>(),
        vec![second]
    );
    store
        .reschedule_inbound(&key(second), SystemTime::now(), "postfix busy")
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_inbound(10, Duration::from_secs(60))
            .await
            .unwrap()
            .len(),
        1
    );
    store
        .mark_inbound_failed(&key(second), "rejected", "a@b.example", DsnStatus(5, 0, 0))
        .await
        .unwrap();
    assert!(
        store
            .claim_inbound(10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    let unknown = store
        .mark_injected(&key(MessageId::random()), "a@b.example")
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound(_))),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn stopped_database_is_unavailable_quickly_then_recovers() {
    let (server, store) = fresh().await;
    store.ping().await.unwrap();
    server.stop();

    for _ in 0..2 {
        let started = Instant::now();
        let error = store.ping().await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
        assert!(error.is_temporary());
    }
    let started = Instant::now();
    let error = store
        .enqueue(&[copy(Some("Q"), "a@b.example", b"x")])
        .await
        .unwrap_err();
    assert!(error.is_temporary(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));

    server.restart();
    store.ping().await.unwrap();
    let queued = store
        .enqueue(&[copy(Some("Q"), "a@b.example", b"x")])
        .await
        .unwrap();
    assert!(
        !queued[0].duplicate,
        "the failed enqueue must not have committed"
    );
}

#[tokio::test]
async fn dns_pins_first_wins_changes_are_noted_and_the_operator_decides() {
    let (_pg, store) = fresh().await;
    let (one, two) = (tox_id(1), tox_id(2));
    assert!(
        store
            .pin_first("bob@b.test", &one.public_key())
            .await
            .unwrap()
    );
    // A second first use (another lookup, another bridge) does not replace the pin.
    assert!(
        !store
            .pin_first("bob@b.test", &two.public_key())
            .await
            .unwrap()
    );
    let pins = store.pins().await.unwrap();
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].public_key, one.public_key());
    assert_eq!(pins[0].changed, None);

    // DNS shows key 2: noted with what it shows, the pin unchanged.
    store
        .pin_changed("bob@b.test", &one.public_key(), Some(&two))
        .await
        .unwrap();
    let pin = store.pins().await.unwrap().remove(0);
    assert_eq!(pin.public_key, one.public_key());
    let (since, seen) = pin.changed.expect("change noted");
    assert_eq!(seen, Some(two));
    // Seen again, later, as "no record": the first sighting's time stays.
    store
        .pin_changed("bob@b.test", &one.public_key(), None)
        .await
        .unwrap();
    let pin = store.pins().await.unwrap().remove(0);
    assert_eq!(pin.changed, Some((since, None)));
    // A change reported against a pin the operator replaced meanwhile changes nothing.
    store
        .pin_set("bob@b.test", &two.public_key())
        .await
        .unwrap();
    store
        .pin_changed("bob@b.test", &one.public_key(), Some(&one))
        .await
        .unwrap();
    let pin = store.pins().await.unwrap().remove(0);
    assert_eq!((pin.public_key, pin.changed), (two.public_key(), None));
    let map = store.pin_map().await.unwrap();
    assert_eq!(map.get("bob@b.test"), Some(&two.public_key()));

    assert!(store.pin_remove("bob@b.test").await.unwrap());
    assert!(!store.pin_remove("bob@b.test").await.unwrap());
    assert!(store.pins().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_relay_receipt_closes_the_copy_in_its_custody_once_and_no_one_elses_does() {
    let (_server, store) = fresh().await;
    let (relay, other) = (tox_id(8), tox_id(9));
    let held = copy(None, "bob@b.example", b"sealed");
    let plain = copy(None, "carol@b.example", b"sealed");
    let ids = store.enqueue(&[held.clone(), plain.clone()]).await.unwrap();
    let (held_row, plain_row) = (ids[0].id, ids[1].id);
    store
        .mark_relayed(held_row, &relay.to_string())
        .await
        .unwrap();
    let state = |id| {
        let store = store.clone();
        async move {
            let list = store.queue_list().await.unwrap();
            list.iter().find(|e| e.id == id).map(|e| e.state.clone())
        }
    };
    // Another key, an unknown id, a copy no relay holds: nothing changes.
    assert_eq!(
        store
            .close_released(&held.message_id, &other.public_key())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .close_released(&MessageId::random(), &relay.public_key())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .close_released(&plain.message_id, &relay.public_key())
            .await
            .unwrap(),
        None
    );
    assert_eq!(state(held_row).await.as_deref(), Some("queued"));
    // The custodian's receipt closes it, once.
    assert_eq!(
        store
            .close_released(&held.message_id, &relay.public_key())
            .await
            .unwrap(),
        Some(held_row)
    );
    assert_eq!(
        store
            .close_released(&held.message_id, &relay.public_key())
            .await
            .unwrap(),
        None
    );
    assert_eq!(state(held_row).await, None, "delivered rows leave the list");

    // The recipient's own late ack: only from the peer the copy is sealed to.
    assert_eq!(
        store
            .close_acked(&plain.message_id, &PublicKey([8; 32]))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .close_acked(&plain.message_id, &PublicKey([7; 32]))
            .await
            .unwrap(),
        Some(plain_row)
    );
    assert_eq!(
        store
            .close_acked(&plain.message_id, &PublicKey([7; 32]))
            .await
            .unwrap(),
        None
    );
}

/// Issue 12: the dispatcher finds each (identity, peer) with queued copies without reading
/// copies, claims one pair's due copies in pages without envelopes, and reads an envelope only
/// for a copy still queued.
#[tokio::test]
async fn per_peer_paged_claims_read_no_envelopes() {
    let (_server, store) = fresh().await;
    let to = |peer: u8, envelope: &[u8]| NewOutbound {
        peer: tox_id(peer),
        ..copy(None, "bob@b.example", envelope)
    };
    let mut copies: Vec<NewOutbound> = (0..25).map(|_| to(7, b"seven")).collect();
    copies.push(to(5, b"five"));
    copies.push(NewOutbound {
        sender_identity: "carol@a.example".to_owned(),
        ..to(7, b"carol")
    });
    store.enqueue(&copies).await.unwrap();

    let pairs = store.queued_peers().await.unwrap();
    let pair = |identity: &str, peer: u8| QueuedPeer {
        sender_identity: identity.to_owned(),
        peer: tox_id(peer),
    };
    assert_eq!(
        pairs,
        vec![
            pair("alice@a.example", 5),
            pair("alice@a.example", 7),
            pair("carol@a.example", 7)
        ],
        "one entry per pair, however many copies"
    );

    let alice7 = pair("alice@a.example", 7);
    let lease = Duration::from_secs(600);
    let mut claimed = Vec::new();
    for expected in [10, 10, 5, 0] {
        let page = store.claim_for(&alice7, 10, lease).await.unwrap();
        assert_eq!(
            page.len(),
            expected,
            "pages of at most 10, then nothing due"
        );
        assert!(page.iter().all(|r| r.peer == tox_id(7) && r.attempts == 1));
        assert!(page.iter().all(|r| r.sender_identity == "alice@a.example"));
        claimed.extend(page.into_iter().map(|r| r.id));
    }
    claimed.sort_unstable();
    claimed.dedup();
    assert_eq!(claimed.len(), 25, "each copy claimed once");
    let alice5 = pair("alice@a.example", 5);
    let other = store.claim_for(&alice5, 10, lease);
    assert_eq!(
        other.await.unwrap().len(),
        1,
        "another pair's copies untouched"
    );
    assert!(store.has_queued(&alice7).await.unwrap());
    let due = store.next_due_for(&alice7).await.unwrap().unwrap();
    assert!(due > SystemTime::now() + Duration::from_secs(500), "leased");

    // The envelope is read on its own, and only while the copy is queued.
    assert_eq!(store.envelope(claimed[0]).await.unwrap().unwrap(), b"seven");
    store.mark_delivered(claimed[0]).await.unwrap();
    assert_eq!(store.envelope(claimed[0]).await.unwrap(), None);

    // A restart makes leased copies due again.
    assert_eq!(store.release_leases().await.unwrap(), 25);
    assert_eq!(
        store.claim_for(&alice7, 100, lease).await.unwrap().len(),
        24
    );

    // Relay fallback pages: copies no relay holds, by id past a cursor, once they waited.
    let waited = Duration::ZERO;
    let page = store.deposit_due(&alice7, waited, 0, 10).await.unwrap();
    assert_eq!(page.len(), 10);
    let rest = store.deposit_due(&alice7, waited, page[9].id, 100).await;
    assert_eq!(rest.unwrap().len(), 14);
    store.mark_relayed(page[0].id, "R1").await.unwrap();
    let after = store.deposit_due(&alice7, waited, 0, 100).await.unwrap();
    assert!(after.len() == 23 && after.iter().all(|r| r.id != page[0].id));
    let young = store.deposit_due(&alice7, Duration::from_secs(3600), 0, 100);
    assert!(
        young.await.unwrap().is_empty(),
        "not yet waited deposit_after"
    );
    assert!(store.first_undeposited(&alice7, 0).await.unwrap().is_some());
}

/// Issue 12: expiry is found by the loop's query, not a timer per copy.
#[tokio::test]
async fn expired_copies_are_listed_by_query() {
    let (_server, store) = fresh().await;
    let old = NewOutbound {
        expires: SystemTime::now() - Duration::from_secs(1),
        ..copy(None, "a@b.example", b"old")
    };
    let fresh_copy = copy(None, "b@b.example", b"new");
    let queued = store.enqueue(&[old, fresh_copy]).await.unwrap();
    let expired = store.expired(10).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].0, queued[0].id);
    assert_eq!(expired[0].1.peer, tox_id(7));
    let next = store.next_outbound_expiry().await.unwrap().unwrap();
    assert!(next < SystemTime::now());
    store
        .mark_failed(queued[0].id, "expired", GiveUp::Expired)
        .await
        .unwrap();
    assert!(store.expired(10).await.unwrap().is_empty());
    let next = store.next_outbound_expiry().await.unwrap().unwrap();
    assert!(next > SystemTime::now() + Duration::from_secs(86_400));
}

/// A copy given up records the DSN status decided from its typed error; the notifier reports
/// that, not a guess from the reason text.
#[tokio::test]
async fn a_failed_copy_keeps_the_status_its_dsn_reports() {
    let (_server, store) = fresh().await;
    let queued = store
        .enqueue(&[
            copy(None, "bob@b.example", b"x"),
            copy(None, "carol@b.example", b"y"),
        ])
        .await
        .unwrap();
    let refused = GiveUp::Refused(DsnStatus(5, 1, 1));
    store
        .mark_failed(queued[0].id, "refused by the peer (Forged): text", refused)
        .await
        .unwrap();
    store
        .mark_failed(queued[1].id, "expired", GiveUp::Expired)
        .await
        .unwrap();
    let failed = store.failed_copies().await.unwrap();
    let statuses: Vec<Option<&str>> = failed.iter().map(|c| c.failure_status.as_deref()).collect();
    assert_eq!(statuses, [Some("5.1.1"), Some("5.4.7")]);
}

const LEASE: Duration = Duration::from_secs(15);

fn keeper(store: &Store, name: &str) -> LeaseKeeper {
    LeaseKeeper::new(store, Owner::random(), name, LEASE)
}

/// Runs one statement as the database's owner would (a test's view of time passing).
async fn admin_sql(server: &PgServer, sql: &str) {
    let (client, conn) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap();
}

#[tokio::test]
async fn one_bridge_holds_every_lease_and_a_killed_holder_is_taken_over_at_once() {
    let (_server, store) = fresh().await;
    let site = ["alice@a.example".to_string(), "bob@a.example".to_string()];
    let mut first = keeper(&store, "mx1 pid 1");
    let mut second = keeper(&store, "mx2 pid 2");
    let got = first.try_acquire(&site).await.unwrap();
    assert_eq!(
        got,
        Acquired::All(vec![(site[0].clone(), 1), (site[1].clone(), 1)])
    );
    match second.try_acquire(&site).await.unwrap() {
        Acquired::Held(holder) => {
            assert_eq!(holder.name, "mx1 pid 1");
            assert!(holder.expires > SystemTime::now());
        }
        other => panic!("the standby took {other:?}"),
    }
    // Nothing was taken by the standby, not even a lease the first did not ask for.
    let with_carol = [site[0].clone(), "carol@a.example".to_string()];
    assert!(matches!(
        second.try_acquire(&with_carol).await.unwrap(),
        Acquired::Held(_)
    ));
    assert_eq!(store.leases().await.unwrap().len(), 2);

    // The first bridge dies: its session ends and its leases are free before they expire.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let taken = loop {
        match second.try_acquire(&site).await.unwrap() {
            Acquired::All(fences) => break fences,
            Acquired::Held(_) => {
                assert!(
                    Instant::now() < deadline,
                    "the dead holder's session lingers"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(taken, vec![(site[0].clone(), 2), (site[1].clone(), 2)]);
    assert_eq!(second.renew().await.unwrap(), Renewal::Renewed);
    // A clean stop gives the leases back: a third bridge takes them at once.
    second.release().await.unwrap();
    let mut third = keeper(&store, "mx3 pid 3");
    assert!(matches!(
        third.try_acquire(&site).await.unwrap(),
        Acquired::All(_)
    ));
}

#[tokio::test]
async fn a_paused_bridge_is_fenced_out_once_its_lease_lapses_or_moves_to_another() {
    let (server, store) = fresh().await;
    let site = ["alice@a.example".to_string(), "bob@b.example".to_string()];
    let queued = store
        .enqueue(&[copy(None, "x@b.example", b"one")])
        .await
        .unwrap();
    let id = queued[0].id;
    let message = MessageId::random();
    store
        .record_inbound(&inbound(message, b"in"))
        .await
        .unwrap();
    let pair = QueuedPeer {
        sender_identity: "alice@a.example".to_owned(),
        peer: tox_id(7),
    };

    let mut old = keeper(&store, "old");
    assert!(matches!(
        old.try_acquire(&site).await.unwrap(),
        Acquired::All(_)
    ));
    let old_store = store.clone().fenced(old.owner());
    assert_eq!(
        old_store
            .claim_for(&pair, 10, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1
    );
    let lease = Duration::from_secs(60);
    assert_eq!(old_store.claim_inbound(10, lease).await.unwrap().len(), 1);

    // The old owner pauses past its lease: before anyone takes over it can do nothing.
    admin_sql(
        &server,
        "UPDATE identity_lease SET expires = now() - interval '1 second'",
    )
    .await;
    assert!(
        old_store
            .claim_for(&pair, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    old_store.mark_delivered(id).await.unwrap();
    old_store
        .mark_injected(&key(message), "bob@b.example")
        .await
        .unwrap();
    assert_eq!(old_store.release_leases().await.unwrap(), 0);
    assert_eq!(old_store.release_inbound_leases().await.unwrap(), 0);
    assert_eq!(store.queued().await.unwrap().len(), 1, "still queued");
    assert!(old_store.failed_copies().await.unwrap().is_empty());

    // A new owner takes over (a lapsed lease is free even while its holder's session lives).
    let mut new = keeper(&store, "new");
    let fences = match new.try_acquire(&site).await.unwrap() {
        Acquired::All(fences) => fences,
        other => panic!("no takeover: {other:?}"),
    };
    assert!(fences.iter().all(|(_, fence)| *fence == 2), "{fences:?}");
    assert_eq!(old.renew().await.unwrap(), Renewal::Lost(site.to_vec()));
    let new_store = store.clone().fenced(new.owner());
    // Its start-up makes its own identities' leased rows due; the old owner's would-be
    // release touches nothing.
    assert_eq!(old_store.release_inbound_leases().await.unwrap(), 0);
    assert_eq!(new_store.release_inbound_leases().await.unwrap(), 1);
    assert_eq!(
        new_store
            .claim_for(&pair, 10, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(new_store.claim_inbound(10, lease).await.unwrap().len(), 1);
    old_store
        .mark_injected(&key(message), "bob@b.example")
        .await
        .unwrap();
    new_store.mark_delivered(id).await.unwrap();
    new_store
        .mark_injected(&key(message), "bob@b.example")
        .await
        .unwrap();
    assert!(
        store.queued().await.unwrap().is_empty(),
        "delivered by the new owner"
    );
    assert!(
        new_store
            .claim_inbound(10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_lease_that_lapsed_while_nobody_took_it_is_renewed_by_its_owner() {
    let (server, store) = fresh().await;
    let site = ["alice@a.example".to_string()];
    store
        .enqueue(&[copy(None, "x@b.example", b"one")])
        .await
        .unwrap();
    let pair = QueuedPeer {
        sender_identity: "alice@a.example".to_owned(),
        peer: tox_id(7),
    };
    let mut only = keeper(&store, "only");
    assert!(matches!(
        only.try_acquire(&site).await.unwrap(),
        Acquired::All(_)
    ));
    let fenced = store.clone().fenced(only.owner());
    admin_sql(
        &server,
        "UPDATE identity_lease SET expires = now() - interval '1 second'",
    )
    .await;
    assert!(
        fenced
            .claim_for(&pair, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(only.renew().await.unwrap(), Renewal::Renewed);
    assert_eq!(
        fenced
            .claim_for(&pair, 10, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1
    );
    // The unfenced store (the admin CLI) is not held back by leases.
    assert_eq!(store.claim_due(10, Duration::ZERO).await.unwrap().len(), 1);
}
