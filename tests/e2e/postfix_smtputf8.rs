//! SMTPUTF8 and 8BITMIME end to end (issue 13 items 1 and 2): Postfix A's own sendmail(1)
//! submits a mail with a raw UTF-8 Subject, an 8-bit body and a UTF-8 local part recipient at
//! site B; Postfix autodetects SMTPUTF8 for the sendmail class, hands it to bridge A over LMTP
//! with SMTPUTF8 and BODY=8BITMIME, bridge A seals both in an extended envelope, bridge B
//! injects with both declared, and the mail lands in the Maildir byte-exact.

use std::time::Duration;

use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::site::Site;
use toxmail_tests::wait_for;

use crate::postfix_flow::spec;

fn utf8_postfix() -> Vec<(String, String)> {
    vec![
        ("smtputf8_enable".into(), "yes".into()),
        // smtpd and lmtp log every command they exchange with loopback peers: the MAIL FROM
        // line with its parameters is what this test reads.
        ("debug_peer_list".into(), "127.0.0.1".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendmail_with_a_utf8_subject_to_a_utf8_local_part_arrives_byte_exact_and_declared() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut b_spec = spec("site-b", "b.test", &["jörg"]);
    b_spec.postfix_main_cf = utf8_postfix();
    let mut b = Site::prepare(root.path(), b_spec, &boot.node);
    b.start_bridge();
    let jorg_id = b.identities["jörg@b.test"].to_string();
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.postfix_main_cf = utf8_postfix();
    let mut a = Site::prepare(root.path(), a_spec, &boot.node);
    // Another spelling of the same mailbox: upper case, as Postfix passes it on.
    a.admin(&["contact", "add", "JÖRG@b.test", &jorg_id])
        .unwrap();
    a.start_bridge();

    let marker = format!("MARKER-{}", toxmail_protocol::MessageId::random());
    let message = format!(
        "From: alice@a.test\nTo: Jörg <jörg@b.test>\nSubject: Grüße aus Köln, {marker}\n\
         Date: Thu, 03 Dec 2026 12:00:00 +0000\nMessage-ID: <{marker}@a.test>\n\
         MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\nHallo Jörg,\n\nschöne Grüße, ½ € — ✓\n\nAlice\n"
    );
    // With a DSN request (RFC 3461), which travels sealed with the extended copy.
    a.postfix.sendmail_with(
        "alice@a.test",
        &["-N", "failure,delay", "-V", "QQ314159"],
        &["jörg@b.test"],
        message.as_bytes(),
    );

    let arrived = wait_for(Duration::from_secs(120), || {
        b.postfix.maildir_messages("jörg").len() == 1
    });
    assert!(
        arrived.await,
        "A:\n{}\n{}\nB:\n{}\n{}",
        a.postfix.maillog(),
        a.bridge_log(),
        b.postfix.maillog(),
        b.bridge_log()
    );
    let got = &b.postfix.maildir_messages("jörg")[0];
    assert!(
        got.ends_with(message.as_bytes()),
        "headers and body byte-exact after the trace headers:\n{}",
        String::from_utf8_lossy(got)
    );
    // Postfix A offered the mail to bridge A with both parameters, and bridge B declared both
    // to Postfix B.
    for (site, log) in [("A", a.postfix.maillog()), ("B", b.postfix.maillog())] {
        let declared = log
            .lines()
            .filter(|l| l.contains("MAIL FROM:<alice@a.test>"))
            .any(|l| l.contains(" SMTPUTF8") && l.contains(" BODY=8BITMIME"));
        assert!(declared, "site {site}:\n{log}");
    }
    // Bridge B passed the sealed DSN request on to Postfix B: ENVID on MAIL, NOTIFY on RCPT.
    let log = b.postfix.maillog();
    let mail = log
        .lines()
        .filter(|l| l.contains("MAIL FROM:<alice@a.test>"))
        .any(|l| l.contains(" ENVID=QQ314159"));
    let rcpt = log
        .lines()
        .filter(|l| l.contains("RCPT TO:<"))
        .any(|l| l.contains(" NOTIFY=FAILURE,DELAY"));
    assert!(mail && rcpt, "site B:\n{log}\n{}", b.bridge_log());
}

/// The receiving site's Postfix does not offer SMTPUTF8 (`smtputf8_enable = no`): bridge B
/// acknowledges the envelope but keeps the mail queued (a temporary failure, "does not support
/// SMTPUTF8"), neither mangled nor lost; once the operator turns SMTPUTF8 on, it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_mail_waits_at_a_receiving_site_without_smtputf8_until_it_is_turned_on() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    // The harness default: smtputf8_enable = no.
    let mut b = Site::prepare(root.path(), spec("site-b", "b.test", &["bob"]), &boot.node);
    b.start_bridge();
    let bob_id = b.identities["bob@b.test"].to_string();
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.postfix_main_cf = utf8_postfix();
    let mut a = Site::prepare(root.path(), a_spec, &boot.node);
    a.admin(&["contact", "add", "bob@b.test", &bob_id]).unwrap();
    a.start_bridge();

    let message = "From: alice@a.test\nTo: bob@b.test\nSubject: Grüße\n\
                   Date: Thu, 03 Dec 2026 12:00:00 +0000\nMessage-ID: <waits@a.test>\n\nschön\n";
    a.postfix
        .sendmail("alice@a.test", &["bob@b.test"], message.as_bytes());
    let deferred = wait_for(Duration::from_secs(120), || {
        b.bridge_log()
            .contains("next hop does not support SMTPUTF8")
    });
    assert!(deferred.await, "B:\n{}", b.bridge_log());
    assert!(b.postfix.maildir_messages("bob").is_empty());

    b.postfix.postconf("smtputf8_enable = yes");
    let arrived = wait_for(Duration::from_secs(120), || {
        b.postfix.maildir_messages("bob").len() == 1
    });
    assert!(arrived.await, "B:\n{}", b.bridge_log());
    let got = &b.postfix.maildir_messages("bob")[0];
    assert!(
        got.ends_with(message.as_bytes()),
        "{}",
        String::from_utf8_lossy(got)
    );
}
