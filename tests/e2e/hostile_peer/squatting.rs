//! Message ids are the sealer's choice: nobody's id stands for another's mail, at the bridge or a relay.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_squatting_a_message_id_does_not_suppress_the_real_mail() {
    let (root, boot) = scene();
    let b = site_b(root.path(), &boot);
    let bob = b.identities["bob@b.test"];
    let (s, a) = tokio::join!(
        attacker(root.path(), "squatter", &boot),
        attacker(root.path(), "alice", &boot)
    );

    // The real sender's mail, id X, not yet delivered; the squatter learned X (a relay saw it).
    let real = letter("alice@a.test", "bob@b.test", &body("REAL-MAIL"));
    let mut squat = letter("alice@a.test", "bob@b.test", &body("SQUATTED"));
    squat.message_id = real.message_id;
    send(&b, &s, bob, &squat)
        .await
        .expect("the squatter's own envelope is stored");
    assert!(in_bobs_maildir(&b, "SQUATTED").await, "{}", b.bridge_log());

    send(&b, &a, bob, &real)
        .await
        .expect("the real mail is acked");
    assert!(
        in_bobs_maildir(&b, "REAL-MAIL").await,
        "the real mail was acked as a duplicate of the squatter's\n{}",
        b.bridge_log()
    );
    // A resend of the real mail is still a duplicate: one copy.
    send(&b, &a, bob, &real).await.expect("resend acked");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let copies = b
        .postfix
        .maildir_messages("bob")
        .iter()
        .filter(|m| contains(m, "REAL-MAIL"))
        .count();
    assert_eq!(copies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_never_confirms_custody_of_a_message_id_another_depositor_took() {
    let (root, boot) = scene();
    // Bob and carol never register: this relay holds mail for unregistered keys too.
    let policy = "registered_recipients_only = false";
    let r =
        toxmail_tests::relay::RelayProcess::start(&root.path().join("relay"), &boot.node, policy);
    let (s, a) = tokio::join!(
        attacker(root.path(), "squatter", &boot),
        attacker(root.path(), "alice", &boot)
    );
    // Bob and carol stay offline; only their keys matter to the relay.
    let bob = toxmail_protocol::public_key_of(&toxmail_protocol::SecretKey::from([5u8; 32]));
    let carol = toxmail_protocol::public_key_of(&toxmail_protocol::SecretKey::from([6u8; 32]));
    // A relay started without a key file encrypts its savedata with one it made itself.
    use std::os::unix::fs::PermissionsExt;
    let state = root.path().join("relay/state");
    let savedata = std::fs::read(state.join("relay.tox")).unwrap();
    assert!(
        savedata.starts_with(b"toxEsave"),
        "relay savedata in the clear"
    );
    let key_mode = std::fs::metadata(state.join("relay.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    // Control: the squatter speaks the protocol, the relay holds its envelope.
    let real = letter("alice@a.test", "bob@b.test", &body("REAL"));
    let mut squat = letter("alice@a.test", "bob@b.test", &body("SQUAT"));
    squat.message_id = real.message_id;
    deposit(&r, &s, bob, &squat)
        .await
        .expect("custody of the squatter's envelope");
    assert_eq!(r.held().await, 1);

    // Alice's real envelope under the same id for bob: refused, never "held".
    match deposit(&r, &a, bob, &real).await {
        Err(DeliveryError::RelayRefused(refusal)) => {
            assert_eq!(refusal.code, toxmail_protocol::RelayRefusal::NotAllowed)
        }
        other => panic!("custody confirmed for an envelope the relay does not hold: {other:?}"),
    }
    assert_eq!(r.held().await, 1);
    // The same id for another recipient is another message: held.
    let mut for_carol = letter("alice@a.test", "carol@c.test", &body("CAROL"));
    for_carol.message_id = real.message_id;
    deposit(&r, &a, carol, &for_carol)
        .await
        .expect("custody for carol");
    // And the squatter depositing again is confirmed again, not stored twice.
    deposit(&r, &s, bob, &squat)
        .await
        .expect("custody confirmed again");
    assert_eq!(r.held().await, 2);
}
