//! What a stranger can cost: friend requests, abandoned transfers, offers without files.

use super::*;

/// Distinct peer keys named on bridge log lines containing `what`.
fn peers_logged(log: &str, what: &str) -> std::collections::HashSet<String> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split("peer=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_strangers_is_bounded_and_strangers_that_deliver_nothing_are_dropped() {
    let (root, boot) = scene();
    let mut b_spec: SiteSpec = spec("site-b", "b.test", &["bob"]);
    b_spec.extra_tox =
        "max_pending_strangers = 4\nstrangers_per_minute = 100\nstranger_grace_secs = 30\n".into();
    let mut b = Site::prepare(root.path(), b_spec, &boot.node);
    b.start_bridge();
    let bob = b.identities["bob@b.test"];
    let savedata = b.dir.join("state/identities/bob@b.test.tox");

    // Control: a stranger that delivers a sealed envelope is a correspondent, and stays one.
    let m = attacker(root.path(), "mallory", &boot).await;
    control(&b, &m, bob, "CONTROL-1").await;
    let before = std::fs::metadata(&savedata).unwrap().len();

    // Ten strangers ask at once; none ever delivers anything.
    let mut flood = Vec::new();
    for _ in 0..10 {
        let options = loopback_own_ports(&boot.node, free_udp_port());
        let node = tox_runtime::Node::start(options).await.unwrap();
        let hello = toxmail_protocol::friend_request_message("let me in");
        node.handle.friend_add(bob, hello).await.unwrap();
        flood.push(node);
    }
    let flooders: std::collections::HashSet<String> = flood
        .iter()
        .map(|n| n.info.public_key.to_string())
        .collect();
    let bounded = wait_for(CONNECT, || {
        let log = b.bridge_log();
        let accepted = peers_logged(&log, "accepted toxmail friend request");
        let refused = peers_logged(&log, "bound reached");
        accepted.intersection(&flooders).count() == 4 && refused.len() >= 6
    });
    assert!(bounded.await, "{}", b.bridge_log());
    let log = b.bridge_log();
    let accepted = peers_logged(&log, "accepted toxmail friend request");
    assert_eq!(
        accepted.intersection(&flooders).count(),
        4,
        "at the cap, not over it"
    );
    let grown = std::fs::metadata(&savedata).unwrap().len() - before;
    eprintln!("savedata: {before} bytes before the flood, +{grown} with 4 strangers");
    assert!(
        grown <= 4 * 4096,
        "savedata grew by {grown} bytes for 4 strangers"
    );

    // The four that delivered nothing are unfriended after their grace; mallory is not.
    let dropped = wait_for(Duration::from_secs(90), || {
        peers_logged(&b.bridge_log(), "unfriended").len() >= 4
    });
    assert!(dropped.await, "{}", b.bridge_log());
    let unfriended = peers_logged(&b.bridge_log(), "unfriended");
    assert!(!unfriended.contains(&m.public_key().to_string()));
    control(&b, &m, bob, "CONTROL-2").await;
    assert!(in_bobs_maildir(&b, "CONTROL-2").await);
    // Never more than the cap of strangers at once: the savedata stays small.
    let grown = std::fs::metadata(&savedata)
        .unwrap()
        .len()
        .saturating_sub(before);
    assert!(grown <= 4 * 4096, "savedata grew by {grown} bytes");
    for node in flood {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_envelopes_of_abandoned_transfers_are_swept() {
    let (root, boot) = scene();
    let mut b_spec: SiteSpec = spec("site-b", "b.test", &["bob"]);
    b_spec.extra_tox = "spool_max_age_secs = 5\n".into();
    let mut b = Site::prepare(root.path(), b_spec, &boot.node);
    let spool = b.dir.join("state/spool/bob@b.test");
    // One left over from before the start (as after a crash): swept at start.
    std::fs::create_dir_all(&spool).unwrap();
    let stale = spool.join(format!("{}-{}.part", "AB".repeat(32), MessageId::random()));
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    b.start_bridge();
    let bob = b.identities["bob@b.test"];
    assert!(
        wait_for(Duration::from_secs(10), || !stale.exists()).await,
        "a stale partial envelope survived the start\n{}",
        b.bridge_log()
    );

    // A control delivery, then a large one the attacker abandons halfway.
    let m = attacker(root.path(), "mallory", &boot).await;
    control(&b, &m, bob, "CONTROL").await;
    let big = "x".repeat(12 * 1024 * 1024);
    let abandoned = letter("m@m.test", "bob@b.test", &body(&big));
    let envelope = seal(&abandoned, &m.secret, &bob.public_key()).expect("seal");
    let courier = m.courier.clone();
    let id = abandoned.message_id;
    tokio::spawn(async move { courier.deliver(bob, id, envelope.into()).await });
    let partial = || {
        std::fs::read_dir(&spool)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.path().extension().is_some_and(|x| x == "part")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
    };
    assert!(
        wait_for(CONNECT, partial).await,
        "the transfer never started\n{}",
        b.bridge_log()
    );
    m.task.shutdown().await; // gone mid-transfer, for good
    let swept = wait_for(Duration::from_secs(60), || !partial()).await;
    assert!(
        swept,
        "the abandoned partial envelope stayed\n{}",
        b.bridge_log()
    );
    assert!(
        b.bridge_log()
            .contains("abandoned partial envelopes deleted")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_flood_without_files_is_bounded_per_peer() {
    let (root, boot) = scene();
    let b = site_b(root.path(), &boot);
    let bob = b.identities["bob@b.test"];
    let m = attacker(root.path(), "mallory", &boot).await;
    control(&b, &m, bob, "CONTROL-1").await;

    // Raw frames from mallory's node: 300 offers, no file ever follows.
    send_raw_offers(&m, bob, 300, 10_000).await;
    let refused = wait_for(CONNECT, || {
        b.bridge_log()
            .matches("offer refused for now: too many outstanding")
            .count()
            >= 300 - 64
    });
    assert!(refused.await, "{}", b.bridge_log());
    let refusals = b
        .bridge_log()
        .matches("offer refused for now: too many outstanding")
        .count();
    assert_eq!(refusals, 300 - 64, "exactly the offers over the bound");

    // The bound is mallory's alone: its own next mail waits (temporarily), another peer's
    // goes through at once.
    let later = letter("m@m.test", "bob@b.test", &body("LATER"));
    match send(&b, &m, bob, &later).await {
        Err(DeliveryError::Refused(n)) => {
            assert_eq!((n.class, n.code), (NackClass::Temporary, NackCode::Busy))
        }
        other => panic!("mallory's offers are over the bound: {other:?}"),
    }
    let a = attacker(root.path(), "alice", &boot).await;
    send(
        &b,
        &a,
        bob,
        &letter("alice@a.test", "bob@b.test", &body("CONTROL-2")),
    )
    .await
    .expect("another peer's delivery during the flood");
    assert!(in_bobs_maildir(&b, "CONTROL-2").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_of_large_envelopes_are_bounded_in_bytes_per_peer() {
    let (root, boot) = scene();
    let b = site_b(root.path(), &boot);
    let bob = b.identities["bob@b.test"];
    let m = attacker(root.path(), "mallory", &boot).await;
    control(&b, &m, bob, "CONTROL-1").await;

    // Five offers of 60 MB each, no file ever follows: the spool space they claim would be
    // 300 MB, over one peer's 256 MiB. Four are taken, the fifth waits.
    send_raw_offers(&m, bob, 5, 60_000_000).await;
    const BOUND: &str = "offer refused for now: too many bytes outstanding";
    let refused = wait_for(CONNECT, || b.bridge_log().contains(BOUND));
    assert!(refused.await, "{}", b.bridge_log());
    assert_eq!(
        b.bridge_log().matches(BOUND).count(),
        1,
        "the fifth offer only"
    );
    // The bound counts bytes, not offers: a small mail still fits in mallory's remaining room.
    let small = letter("m@m.test", "bob@b.test", &body("SMALL"));
    send(&b, &m, bob, &small).await.expect("a small mail fits");
    assert!(in_bobs_maildir(&b, "SMALL").await);
    // Another peer is not affected at all.
    let a = attacker(root.path(), "alice", &boot).await;
    let control_2 = letter("alice@a.test", "bob@b.test", &body("CONTROL-2"));
    send(&b, &a, bob, &control_2)
        .await
        .expect("another peer's delivery");
    assert!(in_bobs_maildir(&b, "CONTROL-2").await);
}

/// Sends `count` `Offer` frames of `size` bytes under fresh ids from `from`'s node to `to`,
/// below the courier: no file ever follows.
async fn send_raw_offers(from: &Peer, to: ToxId, count: usize, size: u64) {
    let friend = from.friend_number(to.public_key()).await;
    let raw = from.courier.node().clone();
    for _ in 0..count {
        let offer = toxmail_protocol::Frame::Offer(toxmail_protocol::Offer {
            message_id: MessageId::random(),
            size,
        });
        // The packet queue may be full for a moment: wait and send again.
        while raw.send_packet(friend, offer.encode()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
