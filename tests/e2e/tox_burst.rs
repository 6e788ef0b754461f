//! A burst: 100 sealed 10 KB mails offered to one peer at once all arrive, each stored once, none
//! refused. Regression guard for the transfer races the bridge benchmark found (a file that
//! overtakes its Offer, a reused file number, a transfer that dies unseen).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tox_runtime::swarm;
use toxmail_tests::peers::{Peer, sealed_mail};

use crate::CONNECT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_a_hundred_mails_arrives_exactly_once_with_no_refusal() {
    toxmail_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let a = Peer::simple(&dir.path().join("a")).await;
    let b = Peer::simple(&dir.path().join("b")).await;
    swarm::link(&[(a.courier.node(), &a.info), (b.courier.node(), &b.info)])
        .await
        .unwrap();
    // First contact outside the burst.
    let (warm, env) = sealed_mail(&a.secret, &b.public_key(), 1000);
    let first = a.courier.deliver(b.info.address, warm.message_id, env);
    tokio::time::timeout(CONNECT, first).await.unwrap().unwrap();

    let start = Instant::now();
    let mut set = JoinSet::new();
    let mut ids = HashSet::new();
    for _ in 0..100 {
        let (letter, envelope) = sealed_mail(&a.secret, &b.public_key(), 10 * 1024);
        ids.insert(letter.message_id);
        let (courier, to) = (a.courier.clone(), b.public_key());
        set.spawn(async move {
            let r = courier.deliver(to, letter.message_id, envelope).await;
            (letter.message_id, r, Instant::now())
        });
    }
    let mut slowest = Duration::ZERO;
    while let Some(done) = set.join_next().await {
        let (id, result, at) = done.unwrap();
        assert!(result.is_ok(), "{id}: {result:?}");
        slowest = slowest.max(at - start);
    }
    println!("burst of 100 x 10 KB: last ack after {slowest:?}");
    let stored: Vec<_> = b
        .inbox
        .delivered
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    let unique: HashSet<_> = stored.iter().copied().collect();
    assert_eq!(stored.len(), 101, "each stored once");
    assert!(ids.is_subset(&unique));
    let stats = b.courier.stats();
    assert_eq!(
        stats.offers_refused.load(Ordering::Relaxed),
        0,
        "no refusal"
    );
    a.task.shutdown().await;
    b.task.shutdown().await;
}
