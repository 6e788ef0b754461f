//! Delivery status notifications from a real bridge through a real Postfix: a peer that never
//! comes online gets one "delayed" and then one "failed" DSN, the queue row is gone afterwards,
//! and a message from the null sender produces none.

use std::time::Duration;

use toxmail_protocol::{PublicKey, ToxId};
use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::site::Site;
use toxmail_tests::{smtp, wait_for};

use crate::postfix_flow::{outbound_recipients, spec};

fn has(m: &[u8], needle: &str) -> bool {
    m.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peer_gets_one_delayed_then_one_failed_dsn() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.extra_queue = "lifetime_secs = 25\ndelay_notice_secs = 5".into();
    let mut a = Site::prepare(root.path(), a_spec, &boot.node);
    let nobody = ToxId::new(PublicKey([0x42; 32]), 7);
    a.admin(&["contact", "add", "ghost@nowhere.test", &nobody.to_string()])
        .unwrap();
    a.start_bridge();

    let to = ["ghost@nowhere.test"];
    let m = smtp::message("alice@a.test", &to, "into the void", "hello?\r\n");
    let out = smtp::send(a.postfix.smtp_addr(), "alice@a.test", &to, &m)
        .await
        .unwrap();
    assert!(out.accepted(), "{out:?}");
    let m = smtp::message("", &to, "a bounce", "from the null sender\r\n");
    let out = smtp::send(a.postfix.smtp_addr(), "", &to, &m)
        .await
        .unwrap();
    assert!(out.accepted(), "{out:?}");

    let alice = || a.postfix.maildir_messages("alice");
    let delayed = wait_for(Duration::from_secs(30), || {
        alice().iter().any(|m| has(m, "Action: delayed"))
    });
    assert!(delayed.await, "delayed DSN\n{}", a.bridge_log());
    let failed = wait_for(Duration::from_secs(60), || {
        alice().iter().any(|m| has(m, "Action: failed"))
    });
    assert!(failed.await, "failed DSN\n{}", a.bridge_log());
    let gone = async {
        for _ in 0..100 {
            if outbound_recipients(&a).await.is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(gone.await, "queue rows removed after the final DSN");
    tokio::time::sleep(Duration::from_secs(6)).await; // room for a duplicate notice to show up

    let dsns = alice();
    assert_eq!(
        dsns.len(),
        2,
        "one delayed and one failed DSN, none for the null sender"
    );
    for dsn in &dsns {
        assert!(has(dsn, "Return-Path: <>"));
        assert!(has(dsn, "multipart/report; report-type=delivery-status"));
        assert!(has(dsn, "Final-Recipient: rfc822; ghost@nowhere.test"));
        assert!(has(dsn, "Auto-Submitted: auto-replied"));
    }
    let delayed = dsns.iter().find(|m| has(m, "Action: delayed")).unwrap();
    assert!(has(delayed, "Status: 4.4.1") && has(delayed, "Will-Retry-Until:"));
    let failed = dsns.iter().find(|m| has(m, "Action: failed")).unwrap();
    assert!(has(failed, "Status: 5.4.7"), "expired");
}
