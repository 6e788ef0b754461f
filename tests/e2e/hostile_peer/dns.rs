//! Item 9: keys from DNS. Whoever controls the DNS answers site A gets (a spoofed reply, a
//! hijacked zone) can name any key for bob@b.test. Once A has delivered to bob, his key is pinned:
//! the changed answer stops his mail at A's door (a temporary refusal, one loud log line) instead
//! of sealing it to the attacker's key, until A's operator decides.

use std::time::Duration;

use toxmail_protocol::{PublicKey, ToxId};
use toxmail_tests::dns::{DnsOptions, DnsServer};
use toxmail_tests::site::Site;
use toxmail_tests::{smtp, wait_for};

use super::{body, in_bobs_maildir, scene, site_b};
use crate::postfix_flow::spec;

fn record(id: ToxId) -> Vec<(&'static str, Vec<String>)> {
    vec![("bob._tox.b.test", vec![format!("v=tox1;id={id}")])]
}

async fn mail_to_bob(a: &Site, marker: &str) -> smtp::SmtpOutcome {
    let to = ["bob@b.test"];
    let message = smtp::message("alice@a.test", &to, "hello", &body(marker));
    smtp::send(a.postfix.smtp_addr(), "alice@a.test", &to, &message)
        .await
        .unwrap()
}

fn pins(a: &Site) -> String {
    a.admin(&["pins", "list"]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_dns_key_after_first_use_holds_mail_until_the_operator_accepts_it() {
    let (root, boot) = scene();
    let b = site_b(root.path(), &boot);
    let bob = b.identities["bob@b.test"];
    // A short TTL, so that A's resolver asks again soon after the answer changes.
    let options = DnsOptions {
        ttl: 1,
        ..DnsOptions::default()
    };
    let mut dns = DnsServer::start_with(&record(bob), &options).unwrap();
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.dns_domains = vec!["b.test".into()];
    a_spec.nameserver = Some(dns.addr());
    a_spec.relay_sink = true;
    let mut a = Site::prepare(root.path(), a_spec, &boot.node);
    a.start_bridge();

    // Control: first use, delivered and pinned.
    assert!(mail_to_bob(&a, "PIN-FIRST").await.accepted());
    assert!(in_bobs_maildir(&b, "PIN-FIRST").await, "{}", b.bridge_log());
    let pinned = wait_for(Duration::from_secs(10), || {
        pins(&a).contains(&format!("bob@b.test\t{}", bob.public_key()))
    });
    assert!(pinned.await, "{}", pins(&a));

    // The attacker's answer, and A's cached answer (5 s at least) run out.
    let evil = ToxId::new(PublicKey([0x66; 32]), 7);
    dns.replace(&record(evil), &options).unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Postfix asks the socketmap at RCPT time (unless its own short-lived cache of bob's route
    // answers): the mail is refused for now, or taken and held in Postfix's queue when qmgr or
    // the LMTP intake asks the bridge again. Either way nothing is sealed to the attacker's key.
    let outcome = mail_to_bob(&a, "PIN-SPOOFED").await;
    assert!(
        outcome.accepted() || outcome.rcpt.iter().all(|r| r.is_transient()),
        "a temporary refusal, not a bounce: {outcome:?}"
    );
    let refused = wait_for(Duration::from_secs(20), || {
        let list = pins(&a);
        list.contains("CHANGED since") && list.contains(&evil.to_string())
    });
    assert!(refused.await, "{}\n{}", pins(&a), a.bridge_log());
    assert!(a.bridge_log().contains("the Tox key in DNS changed"));
    let queue = a.admin(&["queue", "list"]).unwrap();
    assert!(!queue.contains("bob@b.test"), "nothing queued: {queue}");
    let check = a.admin(&["check-config"]).unwrap();
    assert!(check.contains("differs from the pinned one"), "{check}");

    // The operator checked the new key out of band and accepts it: mail follows it again.
    let accepted = a
        .admin(&["resolve", "bob@b.test", "--accept-new-key"])
        .unwrap();
    assert!(
        accepted.contains(&evil.public_key().to_string()),
        "{accepted}"
    );
    let followed = wait_for(Duration::from_secs(15), || {
        // The bridge reads the operator's decision within seconds.
        a.admin(&["pins", "list"])
            .is_ok_and(|l| !l.contains("CHANGED") && l.contains(&evil.public_key().to_string()))
    });
    assert!(followed.await);
    let mut last = None;
    for _ in 0..30 {
        let outcome = mail_to_bob(&a, "PIN-ACCEPTED").await;
        if outcome.accepted() {
            break;
        }
        last = Some(outcome);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let queued = wait_for(Duration::from_secs(20), || {
        a.admin(&["queue", "list"])
            .is_ok_and(|q| q.contains("bob@b.test"))
    });
    assert!(queued.await, "{last:?}\n{}", a.bridge_log());
}
