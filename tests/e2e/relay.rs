//! Relay nodes: a real `toxmail-relay` process with its own PostgreSQL holds sealed mail for a
//! recipient that is offline, hands it to that recipient only, deletes it after the ack, enforces
//! quotas and sizes, survives SIGKILL, and purges what expired.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tox_runtime::BootstrapNode;
use tox_runtime::transfer::{DeliveryError, PeerEvent};
use toxmail_protocol::{
    Letter, MessageId, Metadata, NackClass, PublicKey, RelayRefusal, SecretKey, seal,
};
use toxmail_tests::bootstrapd::{BootstrapDaemon, free_udp_port};
use toxmail_tests::peers::loopback_own_ports as opts;
use toxmail_tests::peers::{Peer, now};
use toxmail_tests::relay::RelayProcess;
use toxmail_tests::wait_for;

use crate::CONNECT;

/// A letter for `recipient` whose body carries `marker`, sealed from `from` to `to`.
fn letter(from: &SecretKey, to: &PublicKey, recipient: &str, marker: &str) -> (Letter, Arc<[u8]>) {
    let message = format!(
        "From: alice@a.test\r\nTo: {recipient}\r\nSubject: while you were away\r\n\r\n\
         The code word is {marker}.\r\n"
    )
    .into_bytes();
    let letter = Letter {
        message_id: MessageId::random(),
        metadata: Metadata {
            envelope_sender: "alice@a.test".into(),
            recipient: recipient.into(),
            queue_id: "4Relay1".into(),
            created: now(),
            expires: now() + 86400,
            extensions: Default::default(),
        },
        message,
    };
    let envelope = seal(&letter, from, to).unwrap();
    (letter, envelope.into())
}

