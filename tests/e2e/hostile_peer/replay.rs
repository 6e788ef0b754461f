//! Issue 12: an envelope whose sealed expiry passed more than a day ago is acknowledged and never
//! stored or injected, so a replay after the retention purge deleted its dedup row (a late relay,
//! a lost ack, an attacker who kept it) cannot deliver the message twice.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_expired_longer_ago_than_the_grace_is_acked_and_never_injected() {
    let (root, boot) = scene();
    let b = site_b(root.path(), &boot);
    let bob = b.identities["bob@b.test"];
    let m = attacker(root.path(), "mallory", &boot).await;
    control(&b, &m, bob, "CONTROL-BEFORE").await;
    assert!(
        in_bobs_maildir(&b, "CONTROL-BEFORE").await,
        "{}",
        b.bridge_log()
    );

    let mut stale = letter("m@m.test", "bob@b.test", &body("STALE-REPLAY"));
    stale.metadata.created = now() - 9 * 86_400;
    stale.metadata.expires = now() - 2 * 86_400;
    send(&b, &m, bob, &stale)
        .await
        .expect("acknowledged as the duplicate it would be");

    control(&b, &m, bob, "CONTROL-AFTER").await;
    assert!(
        in_bobs_maildir(&b, "CONTROL-AFTER").await,
        "{}",
        b.bridge_log()
    );
    assert!(
        !in_bobs_maildir_now(&b, "STALE-REPLAY"),
        "an envelope past its expiry was injected\n{}",
        b.bridge_log()
    );
    assert!(
        b.bridge_log().contains("envelope expired long ago"),
        "{}",
        b.bridge_log()
    );
}
