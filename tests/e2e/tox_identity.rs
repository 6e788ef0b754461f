//! A restarted node keeps its Tox ID (nospam included) and its friends, from plain or encrypted
//! savedata, after a clean stop and after a crash.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tox_runtime::{Node, Options, RuntimeError};
use toxmail_protocol::PublicKey;

async fn restart(path: &std::path::Path, pass: &[u8], crash: bool) -> Node {
    let node = Node::start(Options::loopback().savedata(path).passphrase(pass))
        .await
        .unwrap();
    if crash {
        node.kill().await;
    } else {
        node.shutdown().await;
    }
    Node::start(Options::loopback().savedata(path).passphrase(pass))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_keeps_tox_id_nospam_and_friends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.tox");
    let friend = Node::start(Options::loopback()).await.unwrap();

    let node = Node::start(Options::loopback().savedata(&path).passphrase("s3cret"))
        .await
        .unwrap();
    let address = node.handle.set_nospam(0x1234_5678).await.unwrap();
    assert_eq!(address.nospam(), 0x1234_5678);
    node.handle
        .friend_add(friend.info.address, b"toxmail/1".to_vec())
        .await
        .unwrap();
    node.kill().await; // changes that matter were persisted when they were made

    let on_disk = std::fs::read(&path).unwrap();
    assert!(on_disk.starts_with(b"toxEsave"), "savedata is encrypted");

    for crash in [true, false] {
        let node = restart(&path, b"s3cret", crash).await;
        assert_eq!(node.info.address, address, "Tox ID incl. nospam survives");
        let friends = node.handle.friends().await.unwrap();
        assert_eq!(friends.len(), 1);
        assert_eq!(friends[0].public_key, friend.info.public_key);
        node.shutdown().await;
    }

    let wrong = Node::start(Options::loopback().savedata(&path).passphrase("wrong")).await;
    assert!(matches!(wrong, Err(RuntimeError::SavedataDecrypt(_))));
    let none = Node::start(Options::loopback().savedata(&path)).await;
    assert!(matches!(none, Err(RuntimeError::SavedataEncrypted(_))));
    friend.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_savedata_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.tox");
    std::fs::write(&path, b"this is not tox savedata").unwrap();
    let err = Node::start(Options::loopback().savedata(&path))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::SavedataCorrupt(_)), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"this is not tox savedata");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_friendships_are_saved_in_batches_not_one_write_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.tox");
    let node = Node::start(Options::loopback().savedata(&path))
        .await
        .unwrap();
    let writes = || node.handle.stats().savedata_writes.load(Ordering::Relaxed);
    let before = writes();
    // A flood of accepted friend requests, as strangers (up to the bridge's caps) or a roster
    // adding contacts would cause.
    let keys: Vec<PublicKey> = (0..50u8).map(|n| PublicKey([n + 1; 32])).collect();
    for key in &keys {
        node.handle.friend_add_norequest(*key).await.unwrap();
    }
    let during = writes() - before;
    // Written within the batch interval, once or twice, not 50 times.
    let saved = toxmail_tests::wait_for(Duration::from_secs(10), || writes() > before).await;
    assert!(saved, "the batch was never written");
    let after = writes() - before;
    eprintln!("50 accepted friendships: {during} savedata writes while accepting, {after} in all");
    assert!(after <= 3, "{after} writes for 50 friendships");
    node.kill().await; // a crash after the batch: nothing lost
    let node = Node::start(Options::loopback().savedata(&path))
        .await
        .unwrap();
    let friends = node.handle.friends().await.unwrap();
    assert_eq!(friends.len(), keys.len());
    node.shutdown().await;
}