/// Starts the recipient again from its savedata, trusting its relays; returns it with the
/// moment it saw each relay come online.
async fn restart_recipient(
    dir: &std::path::Path,
    boot: &BootstrapNode,
    port: u16,
    relays: &[&RelayProcess],
) -> (Peer, tokio::sync::mpsc::UnboundedReceiver<PeerEvent>) {
    let b = Peer::start(dir, opts(boot, port), Duration::ZERO).await;
    let events = b.courier.subscribe();
    for r in relays {
        b.courier.add_relay(r.address().public_key()).await.unwrap();
    }
    (b, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_holds_mail_for_an_offline_recipient_and_deletes_it_after_the_ack() {
    toxmail_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(dir.path()).unwrap();
    let r1 = RelayProcess::start(&dir.path().join("r1"), &boot.node, "");
    let r2 = RelayProcess::start(&dir.path().join("r2"), &boot.node, "");

    // B registers with both relays, then goes offline.
    let b_dir = dir.path().join("b");
    let (a_port, b_port) = (free_udp_port(), free_udp_port());
    let b = Peer::start(&b_dir, opts(&boot.node, b_port), Duration::ZERO).await;
    r1.register(&b.courier, CONNECT).await;
    r2.register(&b.courier, CONNECT).await;
    let b_key = b.public_key();
    let b_address = b.info.address;
    b.task.shutdown().await;

    // A deposits one envelope at both relays (each confirms custody), then shuts down.
    let a = Peer::start(
        &dir.path().join("a"),
        opts(&boot.node, a_port),
        Duration::ZERO,
    )
    .await;
    let marker = format!("RELAYMARK-{}", MessageId::random());
    let (letter, envelope) = letter(&a.secret, &b_key, "bob@b.test", &marker);
    let id = letter.message_id;
    for r in [&r1, &r2] {
        let deposit = a
            .courier
            .deposit(r.address(), id, envelope.clone(), now() + 3600);
        tokio::time::timeout(CONNECT, deposit)
            .await
            .unwrap_or_else(|_| panic!("no custody in time\n{}", r.log()))
            .expect("custody");
        assert_eq!(r.held().await, 1, "held by the relay");
    }
    for r in [&r1, &r2] {
        let dump = r.pg.dump();
        let has = |needle: &str| dump.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(!has(&marker), "the body's marker is in a relay's database");
        assert!(
            !has("bob@b.test"),
            "the recipient's address is in a relay's database"
        );
    }
    let a_key = a.public_key();
    a.task.shutdown().await;

    // B comes back: the mail is in its inbox within 5 s of its connection to the first relay.
    let (b, mut events) = restart_recipient(&b_dir, &boot.node, b_port, &[&r1, &r2]).await;
    let relays = [r1.address().public_key(), r2.address().public_key()];
    let first_online = async {
        while let Some(e) = events.recv().await {
            if matches!(e, PeerEvent::Online(pk) if relays.contains(&pk)) {
                return Instant::now();
            }
        }
        panic!("event stream ended");
    };
    let online_at = tokio::time::timeout(CONNECT, first_online)
        .await
        .unwrap_or_else(|_| panic!("no relay online\n{}\n{}", r1.log(), r2.log()));
    assert!(
        wait_for(Duration::from_secs(30), || b.inbox.count() >= 1).await,
        "relayed mail arrived\n{}\n{}",
        r1.log(),
        r2.log()
    );
    let took = online_at.elapsed();
    println!("relayed mail stored {took:?} after the friend connection to a relay");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let got = b.inbox.delivered.lock().unwrap()[0].clone();
    assert_eq!(got.message, letter.message, "exact bytes");
    assert_eq!(got.from, a_key, "verified original sender, not the relay");

    // Both relays hand it on and delete it after B's ack; A delivers it directly too.
    let deleted = async {
        while r1.held().await + r2.held().await > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), deleted)
        .await
        .unwrap_or_else(|_| panic!("not deleted after the ack\n{}\n{}", r1.log(), r2.log()));
    let a = Peer::start(
        &dir.path().join("a"),
        opts(&boot.node, a_port),
        Duration::ZERO,
    )
    .await;
    let direct = a.courier.deliver(b_address, id, envelope.clone());
    tokio::time::timeout(CONNECT, direct)
        .await
        .expect("direct delivery answered")
        .expect("acked as a duplicate");
    assert_eq!(
        b.inbox.count(),
        1,
        "one copy across two relays and a direct delivery"
    );
    a.task.shutdown().await;
    b.task.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_refuses_forged_over_quota_and_oversized_keeps_mail_across_sigkill_and_purges_expired()
 {
    toxmail_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(dir.path()).unwrap();
    // The recipient never registers: this relay holds mail for unregistered keys too.
    let policy = "daily_count = 2\nmax_envelope_bytes = 65536\nmax_hold_secs = 25\n\
                  purge_interval_secs = 1\nregistered_recipients_only = false";
    let mut relay = RelayProcess::start(&dir.path().join("r"), &boot.node, policy);
    // The relay is a DHT node too: this depositor bootstraps from it alone.
    let a = Peer::start(
        &dir.path().join("a"),
        opts(&relay.dht_node(), free_udp_port()),
        Duration::ZERO,
    )
    .await;
    // A recipient that never comes online: only its key matters to the relay.
    let b_key = toxmail_protocol::public_key_of(&SecretKey::from([0x42; 32]));

    let deposit = async |size_marker: &str, body: usize| {
        let (mut l, _) = letter(&a.secret, &b_key, "bob@b.test", size_marker);
        l.message.resize(body, b'x');
        let envelope: Arc<[u8]> = seal(&l, &a.secret, &b_key).unwrap().into();
        let d = a
            .courier
            .deposit(relay.address(), l.message_id, envelope, now() + 3600);
        tokio::time::timeout(CONNECT, d)
            .await
            .expect("answered in time")
    };
    // An envelope sealed by someone else than the depositor is refused for good, and not counted.
    let mallory = SecretKey::from([0x66; 32]);
    let (forged, envelope) = letter(&mallory, &b_key, "bob@b.test", "forged");
    let d = a
        .courier
        .deposit(relay.address(), forged.message_id, envelope, now() + 3600);
    match tokio::time::timeout(CONNECT, d).await.expect("answered") {
        Err(DeliveryError::RelayRefused(r)) => {
            assert_eq!(
                (r.code, r.class),
                (RelayRefusal::Malformed, NackClass::Permanent)
            );
        }
        other => panic!("forged deposit: {other:?}"),
    }
    assert_eq!(relay.held().await, 0, "nothing stored");
    deposit("one", 10_000).await.expect("first deposit held");
    deposit("two", 10_000).await.expect("second deposit held");
    match deposit("three", 10_000).await {
        Err(DeliveryError::RelayRefused(r)) => {
            assert_eq!(r.code, RelayRefusal::QuotaCount);
            assert_eq!(
                r.class,
                NackClass::Temporary,
                "the sender keeps it and retries"
            );
        }
        other => panic!("over quota: {other:?}"),
    }
    match deposit("big", 100_000).await {
        Err(e @ DeliveryError::TooLarge { .. }) => assert!(!e.is_temporary()),
        Err(DeliveryError::RelayRefused(r)) => assert_eq!(r.class, NackClass::Permanent),
        other => panic!("oversized: {other:?}"),
    }
    assert_eq!(relay.held().await, 2, "refusals changed nothing");

    // A crash while holding mail loses nothing.
    relay.kill();
    relay.run();
    assert_eq!(relay.held().await, 2, "held mail survives SIGKILL");
    let status = relay.admin(&["status"]).unwrap();
    assert!(status.contains("held 2 envelope(s)"), "{status}");

    // The holding time (25 s) runs out: the purge deletes both.
    let purged = async {
        while relay.held().await > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), purged)
        .await
        .expect("expired envelopes purged");
    a.task.shutdown().await;
}
