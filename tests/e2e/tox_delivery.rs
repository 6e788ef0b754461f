//! Two peers deliver a 10 KB sealed mail: bootstrapped from each other, and from a tox-bootstrapd.

use std::time::{Duration, Instant};

use tox_runtime::Options;
use tox_runtime::swarm;
use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::peers::{Peer, sealed_mail};

use crate::CONNECT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_between_linked_peers_arrives_exactly_and_acks_after_store() {
    toxmail_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let a = Peer::simple(&dir.path().join("a")).await;
    // The store takes a second; the sender must not hear "stored" before it returned.
    let b = Peer::start(
        &dir.path().join("b"),
        Options::loopback(),
        Duration::from_secs(1),
    )
    .await;
    swarm::link(&[(a.courier.node(), &a.info), (b.courier.node(), &b.info)])
        .await
        .unwrap();

    let (letter, envelope) = sealed_mail(&a.secret, &b.public_key(), 10 * 1024);
    let delivery = tokio::time::timeout(
        CONNECT,
        a.courier
            .deliver(b.info.address, letter.message_id, envelope),
    );
    delivery.await.expect("delivered in time").expect("acked");
    let acked_at = Instant::now();

    let got = b.inbox.delivered.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, letter.message, "exact bytes");
    assert_eq!(got[0].from, a.public_key(), "verified sender key");
    assert_eq!(got[0].id, letter.message_id);
    assert!(
        got[0].stored_at <= acked_at,
        "ack came before the store returned"
    );
    a.task.shutdown().await;
    b.task.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_through_a_private_bootstrapd_arrives() {
    toxmail_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let daemon = BootstrapDaemon::start(dir.path()).expect("tox-bootstrapd starts");
    let opts = || Options::loopback().bootstrap_from(daemon.node.clone());
    let a = Peer::start(&dir.path().join("a"), opts(), Duration::ZERO).await;
    let b = Peer::start(&dir.path().join("b"), opts(), Duration::ZERO).await;

    let (letter, envelope) = sealed_mail(&a.secret, &b.public_key(), 10 * 1024);
    let delivery = tokio::time::timeout(
        CONNECT,
        a.courier
            .deliver(b.info.address, letter.message_id, envelope),
    );
    delivery.await.expect("delivered in time").expect("acked");
    let got = b.inbox.delivered.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, letter.message);
    assert_eq!(got[0].from, a.public_key());
    a.task.shutdown().await;
    b.task.shutdown().await;
}
