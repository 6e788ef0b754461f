//! The events outbox against a real private PostgreSQL: each queue change writes exactly one
//! event in its own transaction (none for an idempotent repeat, none when events are off), read
//! back in order with stable ids, marked published, purged.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use toxmail_bridge::events::{DsnStatus, EventsSection, Outbox};
use toxmail_bridge::store::{GiveUp, InboundKey, NewInbound, NewOutbound, Store};
use toxmail_protocol::{MessageId, PublicKey, ToxId};
use toxmail_tests::postgres::PgServer;

async fn fresh(events: bool) -> (PgServer, Store) {
    let server = PgServer::started().await;
    let store = Store::connect(&server.url(), 4).unwrap();
    store.migrate().await.unwrap();
    if !events {
        return (server, store);
    }
    let outbox = Outbox::new(&EventsSection::default(), Some("+".into()));
    (server, store.with_events(outbox))
}

fn copy(idem_key: &str, recipient: &str) -> NewOutbound {
    let peer = ToxId::new(PublicKey([7; 32]), 1);
    NewOutbound {
        message_id: MessageId::random(),
        idem_key: Some(idem_key.to_owned()),
        recipient: recipient.to_owned(),
        envelope_sender: "alice@a.example".to_owned(),
        sender_identity: "alice@a.example".to_owned(),
        peer,
        envelope: b"sealed".to_vec(),
        expires: SystemTime::now() + Duration::from_secs(86_400),
        relays: Vec::new(),
    }
}

/// (type, subject, status, path) of every outbox row, in order.
async fn outbox_rows(store: &Store) -> Vec<(String, String, String, String)> {
    let events = store.unpublished_events(1000).await.unwrap();
    events
        .into_iter()
        .map(|e| {
            let text = |k: &str| e.data[k].as_str().unwrap_or("-").to_owned();
            (e.type_name, e.subject, text("status"), text("path"))
        })
        .collect()
}

fn row(kind: &str, subject: String, status: &str, path: &str) -> (String, String, String, String) {
    let kind = format!("org.toxmail.{kind}");
    (kind, subject, status.into(), path.into())
}

#[tokio::test]
async fn every_queue_change_writes_one_event_and_repeats_write_none() {
    let (_server, store) = fresh(true).await;
    let copies = [copy("Q1", "Bob+x@B.example"), copy("Q1", "carol@b.example")];
    let ids: Vec<i64> = store
        .enqueue(&copies)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    // Postfix retries the same transaction: no second copy, no second event.
    assert!(store.enqueue(&copies[..1]).await.unwrap()[0].duplicate);
    let (bob, carol) = (ids[0], ids[1]);
    let next = SystemTime::now() + Duration::from_secs(60);
    store.reschedule(bob, next, "peer offline").await.unwrap();
    store.mark_relayed(bob, "R1").await.unwrap();
    store.mark_delivered(bob).await.unwrap();
    store.mark_delivered(bob).await.unwrap();
    store
        .mark_failed(carol, "expired", GiveUp::Expired)
        .await
        .unwrap();
    let refused = GiveUp::Refused(DsnStatus(5, 1, 1));
    store.mark_failed(carol, "again", refused).await.unwrap();

    let (b, c) = (format!("outbound/{bob}"), format!("outbound/{carol}"));
    assert_eq!(
        outbox_rows(&store).await,
        vec![
            row("message.accepted", b.clone(), "-", "-"),
            row("message.accepted", c.clone(), "-", "-"),
            row("message.deferred", b.clone(), "4.4.1", "direct"),
            row("message.relayed", b.clone(), "2.0.0", "relay"),
            row("message.delivered", b.clone(), "2.0.0", "direct"),
            row("message.expired", c.clone(), "5.4.7", "-"),
        ]
    );
    let events = store.unpublished_events(1000).await.unwrap();
    let first = &events[0];
    assert_eq!(first.data["queue_id"], bob);
    assert_eq!(first.data["message_id"], copies[0].message_id.to_string());
    assert_eq!(first.data["attempt"], 0);
    assert!(first.data["recipient"].is_null(), "no address by default");
    let hash = hex::encode(Sha256::digest(b"bob@b.example"));
    assert_eq!(
        first.data["recipient_sha256"], hash,
        "lower-cased, +extension dropped"
    );
    assert!(
        first.time.ends_with('Z') && first.time.contains('T'),
        "{}",
        first.time
    );

    // Published rows leave the unpublished set and keep their ids; purge takes old ones only.
    let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let rows: Vec<i64> = events.iter().take(2).map(|e| e.row).collect();
    store.mark_events_published(&rows).await.unwrap();
    let left = store.unpublished_events(1000).await.unwrap();
    assert_eq!(left.len(), events.len() - 2);
    assert_eq!(left[0].event_id, ids[2], "the same id when read again");
    assert_eq!(
        store
            .purge_published_events(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.purge_published_events(Duration::ZERO).await.unwrap(),
        2
    );
}

#[tokio::test]
async fn inbound_injection_and_failure_write_events_and_a_store_without_outbox_writes_none() {
    let (_server, store) = fresh(true).await;
    let (_plain_server, plain) = fresh(false).await;
    for s in [&store, &plain] {
        for n in [1u8, 2] {
            let id = MessageId([n; 32]);
            let new = NewInbound {
                message_id: id,
                sender_key: PublicKey([9; 32]),
                identity: "bob@b.example".to_owned(),
                envelope: b"sealed".to_vec(),
                sender_verdict: "none".to_owned(),
                expires: SystemTime::now(),
            };
            assert!(s.record_inbound(&new).await.unwrap());
        }
        let key = |n: u8| InboundKey {
            sender: PublicKey([9; 32]),
            id: MessageId([n; 32]),
        };
        s.mark_injected(&key(1), "bob@b.example").await.unwrap();
        s.mark_injected(&key(1), "bob@b.example").await.unwrap();
        let status = DsnStatus(5, 1, 1);
        s.mark_inbound_failed(&key(2), "bounced", "bob@b.example", status)
            .await
            .unwrap();
        let queued = s.enqueue(&[copy("Q", "x@y.example")]).await.unwrap();
        s.mark_delivered(queued[0].id).await.unwrap();
    }
    let (one, two) = (MessageId([1; 32]), MessageId([2; 32]));
    let accepted = store.unpublished_events(10).await.unwrap()[2]
        .subject
        .clone();
    assert_eq!(
        outbox_rows(&store).await,
        vec![
            row("inbound.injected", format!("inbound/{one}"), "2.0.0", "-"),
            row("inbound.failed", format!("inbound/{two}"), "5.1.1", "-"),
            row("message.accepted", accepted.clone(), "-", "-"),
            row("message.delivered", accepted, "2.0.0", "direct"),
        ]
    );
    assert!(plain.unpublished_events(10).await.unwrap().is_empty());
    assert!(plain.outbox().is_none() && store.outbox().is_some());
}
