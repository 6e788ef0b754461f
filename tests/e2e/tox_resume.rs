//! A 20 MB envelope survives the receiver stopping past 30%: it restarts from its savedata and the
//! transfer resumes from its spool instead of starting over.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tox_runtime::swarm;
use toxmail_tests::peers::{Peer, sealed_mail};
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
    toxmail_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let a = Peer::simple(&a_dir).await;
    let b = Peer::simple(&b_dir).await;
    swarm::link(&[(a.courier.node(), &a.info), (b.courier.node(), &b.info)])
        .await
        .unwrap();

    let (letter, envelope) = sealed_mail(&a.secret, &b.public_key(), 20 * 1000 * 1000);
    let size = envelope.len() as u64;
    let courier = a.courier.clone();
    let (id, to) = (letter.message_id, b.info.address);
    let delivery = tokio::spawn(async move { courier.deliver(to, id, envelope).await });

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

    let b = Peer::simple(&b_dir).await;
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
    assert!(
        resent * 10 < size,
        "{resent} of {size} bytes were sent twice"
    );
    assert_eq!(spooled_bytes(&b_dir), 0, "spool cleaned after the store");
    a.task.shutdown().await;
    b.task.shutdown().await;
}
