//! Delivery status notifications: built reports parsed back with mail-parser (structure, headers,
//! delivery-status fields, injection, folding), and one sent through a real private Postfix.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mail_parser::{Message, MessageParser, MimeHeaders};
use toxmail_bridge::config::NextHop;
use toxmail_bridge::delivery::dsn::{self, Action, DsnError, RecipientStatus, Report};
use toxmail_bridge::delivery::trace::rfc5322_date;
use toxmail_tests::postfix::{PostfixSite, SiteConfig};

const HOST: &str = "mx.a.test";
const UNDELIVERED: &str = "Undelivered Mail Returned to Sender";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn failed(recipient: &str) -> RecipientStatus {
    RecipientStatus {
        final_recipient: recipient.into(),
        action: Action::Failed,
        status: (5, 4, 7),
        diagnostic: "peer offline since 2026-11-25 10:00 UTC; reason: expired after 5 days".into(),
        original_recipient: None,
        last_attempt: Some(at(1_795_600_000)),
        will_retry_until: None,
    }
}

fn delayed(recipient: &str) -> RecipientStatus {
    RecipientStatus {
        action: Action::Delayed,
        status: (4, 4, 1),
        diagnostic: "peer offline; no answer over Tox".into(),
        will_retry_until: Some(at(1_796_000_000)),
        ..failed(recipient)
    }
}

fn report(recipients: Vec<RecipientStatus>) -> Report {
    Report {
        reporting_mta: format!("dns; {HOST}"),
        original_sender: "alice@a.test".into(),
        original_message_id: Some("<orig-1@a.test>".into()),
        original_subject: None,
        envelope_id: None,
        original_queue_id: Some("4fRq2x0Z1lz9".into()),
        arrival: Some(at(1_795_500_000)),
        recipients,
        original_headers: None,
        original_message: None,
    }
}

fn build(report: &Report) -> Vec<u8> {
    let bytes = dsn::build(report, at(1_795_624_927), HOST).expect("report builds");
    assert_lines_are_sound(&bytes);
    bytes
}

/// CRLF only, 7-bit, no line over 998 bytes.
fn assert_lines_are_sound(bytes: &[u8]) {
    assert!(bytes.is_ascii(), "7-bit");
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(text.ends_with("\r\n"));
    let bare_ends = text.replace("\r\n", "").contains(['\r', '\n']);
    assert!(!bare_ends, "bare CR or LF");
    let long = text.split("\r\n").any(|l| l.len() > 998);
    assert!(!long, "line over 998 bytes");
}

fn parse(bytes: &[u8]) -> Message<'_> {
    MessageParser::default().parse(bytes).expect("parses")
}

fn header<'a>(message: &'a Message<'_>, name: &'static str) -> Option<&'a str> {
    message.header_raw(name).map(str::trim)
}

/// The sub-parts of the multipart/report root, as (type/subtype, part index).
fn parts(message: &Message<'_>) -> Vec<(String, u32)> {
    let root = message.root_part();
    let ct = root.content_type().expect("root content type");
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let ids = root.sub_parts().expect("multipart");
    let kind = |id: &u32| {
        let ct = message.parts[*id as usize].content_type().unwrap();
        let kind = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
        (kind, *id)
    };
    ids.iter().map(kind).collect()
}

fn kinds(message: &Message<'_>) -> Vec<String> {
    parts(message).into_iter().map(|(kind, _)| kind).collect()
}

/// The message/delivery-status body as field groups (per-message first), unfolded; CRLF or LF
/// (as in a Maildir).
fn status_groups(message: &Message<'_>) -> Vec<Vec<(String, String)>> {
    let (_, id) = parts(message)
        .into_iter()
        .find(|(kind, _)| kind == "message/delivery-status")
        .expect("delivery-status part");
    let body = std::str::from_utf8(message.parts[id as usize].contents()).unwrap();
    let lf = body.replace("\r\n", "\n");
    let unfolded = lf.replace("\n ", " ").replace("\n\t", " ");
    unfolded
        .split("\n\n")
        .filter(|group| !group.trim().is_empty())
        .map(|group| {
            let fields = group.split('\n').filter(|l| !l.is_empty());
            let field = |l: &str| {
                let (name, value) = l.split_once(':').expect("name: value");
                (name.to_string(), value.trim().to_string())
            };
            fields.map(field).collect()
        })
        .collect()
}

