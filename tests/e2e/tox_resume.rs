//! A 20 MB envelope survives the receiver stopping past 30%: it restarts from its savedata and the
//! transfer resumes from its spool instead of starting over. When the kept part is damaged (a
//! power loss after writes were reported done), the resumed envelope does not open: it is
//! fetched again from the start, never refused for good.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tox_runtime::swarm;
use toxmail_tests::bootstrapd::{BootstrapDaemon, free_udp_port};
use toxmail_tests::peers::{Peer, loopback_own_ports, sealed_mail};
use toxmail_tests::wait_for;

use crate::CONNECT;

fn spooled_bytes(peer_dir: &std::path::Path) -> u64 {
    std::fs::read_dir(peer_dir.join("spool"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_restarted_mid_transfer_resumes_and_resends_under_ten_percent() {
    let (size, sent) = broken_off_and_resumed(false).await;
    let resent = sent.saturating_sub(size);
    assert!(
        resent * 10 < size,
        "{resent} of {size} bytes were sent twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_spool_is_fetched_again_not_refused() {
    let (size, sent) = broken_off_and_resumed(true).await;
    assert!(sent > size, "the envelope was fetched again");
}

/// Sends a 20 MB envelope, kills the receiver past 30% (damaging what its spool kept when
/// `damage`), restarts it and returns the envelope size and the bytes the sender sent in all.
async fn broken_off_and_resumed(damage: bool) -> (u64, u64) {
    toxmail_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    // A private DHT node besides the two peers: after b restarts with a new DHT key, a finds it
    // through the onion within seconds. Two peers alone find each other only once c-toxcore
    // drops the old DHT key as a bad node (122 s; seen as reconnects after 8 s or after 124 s).
    let boot = BootstrapDaemon::start(dir.path()).unwrap();
    let options = || loopback_own_ports(&boot.node, free_udp_port());
    let a = Peer::start(&a_dir, options(), Duration::ZERO).await;
    let b = Peer::start(&b_dir, options(), Duration::ZERO).await;
    swarm::link(&[(a.courier.node(), &a.info), (b.courier.node(), &b.info)])
        .await
        .unwrap();

    let (letter, size, delivery) = deliver_20_mb(&a, &b);

    let past_30 = wait_for(CONNECT + Duration::from_secs(60), || {
        spooled_bytes(&b_dir) * 10 > size * 3
    })
    .await;
    assert!(past_30, "the transfer never reached 30%");
    b.task.kill().await; // no final save, as in a crash
    let kept = spooled_bytes(&b_dir);
    assert!(
        kept * 10 > size * 3 && kept < size,
        "spool kept {kept} of {size}"
    );

    if damage {
        // Zeros where sealed bytes were: what a lost write leaves after a power cut.
        let part = std::fs::read_dir(b_dir.join("spool"))
            .unwrap()
            .filter_map(|e| Some(e.ok()?.path()))
            .find(|p| p.extension().is_some_and(|x| x == "part"))
            .expect("a partial envelope");
        let file = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &vec![0u8; 4096], kept / 2).unwrap();
    }
    let b = Peer::start(&b_dir, options(), Duration::ZERO).await;
    swarm::link(&[(a.courier.node(), &a.info), (b.courier.node(), &b.info)])
        .await
        .unwrap();
    let outcome = tokio::time::timeout(CONNECT + Duration::from_secs(60), delivery).await;
    outcome.expect("delivered in time").unwrap().expect("acked");

    let got = b.inbox.delivered.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert!(got[0].message == letter.message, "content differs");
    let sent = a
        .courier
        .node()
        .stats()
        .chunk_bytes_sent
        .load(Ordering::Relaxed);
    let resent = sent.saturating_sub(size);
    println!("envelope {size} B, receiver kept {kept} B, sender sent {sent} B, resent {resent} B");
    assert_eq!(spooled_bytes(&b_dir), 0, "spool cleaned after the store");
    a.task.shutdown().await;
    b.task.shutdown().await;
    (size, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_given_up_mid_transfer_leaves_nothing_stored() {
    toxmail_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let a = Peer::simple(&a_dir).await;
    let b = Peer::simple(&b_dir).await;
    swarm::link(&[(a.courier.node(), &a.info), (b.courier.node(), &b.info)])
        .await
        .unwrap();
    // The bridge drops a delivery whose mail expired (and bounces it): the same as aborting here.
    let (_, size, delivery) = deliver_20_mb(&a, &b);
    let started = wait_for(CONNECT + Duration::from_secs(60), || {
        spooled_bytes(&b_dir) * 10 > size
    });
    assert!(started.await, "the transfer never reached 10%");
    delivery.abort();

    // The transfer stops: the receiver's spool stays the same for 3 s in a row.
    let mut last = (spooled_bytes(&b_dir), std::time::Instant::now());
    let halted = wait_for(Duration::from_secs(60), || {
        let now = spooled_bytes(&b_dir);
        if now != last.0 {
            last = (now, std::time::Instant::now());
        }
        last.1.elapsed() >= Duration::from_secs(3)
    });
    assert!(
        halted.await,
        "the file kept coming after the delivery was given up"
    );
    assert!(spooled_bytes(&b_dir) < size, "the whole envelope arrived");
    assert!(
        b.inbox.delivered.lock().unwrap().is_empty(),
        "the receiver stored a mail the sender gave up"
    );
    a.task.shutdown().await;
    b.task.shutdown().await;
}

/// Starts delivering a sealed 20 MB mail from `a` to `b`; returns the letter, the envelope size
/// and the delivery's task.
fn deliver_20_mb(
    a: &Peer,
    b: &Peer,
) -> (
    toxmail_protocol::Letter,
    u64,
    tokio::task::JoinHandle<Result<(), tox_runtime::transfer::DeliveryError>>,
) {
    let (letter, envelope) = sealed_mail(&a.secret, &b.public_key(), 20 * 1000 * 1000);
    let size = envelope.len() as u64;
    let courier = a.courier.clone();
    let (id, to) = (letter.message_id, b.info.address);
    let delivery = tokio::spawn(async move { courier.deliver(to, id, envelope).await });
    (letter, size, delivery)
}
