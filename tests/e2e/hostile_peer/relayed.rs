//! A relay is a way around the friendship check: `friend_policy = "contacts"` must bind what
//! comes through one too.

use super::*;
use toxmail_tests::relay::RelayProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_contacts_policy_a_strangers_envelope_through_a_relay_is_refused() {
    let (root, boot) = scene();
    let relay = RelayProcess::start(&root.path().join("relay"), &boot.node, "");
    let relay_id = relay.address();

    // Site B takes mail only from its contacts (alice), and bob registers with the relay.
    let mut b_spec: SiteSpec = spec("site-b", "b.test", &["bob"]);
    b_spec.extra_tox = "friend_policy = \"contacts\"".into();
    b_spec.extra_sections = format!("\n[relays]\nregister_with = [\"{relay_id}\"]\n");
    let mut b = Site::prepare(root.path(), b_spec, &boot.node);
    let bob = b.identities["bob@b.test"];
    let (m, a) = mallory_and_contact_alice(root.path(), &boot, &b).await;
    b.start_bridge();
    // Bob's own registration (each identity registers on its own), not the default identity's.
    let registered = wait_for(CONNECT, || b.relay_registrations(&bob) >= 1);
    assert!(
        registered.await,
        "B:\n{}\nR:\n{}",
        b.bridge_log(),
        relay.log()
    );

    // Mallory, a stranger B would not befriend, has the relay hold an envelope for bob; so
    // does alice, the control.
    let evil = letter("m@m.test", "bob@b.test", &body("STRANGER-VIA-RELAY"));
    deposit(&relay, &m, bob.public_key(), &evil)
        .await
        .expect("the relay holds mail for bob from anyone");
    let good = letter("alice@a.test", "bob@b.test", &body("CONTACT-VIA-RELAY"));
    deposit(&relay, &a, bob.public_key(), &good)
        .await
        .expect("the relay holds alice's mail");

    // Bob's site takes alice's envelope from the relay and refuses mallory's for good.
    assert!(
        in_bobs_maildir(&b, "CONTACT-VIA-RELAY").await,
        "the contact's mail through the relay\nB:\n{}\nR:\n{}",
        b.bridge_log(),
        relay.log()
    );
    let evil_id = evil.message_id.to_string();
    let refused = wait_for(INJECTED, || {
        b.bridge_log().lines().any(|l| {
            l.contains("envelope refused at admission")
                && l.contains(&evil_id)
                && l.contains("only from its contacts")
        })
    });
    assert!(refused.await, "B:\n{}\nR:\n{}", b.bridge_log(), relay.log());
    // The relay drops it after that permanent refusal; it never reaches the Maildir.
    let dropped = async {
        while relay.held().await > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(INJECTED, dropped)
        .await
        .unwrap_or_else(|_| panic!("still held\n{}", relay.log()));
    assert!(!in_bobs_maildir_now(&b, "STRANGER-VIA-RELAY"));
    let inbound =
        crate::postfix_recovery::query_strings(&b, "SELECT encode(message_id, 'hex') FROM inbound")
            .await;
    assert_eq!(
        inbound.len(),
        1,
        "only alice's envelope recorded: {inbound:?}"
    );
}