fn get<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let mut found = group.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
    let value = found.next().map(|(_, v)| v.as_str());
    assert!(found.next().is_none(), "{name} twice");
    value
}

#[test]
fn failed_report_has_three_parts_and_reply_headers() {
    let mut report = report(vec![failed("bob@b.test")]);
    report.original_headers = Some(b"Subject: hello\nFrom: alice@a.test\n\nsecret body\n".to_vec());
    let bytes = build(&report);
    let message = parse(&bytes);

    let three = [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ];
    assert_eq!(kinds(&message), three);
    let from = message.from().and_then(|a| a.first()).unwrap();
    assert_eq!(from.address(), Some("MAILER-DAEMON@mx.a.test"));
    assert_eq!(from.name(), Some("Mail Delivery System"));
    let to = message.to().and_then(|a| a.first()).unwrap();
    assert_eq!(to.address(), Some("alice@a.test"));
    assert_eq!(message.subject(), Some(UNDELIVERED));
    assert_eq!(header(&message, "Auto-Submitted"), Some("auto-replied"));
    assert_eq!(header(&message, "In-Reply-To"), Some("<orig-1@a.test>"));
    assert_eq!(header(&message, "References"), Some("<orig-1@a.test>"));
    assert_eq!(header(&message, "X-Toxmail-Queue-ID"), Some("4fRq2x0Z1lz9"));
    assert_eq!(header(&message, "MIME-Version"), Some("1.0"));
    let date = rfc5322_date(at(1_795_624_927));
    assert_eq!(header(&message, "Date"), Some(date.as_str()));
    assert!(message.message_id().unwrap().ends_with("@mx.a.test"));

    let text = message.body_text(0).unwrap();
    for said in [
        "<bob@b.test>: not delivered (status 5.4.7)",
        "Reason: peer offline since 2026-11-25 10:00 UTC",
        "end-to-end encrypted",
    ] {
        assert!(text.contains(said), "{said:?} in {text}");
    }

    let groups = status_groups(&message);
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(get(&groups[0], "Reporting-MTA"), Some("dns; mx.a.test"));
    assert_eq!(get(&groups[0], "X-Toxmail-Queue-ID"), Some("4fRq2x0Z1lz9"));
    let sender = get(&groups[0], "X-Toxmail-Sender");
    assert_eq!(sender, Some("rfc822; alice@a.test"));
    let arrival = rfc5322_date(at(1_795_500_000));
    assert_eq!(get(&groups[0], "Arrival-Date"), Some(arrival.as_str()));
    let bob = &groups[1];
    assert_eq!(get(bob, "Final-Recipient"), Some("rfc822; bob@b.test"));
    assert_eq!(get(bob, "Action"), Some("failed"));
    assert_eq!(get(bob, "Status"), Some("5.4.7"));
    let diagnostic = get(bob, "Diagnostic-Code").unwrap();
    assert!(
        diagnostic.starts_with("X-tox; peer offline since"),
        "{diagnostic}"
    );
    let last = rfc5322_date(at(1_795_600_000));
    assert_eq!(get(bob, "Last-Attempt-Date"), Some(last.as_str()));
    assert_eq!(get(bob, "Will-Retry-Until"), None);

    let headers = message.parts[parts(&message)[2].1 as usize].contents();
    let header_section = b"Subject: hello\r\nFrom: alice@a.test\r\n";
    assert_eq!(headers, header_section, "header section only, CRLF");
}

