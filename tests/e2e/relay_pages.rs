//! Relay hand-on in pages (issue 12): more envelopes than one page (4 per recipient) and more
//! bytes than one recipient's budget (32 MiB) are held for an offline recipient; when it comes
//! back the relay hands them all on, a few at a time, each exactly once, and deletes each after
//! its ack.

use std::collections::HashSet;
use std::time::Duration;

use tokio::task::JoinSet;
use tox_runtime::transfer::TransferStats;
use toxmail_tests::bootstrapd::{BootstrapDaemon, free_udp_port};
use toxmail_tests::peers::loopback_own_ports as opts;
use toxmail_tests::peers::{Peer, now, sealed_mail};
use toxmail_tests::relay::RelayProcess;
use toxmail_tests::wait_for;

use crate::CONNECT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_hands_on_more_than_a_page_a_few_at_a_time_each_exactly_once() {
    toxmail_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(dir.path()).unwrap();
    let relay = RelayProcess::start(&dir.path().join("r"), &boot.node, "");

    let b_dir = dir.path().join("b");
    let (a_port, b_port) = (free_udp_port(), free_udp_port());
    let b = Peer::start(&b_dir, opts(&boot.node, b_port), Duration::ZERO).await;
    relay.register(&b.courier, CONNECT).await;
    let b_key = b.public_key();
    b.task.shutdown().await;

    // 10 small envelopes (the count binds) and 3 of 12 MiB (36 MiB: the bytes bind).
    let a = Peer::start(
        &dir.path().join("a"),
        opts(&boot.node, a_port),
        Duration::ZERO,
    )
    .await;
    let sizes = [2000; 10].into_iter().chain([12 << 20; 3]);
    let mails: Vec<_> = sizes.map(|n| sealed_mail(&a.secret, &b_key, n)).collect();
    let ids: HashSet<_> = mails.iter().map(|(l, _)| l.message_id).collect();
    let mut deposits = JoinSet::new();
    for (letter, envelope) in mails {
        let (courier, r) = (a.courier.clone(), relay.address());
        deposits.spawn(async move {
            let deposit = courier.deposit(r, letter.message_id, envelope, now() + 3600);
            tokio::time::timeout(CONNECT * 2, deposit).await
        });
    }
    while let Some(done) = deposits.join_next().await {
        let custody = done
            .unwrap()
            .unwrap_or_else(|_| panic!("custody in time\n{}", relay.log()));
        custody.expect("custody");
    }
    assert_eq!(relay.held().await, ids.len() as i64);
    a.task.shutdown().await;

    // B comes back: all arrive once and the relay deletes them all.
    let b = Peer::start(&b_dir, opts(&boot.node, b_port), Duration::ZERO).await;
    b.courier
        .add_relay(relay.address().public_key())
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(240), || b.inbox.count() >= ids.len()).await,
        "{} of {} handed on\n{}",
        b.inbox.count(),
        ids.len(),
        relay.log()
    );
    let emptied = async {
        while relay.held().await > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), emptied)
        .await
        .unwrap_or_else(|_| panic!("not deleted after the acks\n{}", relay.log()));
    let got: Vec<_> = b
        .inbox
        .delivered
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(got.len(), ids.len(), "one copy each");
    assert_eq!(got.iter().copied().collect::<HashSet<_>>(), ids);
    let stats = b.courier.stats();
    assert_eq!(
        TransferStats::get(&stats.duplicates_acked),
        0,
        "nothing offered twice"
    );
    let log = relay.log();
    let handed = log.matches("held envelope delivered; deleting it").count();
    assert_eq!(handed, ids.len(), "each handed on once\n{log}");
    b.task.shutdown().await;
}
