//! Blocked keys, removed contacts and a rotated nospam end friendships.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_keys_removed_contacts_and_a_rotated_nospam_revoke_friendships() {
    let (root, boot) = scene();
    let b = site_b(root.path(), &boot);
    let bob = b.identities["bob@b.test"];
    let (m, a) = mallory_and_contact_alice(root.path(), &boot, &b).await;
    control(&b, &m, bob, "CONTROL-M").await;
    send(
        &b,
        &a,
        bob,
        &letter("alice@a.test", "bob@b.test", &body("CONTROL-A")),
    )
    .await
    .expect("alice's control delivery");
    let ended = |key: String| {
        let log = b.bridge_log();
        log.lines()
            .any(|l| l.contains("friendship ended by the operator") && l.contains(&key))
    };

    // Blocking mallory ends the friendship: her next mail gets nowhere.
    let out = b
        .admin(&["block", "add", &m.info.address.to_string()])
        .unwrap();
    assert!(out.contains("blocked"), "{out}");
    let m_key = m.public_key().to_string();
    assert!(
        wait_for(Duration::from_secs(20), || ended(m_key.clone())).await,
        "{}",
        b.bridge_log()
    );
    let after = letter("m@m.test", "bob@b.test", &body("AFTER-BLOCK"));
    let envelope = seal(&after, &m.secret, &bob.public_key()).unwrap();
    let late = m.courier.deliver(bob, after.message_id, envelope.into());
    assert!(
        tokio::time::timeout(Duration::from_secs(15), late)
            .await
            .is_err()
    );
    assert!(!in_bobs_maildir_now(&b, "AFTER-BLOCK"));

    // Removing alice's contact ends hers.
    b.admin(&["contact", "remove", "alice@a.test"]).unwrap();
    let a_key = a.public_key().to_string();
    assert!(
        wait_for(Duration::from_secs(20), || ended(a_key.clone())).await,
        "{}",
        b.bridge_log()
    );

    // A rotated nospam: the old Tox ID takes no new friend, the new one does.
    let out = b
        .admin(&["identity", "rotate-nospam", "bob@b.test"])
        .unwrap();
    let new_id: ToxId = out
        .lines()
        .find_map(|l| l.strip_prefix("new Tox ID: "))
        .expect("new Tox ID printed")
        .parse()
        .unwrap();
    assert_ne!(new_id, bob);
    assert!(out.contains(&format!("v=tox1;id={new_id}")), "{out}");
    let rotated = wait_for(Duration::from_secs(20), || {
        b.bridge_log().contains("nospam rotated")
    });
    assert!(rotated.await, "{}", b.bridge_log());
    let (old, new) = tokio::join!(
        attacker(root.path(), "with-old-id", &boot),
        attacker(root.path(), "with-new-id", &boot)
    );
    let to_old = letter("o@o.test", "bob@b.test", &body("OLD-ID"));
    let to_new = letter("n@n.test", "bob@b.test", &body("NEW-ID"));
    let old_env = seal(&to_old, &old.secret, &bob.public_key()).unwrap();
    let (old_courier, old_id) = (old.courier.clone(), to_old.message_id);
    let old_try = tokio::spawn(async move {
        let deliver = old_courier.deliver(bob, old_id, old_env.into());
        tokio::time::timeout(CONNECT, deliver).await
    });
    send(&b, &new, new_id, &to_new)
        .await
        .expect("the new Tox ID admits a friend");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !old_try.is_finished(),
        "a friend request to the old Tox ID was taken"
    );
    assert!(!in_bobs_maildir_now(&b, "OLD-ID"));
}
