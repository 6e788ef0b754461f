//! Delivery status notifications from a real bridge through a real Postfix: a peer that never
//! comes online gets one "delayed" and then one "failed" DSN, the queue row is gone afterwards,
//! and a message from the null sender produces none.

use std::time::Duration;

use mail_parser::MimeHeaders;

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

/// The per-message and per-recipient groups of a report's message/delivery-status part, parsed
/// with mail-parser, unfolded: (name, value) pairs.
fn status_groups(report: &[u8]) -> Vec<Vec<(String, String)>> {
    let message = mail_parser::MessageParser::default()
        .parse(report)
        .expect("the report parses");
    let part = message
        .parts
        .iter()
        .find(|p| {
            let ct = p.content_type();
            ct.is_some_and(|c| c.ctype() == "message" && c.subtype() == Some("delivery-status"))
        })
        .expect("a message/delivery-status part");
    let body = String::from_utf8_lossy(part.contents()).replace("\r\n", "\n");
    let unfolded = body.replace("\n ", " ").replace("\n\t", " ");
    unfolded
        .split("\n\n")
        .filter(|g| !g.trim().is_empty())
        .map(|g| {
            g.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.to_string(), v.trim().to_string()))
                .collect()
        })
        .collect()
}

fn field<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn part_types(report: &[u8]) -> Vec<String> {
    let message = mail_parser::MessageParser::default().parse(report).unwrap();
    let types = message.parts.iter().skip(1).filter_map(|p| {
        let ct = p.content_type()?;
        Some(format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")))
    });
    types.collect()
}

/// Issue 13 item 3: NOTIFY=SUCCESS through a real Postfix gets exactly one report, the bridge's
/// "delivered" after the far site's ack; Postfix sends no "relayed" notice of its own, because
/// the bridge announces DSN and takes the request over. ORCPT and ENVID come back in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_success_gets_exactly_one_delivered_report_after_the_far_ack() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let (_boot, a, b) = crate::postfix_flow::alice_and_bob(root.path());

    let to = ["bob@b.test"];
    let m = smtp::message("alice@a.test", &to, "tell me when it lands", "hi Bob\r\n");
    let rcpt = [("bob@b.test", "NOTIFY=SUCCESS ORCPT=rfc822;Bob+2BTag@B.test")];
    let mail = ("alice@a.test", "RET=HDRS ENVID=e2e+2Denv+2D1");
    let out = smtp::send_with_params(a.postfix.smtp_addr(), mail, &rcpt, &m)
        .await
        .unwrap();
    assert!(out.accepted(), "{out:?}");

    let bob = || b.postfix.maildir_messages("bob");
    let arrived = wait_for(Duration::from_secs(120), || bob().len() == 1);
    assert!(
        arrived.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );
    let alice = || a.postfix.maildir_messages("alice");
    let reported = wait_for(Duration::from_secs(30), || !alice().is_empty());
    assert!(reported.await, "a report\n{}", a.bridge_log());
    // Everything Postfix A had to do is done: a notice of its own would be in its queue or
    // in alice's Maildir by now.
    let idle = wait_for(Duration::from_secs(30), || a.postfix.queue_ids().is_empty());
    assert!(idle.await, "{}", a.postfix.maillog());
    let maillog = a.postfix.maillog();
    assert!(
        !maillog.contains("sender delivery status notification"),
        "Postfix sent a success notice of its own:\n{maillog}"
    );

    let reports = alice();
    assert_eq!(reports.len(), 1, "exactly one report");
    let report = &reports[0];
    assert!(has(report, "Return-Path: <>"));
    let groups = status_groups(report);
    assert_eq!(field(&groups[0], "Original-Envelope-Id"), Some("e2e-env-1"));
    let rcpt = &groups[1];
    assert_eq!(field(rcpt, "Action"), Some("delivered"));
    assert_eq!(field(rcpt, "Status"), Some("2.0.0"));
    assert_eq!(
        field(rcpt, "Original-Recipient"),
        Some("rfc822; Bob+Tag@B.test")
    );
    assert_eq!(field(rcpt, "Final-Recipient"), Some("rfc822; bob@b.test"));
    let types = part_types(report);
    assert!(
        types.contains(&"text/rfc822-headers".to_string()),
        "{types:?}"
    );
    assert!(has(report, "tell me when it lands"), "the Subject is named");
    assert!(!has(report, "hi Bob"), "RET=HDRS: no body");
}

/// NOTIFY=NEVER gets nothing when delivery fails; NOTIFY=FAILURE gets only the failure report
/// (no "delayed" one), with Original-Recipient, Original-Envelope-Id and the original's
/// headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_never_gets_no_report_and_a_failure_report_carries_orcpt_and_envid() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.extra_queue = "lifetime_secs = 10\ndelay_notice_secs = 2".into();
    let mut a = Site::prepare(root.path(), a_spec, &boot.node);
    let nobody = ToxId::new(PublicKey([0x42; 32]), 7);
    for ghost in ["ghost1@nowhere.test", "ghost2@nowhere.test"] {
        a.admin(&["contact", "add", ghost, &nobody.to_string()])
            .unwrap();
    }
    a.start_bridge();

    let never = smtp::message("alice@a.test", &["ghost1@nowhere.test"], "silent", "x\r\n");
    let rcpt = [("ghost1@nowhere.test", "NOTIFY=NEVER")];
    let out = smtp::send_with_params(a.postfix.smtp_addr(), ("alice@a.test", ""), &rcpt, &never);
    assert!(out.await.unwrap().accepted());
    let to = ["ghost2@nowhere.test"];
    let failing = smtp::message("alice@a.test", &to, "which one failed?", "the body\r\n");
    let rcpt = [(to[0], "NOTIFY=FAILURE ORCPT=rfc822;Ghost2@Nowhere.test")];
    let mail = ("alice@a.test", "ENVID=batch+2042");
    let out = smtp::send_with_params(a.postfix.smtp_addr(), mail, &rcpt, &failing);
    assert!(out.await.unwrap().accepted());

    let alice = || a.postfix.maildir_messages("alice");
    let failed = wait_for(Duration::from_secs(60), || {
        alice().iter().any(|m| has(m, "Action: failed"))
    });
    assert!(failed.await, "failed DSN\n{}", a.bridge_log());
    let gone = wait_for(Duration::from_secs(30), || a.postfix.queue_ids().is_empty());
    assert!(gone.await);
    let mut settled = false;
    for _ in 0..100 {
        if outbound_recipients(&a).await.is_empty() {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        settled,
        "both copies failed and removed\n{}",
        a.bridge_log()
    );
    let idle = wait_for(Duration::from_secs(30), || a.postfix.queue_ids().is_empty());
    assert!(idle.await);

    let reports = alice();
    assert_eq!(
        reports.len(),
        1,
        "only the NOTIFY=FAILURE copy's failure report"
    );
    let report = &reports[0];
    let groups = status_groups(report);
    assert_eq!(field(&groups[0], "Original-Envelope-Id"), Some("batch 42"));
    let rcpt = &groups[1];
    assert_eq!(field(rcpt, "Action"), Some("failed"));
    let orcpt = field(rcpt, "Original-Recipient");
    assert_eq!(orcpt, Some("rfc822; Ghost2@Nowhere.test"));
    assert_eq!(
        field(rcpt, "Final-Recipient"),
        Some("rfc822; ghost2@nowhere.test")
    );
    let types = part_types(report);
    assert!(
        types.contains(&"text/rfc822-headers".to_string()),
        "{types:?}"
    );
    assert!(has(report, "which one failed?"), "the Subject is named");
    assert!(!has(report, "the body"), "headers only by default");
}
