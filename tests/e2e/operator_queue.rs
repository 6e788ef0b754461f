//! The operator's day (issue 11): a copy deleted while the running bridge waits for its peer is
//! never delivered (the bridge drops its delivery at its next pass, usually woken by the next mail)
//! while the next copy is; `queue list` says the copy waits for the peer, and once the peer has
//! come and gone, since when it is offline.

use std::time::Duration;

use toxmail_tests::site::Site;
use toxmail_tests::wait_for;

use crate::CONNECT;
use crate::postfix_recovery::{poll, query_strings, send};

/// The `why` column of copy `id` in `queue list`.
fn why(site: &Site, id: &str) -> String {
    let list = site.admin(&["queue", "list"]).unwrap();
    let row = list.lines().find(|l| l.starts_with(&format!("{id}\t")));
    let row = row.unwrap_or_else(|| panic!("copy {id} not listed:\n{list}"));
    row.rsplit('\t').next().unwrap().to_string()
}

async fn queued_ids(site: &Site) -> Vec<String> {
    query_strings(
        site,
        "SELECT id::text FROM outbound WHERE state = 'queued' ORDER BY id",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_copy_is_never_delivered_and_queue_list_says_since_when_the_peer_is_offline() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let (_boot, a, mut b) = crate::postfix_flow::alice_with_bob_offline(root.path());

    send(&a, "bob@b.test", "withdrawn").await;
    let queued = poll(Duration::from_secs(30), || async {
        queued_ids(&a).await.len() == 1
    });
    assert!(queued.await, "queued by bridge A\n{}", a.bridge_log());
    let withdrawn = queued_ids(&a).await.remove(0);
    let waits = why(&a, &withdrawn);
    // Just started, A's own node may not have reached the Tox network yet: that is the reason then.
    let reasons = [
        "waiting for the peer to come online",
        "is not connected to the Tox network",
    ];
    assert!(reasons.iter().any(|r| waits.contains(r)), "{waits}");

    let deleted = a.admin(&["queue", "delete", &withdrawn]).unwrap();
    assert!(
        deleted.contains(&format!("deleted copy {withdrawn} ")),
        "{deleted}"
    );
    // No transfer holds a copy while its peer is offline (issue 12: the copies wait in the
    // database, one waiter per peer), so the deleted copy is simply gone; a copy already in
    // transfer would be stopped by the dispatcher's next pass.
    send(&a, "bob@b.test", "kept").await;
    let kept = poll(Duration::from_secs(30), || async {
        queued_ids(&a).await.len() == 1
    });
    assert!(kept.await, "{}", a.bridge_log());

    b.start_bridge();
    let delivered = poll(CONNECT, || async { queued_ids(&a).await.is_empty() });
    assert!(
        delivered.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );
    let arrived = wait_for(Duration::from_secs(60), || {
        !b.postfix.maildir_messages("bob").is_empty()
    });
    assert!(arrived.await, "B:\n{}", b.bridge_log());
    let online = poll(Duration::from_secs(30), || async {
        query_strings(&a, "SELECT online::text FROM peer_presence").await == ["true"]
    });
    assert!(online.await, "A recorded bob online\n{}", a.bridge_log());

    // Bob's site goes away; the next copy waits, and A says since when bob is offline.
    b.stop_bridge();
    send(&a, "bob@b.test", "while you were away").await;
    let offline = poll(CONNECT, || async {
        query_strings(&a, "SELECT online::text FROM peer_presence").await == ["false"]
            && queued_ids(&a).await.len() == 1
    });
    assert!(offline.await, "A recorded bob offline\n{}", a.bridge_log());
    let waiting = queued_ids(&a).await.remove(0);
    let waits = why(&a, &waiting);
    assert!(waits.starts_with("peer offline since 20"), "{waits}");

    let mail = b.postfix.maildir_messages("bob");
    assert_eq!(mail.len(), 1, "only the copy that was not deleted");
    let text = String::from_utf8_lossy(&mail[0]);
    assert!(text.contains("Subject: kept"), "{text}");
    assert!(
        !a.bridge_log().contains("the row is gone"),
        "{}",
        a.bridge_log()
    );
}