/// RFC 3461/3464: ORCPT and ENVID come back as Original-Recipient and Original-Envelope-Id, and
/// the human-readable part names the original's Subject and Message-ID.
#[test]
fn orcpt_envid_subject_and_message_id_round_trip_through_mail_parser() {
    let mut r = report(vec![RecipientStatus {
        original_recipient: Some("rfc822; Bob+Tag@B.test".into()),
        ..failed("bob@b.test")
    }]);
    r.envelope_id = Some("QQ 314159".into());
    r.original_subject = Some("Quarterly figures\r\nBcc: eve@e.test".into());
    r.original_headers = Some(b"Subject: Quarterly figures\r\n\r\n".to_vec());
    let bytes = build(&r);
    let message = parse(&bytes);
    assert_eq!(
        kinds(&message),
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    let groups = status_groups(&message);
    assert_eq!(get(&groups[0], "Original-Envelope-Id"), Some("QQ 314159"));
    let orcpt = get(&groups[1], "Original-Recipient");
    assert_eq!(orcpt, Some("rfc822; Bob+Tag@B.test"));
    assert_eq!(
        get(&groups[1], "Final-Recipient"),
        Some("rfc822; bob@b.test")
    );
    let text = message.body_text(0).unwrap();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for said in [
        "Subject: Quarterly figures Bcc: eve@e.test",
        "Message-ID: <orig-1@a.test>",
        "Envelope ID: QQ 314159",
        "its headers are attached",
    ] {
        assert!(text.contains(said), "{said:?} in {text}");
    }
    assert!(message.header("Bcc").is_none());
}

/// RET=FULL: the original comes back whole as message/rfc822 (and no separate headers part);
/// its bare LF line ends become CRLF, and an 8-bit original makes the report 8bit.
#[test]
fn ret_full_returns_the_message_as_message_rfc822() {
    let mut r = report(vec![failed("bob@b.test")]);
    r.original_headers = Some(b"Subject: hi\n\n".to_vec());
    r.original_message = Some(b"Subject: hi\nMessage-ID: <orig-1@a.test>\n\nthe body\n".to_vec());
    let bytes = build(&r);
    assert_lines_are_sound(&bytes);
    let message = parse(&bytes);
    assert_eq!(
        kinds(&message),
        ["text/plain", "message/delivery-status", "message/rfc822"]
    );
    let (_, id) = parts(&message).pop().unwrap();
    let inner = message.parts[id as usize]
        .message()
        .expect("an attached message");
    assert_eq!(inner.subject(), Some("hi"));
    assert_eq!(
        inner.body_text(0).as_deref().map(str::trim),
        Some("the body")
    );
    assert!(
        message
            .body_text(0)
            .unwrap()
            .contains("Your message is attached")
    );

    r.original_message = Some("Subject: h\u{e9}\r\n\r\nna\u{ef}ve\r\n".as_bytes().to_vec());
    let bytes = dsn::build(&r, at(1_795_624_927), HOST).unwrap();
    let message = parse(&bytes);
    assert_eq!(header(&message, "Content-Transfer-Encoding"), Some("8bit"));
}

#[test]
fn delayed_report_says_until_when_and_has_two_parts() {
    let mut report = report(vec![delayed("bob@b.test")]);
    report.original_message_id = Some("orig-2@a.test".into());
    let bytes = build(&report);
    let message = parse(&bytes);
    assert_eq!(kinds(&message), ["text/plain", "message/delivery-status"]);
    let subject = message.subject();
    assert_eq!(subject, Some("Delayed Mail (still being retried)"));
    assert_eq!(header(&message, "In-Reply-To"), Some("<orig-2@a.test>"));
    let until = rfc5322_date(at(1_796_000_000));
    let groups = status_groups(&message);
    assert_eq!(get(&groups[1], "Action"), Some("delayed"));
    assert_eq!(get(&groups[1], "Status"), Some("4.4.1"));
    assert_eq!(get(&groups[1], "Will-Retry-Until"), Some(until.as_str()));
    let text = message.body_text(0).unwrap();
    assert!(text.contains("do not need to send it again"), "{text}");
    assert!(
        text.replace("\r\n    ", " ")
            .contains(&format!("retried until {until}")),
        "{text}"
    );
}

#[test]
fn several_recipients_get_one_block_each_and_failure_sets_the_subject() {
    let mut unknown = failed("carol@c.test");
    unknown.status = (5, 1, 1);
    let mut done = failed("dave@d.test");
    (done.action, done.status, done.diagnostic) = (Action::Delivered, (2, 0, 0), String::new());
    let bytes = build(&report(vec![delayed("bob@b.test"), unknown, done]));
    let message = parse(&bytes);
    assert_eq!(message.subject(), Some(UNDELIVERED));
    let groups = status_groups(&message);
    let names = ["Final-Recipient", "Action", "Status"];
    let summary: Vec<_> = groups[1..]
        .iter()
        .map(|g| names.map(|f| get(g, f)))
        .collect();
    assert_eq!(
        summary,
        [
            [Some("rfc822; bob@b.test"), Some("delayed"), Some("4.4.1")],
            [Some("rfc822; carol@c.test"), Some("failed"), Some("5.1.1")],
            [
                Some("rfc822; dave@d.test"),
                Some("delivered"),
                Some("2.0.0")
            ],
        ]
    );
    let diagnostic = get(&groups[3], "Diagnostic-Code");
    assert_eq!(diagnostic, None, "empty diagnostic left out");
    assert_eq!(get(&groups[3], "Will-Retry-Until"), None);
}

#[test]
fn null_and_daemon_senders_get_no_report() {
    for sender in [
        "",
        "<>",
        " <> ",
        "MAILER-DAEMON@b.test",
        "<mailer-daemon@b.test>",
    ] {
        assert!(!dsn::should_notify(sender), "{sender:?}");
        let mut r = report(vec![failed("bob@b.test")]);
        r.original_sender = sender.into();
        let refused = dsn::build(&r, SystemTime::now(), HOST);
        assert!(
            matches!(refused, Err(DsnError::NotNotifiable(_))),
            "{refused:?}"
        );
    }
    assert!(dsn::should_notify("alice@a.test") && dsn::should_notify("<alice@a.test>"));
}

#[tokio::test]
async fn send_refuses_a_null_sender_before_connecting() {
    // Nothing listens here: a connection attempt would be an Io error, not NotNotifiable.
    let closed: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let hop = NextHop {
        lmtp: false,
        addr: closed,
    };
    let mut r = report(vec![failed("bob@b.test")]);
    r.original_sender = String::new();
    let refused = dsn::send(&hop, HOST, &r).await;
    assert!(
        matches!(refused, Err(DsnError::NotNotifiable(_))),
        "{refused:?}"
    );
    assert!(!refused.unwrap_err().is_temporary());
}

#[test]
fn crlf_in_values_cannot_add_headers_or_fields() {
    let mut bob = failed("bob@b.test");
    bob.diagnostic = "offline\r\nBcc: evil@x.test\r\n\r\nAction: delivered\nInjected".into();
    let mut r = report(vec![bob]);
    r.original_message_id = Some("<orig-1@a.test>\r\nBcc: evil@x.test".into());
    r.original_queue_id = Some("Q1\r\nX-Evil: 1".into());
    r.reporting_mta = "dns; mx.a.test\r\nX-Evil: 2".into();
    let bytes = build(&r);
    let text = std::str::from_utf8(&bytes).unwrap();
    let starts = |prefix: &str| text.split("\r\n").any(|l| l.starts_with(prefix));
    assert!(
        !starts("Bcc:") && !starts("X-Evil:") && !starts("Injected"),
        "{text}"
    );
    let message = parse(&bytes);
    assert!(message.bcc().is_none());
    assert_eq!(
        header(&message, "In-Reply-To"),
        None,
        "implausible id dropped"
    );
    assert_eq!(header(&message, "X-Toxmail-Queue-ID"), Some("Q1 X-Evil: 1"));
    let groups = status_groups(&message);
    assert_eq!(groups.len(), 2);
    assert_eq!(get(&groups[1], "Action"), Some("failed"));
    let diagnostic = get(&groups[1], "Diagnostic-Code").unwrap();
    assert_eq!(
        diagnostic,
        "X-tox; offline Bcc: evil@x.test Action: delivered Injected"
    );
}

#[test]
fn long_diagnostics_are_folded_and_bounded() {
    let words = "peer-offline-since-2026-11-25 ".repeat(40);
    let run = "x".repeat(2000);
    let (mut bob, mut carol) = (failed("bob@b.test"), failed("carol@c.test"));
    bob.diagnostic = format!("{words}{run}");
    carol.diagnostic = "no answer; ".repeat(1000);
    let bytes = build(&report(vec![bob, carol]));
    let text = std::str::from_utf8(&bytes).unwrap();
    let start = text.find("Diagnostic-Code:").unwrap();
    let lines: Vec<&str> = text[start..]
        .split("\r\n")
        .take_while(|l| !l.starts_with("Last-"))
        .collect();
    assert!(lines.len() > 15, "{lines:?}");
    let continued = lines[1..].iter().all(|l| l.starts_with(' '));
    assert!(continued, "continuation lines start with a space");
    let (words_part, run_part) = lines.split_at(lines.len() - 3);
    assert!(words_part.iter().all(|l| l.len() <= 78), "{lines:?}");
    assert!(run_part.iter().all(|l| l.len() <= 998), "{lines:?}");

    let message = parse(&bytes);
    let groups = status_groups(&message);
    let diagnostic = get(&groups[1], "Diagnostic-Code").unwrap();
    assert!(diagnostic.starts_with(&format!("X-tox; {}", words.trim_end())));
    let pieces: Vec<usize> = diagnostic.split(' ').rev().take(3).map(str::len).collect();
    assert_eq!(
        pieces,
        [200, 900, 900],
        "a 2000-byte run is cut into pieces, not dropped"
    );
    let bounded = get(&groups[2], "Diagnostic-Code").unwrap();
    assert!(
        bounded.len() <= "X-tox; ".len() + 4000 + 3,
        "{}",
        bounded.len()
    );
    assert!(bounded.ends_with("..."));
}

fn refusal(report: &Report) -> DsnError {
    dsn::build(report, SystemTime::now(), HOST).expect_err("refused")
}

#[test]
fn unsupported_addresses_and_statuses_are_refused() {
    let unquoted = [
        "bjørn@b.test",
        "bob@b.test>\r\nBcc: x@y",
        "\"bob smith\"@b.test",
        "bob",
    ];
    for recipient in unquoted {
        let refused = refusal(&report(vec![failed(recipient)]));
        assert!(matches!(refused, DsnError::Address { .. }), "{refused:?}");
    }
    for (action, status) in [(Action::Delayed, (5, 4, 7)), (Action::Failed, (2, 0, 0))] {
        let r = report(vec![RecipientStatus {
            status,
            action,
            ..failed("bob@b.test")
        }]);
        assert!(matches!(refusal(&r), DsnError::Status(..)));
    }
    let mut r = report(vec![failed("bob@b.test")]);
    r.original_sender = "älice@a.test".into();
    assert!(matches!(refusal(&r), DsnError::Address { .. }));
    assert!(matches!(refusal(&report(vec![])), DsnError::NoRecipients));
    let r = report(vec![failed("bob@b.test")]);
    let bad_host = dsn::build(&r, SystemTime::now(), "mx\r\nX: y").unwrap_err();
    assert!(matches!(bad_host, DsnError::Hostname(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_sent_through_postfix_lands_in_the_senders_maildir_from_null() {
    toxmail_tests::init_logging();
    let cfg = SiteConfig::new("dsn-a", "a.test", &["alice"]);
    let site = tokio::task::spawn_blocking(|| PostfixSite::start(cfg)).await;
    let site = site.unwrap().expect("postfix starts");
    let hop = NextHop {
        lmtp: false,
        addr: site.smtp_addr(),
    };
    let sent = dsn::send(&hop, HOST, &report(vec![failed("bob@b.test")])).await;
    sent.expect("postfix takes it");

    let delivered = || !site.maildir_messages("alice").is_empty();
    let arrived = toxmail_tests::wait_for(Duration::from_secs(20), delivered).await;
    assert!(arrived, "{}", site.maillog());
    let stored = site.maildir_messages("alice").remove(0);
    let shown = String::from_utf8_lossy(&stored).into_owned();
    assert!(stored.starts_with(b"Return-Path: <>\n"), "{shown}");
    let message = parse(&stored);
    let subject = message.subject();
    assert_eq!(
        subject,
        Some("Undelivered Mail Returned to Sender"),
        "{shown}"
    );
    assert_eq!(header(&message, "Auto-Submitted"), Some("auto-replied"));
    let bob = &status_groups(&message)[1];
    assert_eq!(get(bob, "Final-Recipient"), Some("rfc822; bob@b.test"));
    assert_eq!(get(bob, "Status"), Some("5.4.7"));
}

/// The notifier against a real Postfix and PostgreSQL: the report to a sender Postfix knows goes
/// out once; the one to a sender it refuses for good (550, no such mailbox) is given up at once,
/// counted, and its row removed, instead of being tried again every few seconds for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_the_mta_refuses_for_good_is_given_up_once_and_the_other_sent_once() {
    use toxmail_bridge::delivery::notify::Notifier;
    use toxmail_bridge::store::{GiveUp, NewOutbound, Store};
    use toxmail_protocol::{MessageId, PublicKey, ToxId};

    toxmail_tests::init_logging();
    let pg = toxmail_tests::postgres::PgServer::started().await;
    let store = Store::connect(&pg.url(), 4).unwrap();
    store.migrate().await.unwrap();
    let cfg = SiteConfig::new("dsn-n", "a.test", &["alice"]);
    let site = tokio::task::spawn_blocking(|| PostfixSite::start(cfg)).await;
    let site = site.unwrap().expect("postfix starts");

    let copy = |sender: &str| NewOutbound {
        message_id: MessageId::random(),
        idem_key: None,
        recipient: "bob@b.test".into(),
        envelope_sender: sender.into(),
        sender_identity: "alice@a.test".into(),
        peer: ToxId::new(PublicKey([7; 32]), 1),
        envelope: vec![1, 2, 3],
        expires: SystemTime::now() + Duration::from_secs(86_400),
        relays: Vec::new(),
    };
    let queued = store
        .enqueue(&[copy("alice@a.test"), copy("ghost@a.test")])
        .await
        .unwrap();
    for q in &queued {
        let reason = "expired: the peer did not come online in time";
        store
            .mark_failed(q.id, reason, GiveUp::Expired)
            .await
            .unwrap();
    }

    let hop = NextHop {
        lmtp: false,
        addr: site.smtp_addr(),
    };
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let day = Duration::from_secs(86_400);
    let notifier = Notifier::new(store.clone(), hop, HOST.into(), day, wake);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(notifier.run(stop.clone()));

    let settled = toxmail_tests::wait_for(Duration::from_secs(30), || {
        !site.maildir_messages("alice").is_empty()
    });
    assert!(settled.await, "{}", site.maillog());
    let mut gone = false;
    for _ in 0..100 {
        if store.failed_copies().await.unwrap().is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "both rows removed once their reports were settled");
    let undeliverable = &toxmail_bridge::metrics::DSN_UNDELIVERABLE;
    assert_eq!(undeliverable.with_label_values(&["failed"]).get(), 1);
    let sent = &toxmail_bridge::metrics::DSN_SENT;
    assert_eq!(sent.with_label_values(&["failed"]).get(), 1);
    stop.cancel();
    task.await.unwrap();
    // Postfix saw one refused RCPT for ghost, not one every few seconds.
    let log = site.maillog();
    let refused = log
        .lines()
        .filter(|l| l.contains("ghost@a.test") && l.contains("reject"))
        .count();
    assert_eq!(refused, 1, "{log}");
    assert_eq!(site.maildir_messages("alice").len(), 1);
}

/// RFC 3461 at the sending site, notifier against a real Postfix and PostgreSQL: NOTIFY=SUCCESS
/// gets one "delivered" report after the ack (with RET=FULL the message comes back whole, with
/// ORCPT and ENVID), and not a second one from a restarted notifier; NOTIFY=SUCCESS alone gets
/// no failure report; NOTIFY=FAILURE gets no "delayed" notice; absent NOTIFY still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifier_honours_notify_and_sends_one_delivered_report_across_restarts() {
    use std::collections::HashMap;
    use toxmail_bridge::delivery::notify::Notifier;
    use toxmail_bridge::delivery::returned::Returned;
    use toxmail_bridge::dsn_request::{
        CopyDsn, EnvId, MailDsn, Notify, Orcpt, RcptDsn, Ret, take_rcpt_params,
    };
    use toxmail_bridge::store::{GiveUp, Store, UnsealedCopy};
    use toxmail_protocol::{MessageId, PublicKey, SecretKey, ToxId};

    toxmail_tests::init_logging();
    let pg = toxmail_tests::postgres::PgServer::started().await;
    let store = Store::connect(&pg.url(), 4).unwrap();
    store.migrate().await.unwrap();
    let cfg = SiteConfig::new("dsn-s", "a.test", &["alice"]);
    let site = tokio::task::spawn_blocking(|| PostfixSite::start(cfg)).await;
    let site = site.unwrap().expect("postfix starts");

    let key = SecretKey::from([9; 32]);
    let original = b"Subject: the figures\r\nMessage-ID: <fig@a.test>\r\n\r\nsee attached\r\n";
    let sealed = Returned::choose(original, Some(Ret::Full))
        .seal(&key)
        .map(std::sync::Arc::new);
    let notify = |params: &str| {
        let line = format!("RCPT TO:<x@b.test> NOTIFY={params}");
        take_rcpt_params(line.as_bytes()).unwrap().1.notify
    };
    let copy = |recipient: &str, notify: Option<Notify>| UnsealedCopy {
        message_id: MessageId::random(),
        idem_key: None,
        recipient: recipient.into(),
        envelope_sender: "alice@a.test".into(),
        sender_identity: "alice@a.test".into(),
        peer: ToxId::new(PublicKey([7; 32]), 1),
        expires: SystemTime::now() + Duration::from_secs(86_400),
        relays: Vec::new(),
        dsn: CopyDsn {
            mail: MailDsn {
                ret: Some(Ret::Full),
                envid: EnvId::checked("batch 7".into()),
            },
            rcpt: RcptDsn {
                notify,
                orcpt: Orcpt::parse("rfc822;Bob@B.test").ok(),
            },
        },
        original: sealed.clone(),
    };
    let copies = [
        copy("bob@b.test", notify("SUCCESS")),
        copy("carol@b.test", notify("SUCCESS")),
        copy("dave@b.test", notify("FAILURE")),
        copy("erin@b.test", None),
    ];
    let queued = store
        .enqueue_sealing(&copies, |_, _| {
            Ok::<_, std::convert::Infallible>(vec![1, 2, 3])
        })
        .await
        .unwrap();
    let ids: Vec<i64> = queued.into_iter().map(|q| q.unwrap().id).collect();
    store.mark_delivered(ids[0]).await.unwrap();
    let reason = "refused by the peer (UnknownMailbox): no";
    store
        .mark_failed(ids[1], reason, GiveUp::Expired)
        .await
        .unwrap();

    let hop = NextHop {
        lmtp: false,
        addr: site.smtp_addr(),
    };
    let keys = HashMap::from([("alice@a.test".to_string(), key)]);
    // Every queued copy is due a "delayed" notice at once, unless its NOTIFY leaves DELAY out.
    let start = || {
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        Notifier::new(
            store.clone(),
            hop.clone(),
            HOST.into(),
            Duration::ZERO,
            wake,
        )
        .with_keys(keys.clone())
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(start().run(stop.clone()));
    let mut settled = false;
    for _ in 0..300 {
        let success = store.success_notices_due().await.unwrap();
        let failed = store.failed_copies().await.unwrap();
        let delay = store.delay_notice_due(Duration::ZERO).await.unwrap();
        if success.is_empty() && failed.is_empty() && delay.is_empty() {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "every report settled\n{}", site.maillog());
    stop.cancel();
    task.await.unwrap();
    // A restarted notifier (nothing in memory): one full pass, then it stops (its token is
    // already cancelled).
    let again = tokio_util::sync::CancellationToken::new();
    again.cancel();
    start().run(again).await;

    let idle = toxmail_tests::wait_for(Duration::from_secs(20), || {
        site.queue_ids().is_empty() && site.maildir_messages("alice").len() >= 2
    });
    assert!(idle.await, "{}", site.maillog());
    let reports = site.maildir_messages("alice");
    assert_eq!(reports.len(), 2, "one delivered (bob), one delayed (erin)");
    let delivered = reports.iter().map(|r| parse(r)).find(|m| {
        let groups = status_groups(m);
        get(&groups[1], "Action") == Some("delivered")
    });
    let delivered = delivered.expect("a delivered report");
    let groups = status_groups(&delivered);
    assert_eq!(get(&groups[0], "Original-Envelope-Id"), Some("batch 7"));
    assert_eq!(
        get(&groups[1], "Final-Recipient"),
        Some("rfc822; bob@b.test")
    );
    assert_eq!(
        get(&groups[1], "Original-Recipient"),
        Some("rfc822; Bob@B.test")
    );
    assert_eq!(get(&groups[1], "Status"), Some("2.0.0"));
    assert_eq!(header(&delivered, "In-Reply-To"), Some("<fig@a.test>"));
    let kinds = kinds(&delivered);
    assert_eq!(kinds.last().map(String::as_str), Some("message/rfc822"));
    let text = delivered.body_text(0).unwrap();
    assert!(text.contains("Subject: the figures"), "{text}");
    let delayed = reports.iter().map(|r| parse(r)).find(|m| {
        let groups = status_groups(m);
        get(&groups[1], "Action") == Some("delayed")
    });
    let delayed = delayed.expect("erin's delayed report");
    assert_eq!(
        get(&status_groups(&delayed)[1], "Final-Recipient"),
        Some("rfc822; erin@b.test")
    );
}
