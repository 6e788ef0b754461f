//! Two mail sites on one machine: SMTP client → Postfix A → socketmap → LMTP → bridge A → Tox →
//! bridge B → Postfix B → Maildir, in all three addressing modes, next to plain mail that never
//! touches the bridge; plus the refusals Postfix gets for invalid Tox addresses.

use std::time::Duration;

use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::dns::DnsServer;
use toxmail_tests::site::{Site, SiteSpec};
use toxmail_tests::{smtp, wait_for};

fn body_with(marker: &str) -> String {
    format!("Hello Bob,\r\n\r\nthe code word is {marker}.\r\n.leading dot line\r\n\r\nAlice\r\n")
}

pub fn spec(name: &str, domain: &str, mailboxes: &[&str]) -> SiteSpec {
    SiteSpec {
        name: name.into(),
        domain: domain.into(),
        mailboxes: mailboxes.iter().map(|s| s.to_string()).collect(),
        identities: mailboxes.iter().map(|m| format!("{m}@{domain}")).collect(),
        ..SiteSpec::default()
    }
}

/// Site B (bob, running) and site A (alice, with bob as a contact, running) on a private DHT:
/// the bootstrap node must outlive both.
/// Site A (alice, bob@b.test as a contact) running, site B (bob) prepared but not started: bob's
/// mail waits at A until a test starts B.
pub fn alice_with_bob_offline(root: &std::path::Path) -> (BootstrapDaemon, Site, Site) {
    let boot = BootstrapDaemon::start(root).unwrap();
    let b = Site::prepare(root, spec("site-b", "b.test", &["bob"]), &boot.node);
    let bob_id = b.identities["bob@b.test"].to_string();
    let mut a = Site::prepare(root, spec("site-a", "a.test", &["alice"]), &boot.node);
    a.admin(&["contact", "add", "bob@b.test", &bob_id]).unwrap();
    a.start_bridge();
    (boot, a, b)
}

pub fn alice_and_bob(root: &std::path::Path) -> (BootstrapDaemon, Site, Site) {
    let boot = BootstrapDaemon::start(root).unwrap();
    let mut b = Site::prepare(root, spec("site-b", "b.test", &["bob"]), &boot.node);
    b.start_bridge();
    let bob_id = b.identities["bob@b.test"].to_string();
    let mut a = Site::prepare(root, spec("site-a", "a.test", &["alice"]), &boot.node);
    a.admin(&["contact", "add", "bob@b.test", &bob_id]).unwrap();
    a.start_bridge();
    (boot, a, b)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_reaches_the_other_site_in_all_three_addressing_modes() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut b = Site::prepare(
        root.path(),
        spec("site-b", "b.test", &["bob", "carol"]),
        &boot.node,
    );
    b.start_bridge();
    let bob_id = b.identities["bob@b.test"];
    let carol_id = b.identities["carol@b.test"];
    let dns = DnsServer::start(&[
        ("bob._tox.b.test", vec![format!("v=tox1;id={bob_id}")]),
        ("garbage._tox.b.test", vec!["v=tox1;id=not-a-tox-id".into()]),
    ])
    .unwrap();
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.dns_domains = vec!["b.test".into()];
    a_spec.nameserver = Some(dns.addr());
    a_spec.relay_sink = true;
    // Site A takes Postfix's mail on a UNIX socket in the queue directory, as deploy/ advises.
    a_spec.lmtp_unix = true;
    let mut a = Site::prepare(root.path(), a_spec, &boot.node);
    a.admin(&["contact", "add", "carol@b.test", &carol_id.to_string()])
        .unwrap();
    // Routed to bob's identity, but site B has no such mailbox.
    a.admin(&["contact", "add", "ghost@b.test", &bob_id.to_string()])
        .unwrap();
    a.start_bridge();

    let marker = format!("MARKER-{}", toxmail_protocol::MessageId::random());
    let body = body_with(&marker);
    let tox_address = format!("{bob_id}@tox");
    let rcpts = [
        "bob@b.test",
        "carol@b.test",
        tox_address.as_str(),
        "dave@plain.test",
    ];
    let message = smtp::message("alice@a.test", &rcpts, "over tox", &body);
    let outcome = smtp::send(a.postfix.smtp_addr(), "alice@a.test", &rcpts, &message)
        .await
        .unwrap();
    assert!(outcome.accepted(), "{outcome:?}");

    let arrived = wait_for(Duration::from_secs(120), || {
        b.postfix.maildir_messages("bob").len() == 2
            && b.postfix.maildir_messages("carol").len() == 1
            && a.postfix.sink_messages().len() == 1
    });
    assert!(
        arrived.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );
    // Postfix's lmtp(8) names the socket it delivered to, relative to its queue directory.
    let maillog = a.postfix.maillog();
    assert!(
        maillog.contains("relay=mx.a.test[toxmail/lmtp]"),
        "{maillog}"
    );

    let alice_key = a.identities["alice@a.test"].public_key().to_string();
    for got in b
        .postfix
        .maildir_messages("bob")
        .iter()
        .chain(&b.postfix.maildir_messages("carol"))
    {
        // Postfix stores Maildir files with LF line ends.
        let lf_body = body.replace("\r\n", "\n");
        assert!(got.ends_with(lf_body.as_bytes()), "body byte-identical");
        assert!(contains(got, "Subject: over tox"), "headers intact");
        assert!(
            contains(got, "Received: from tox (toxmail peer"),
            "trace line"
        );
        assert!(
            contains(got, &format!("X-Toxmail-Sender-Key: {alice_key}")),
            "verified sender"
        );
    }
    let plain = &a.postfix.sink_messages()[0];
    assert!(contains(plain, &marker), "plain copy went the normal route");
    assert!(
        !contains(plain, "Toxmail"),
        "the plain copy never touched the bridge"
    );
    let mut routed = outbound_recipients(&a).await;
    routed.sort();
    let mut expected = vec![
        "bob@b.test".to_string(),
        "carol@b.test".into(),
        tox_address.clone(),
    ];
    expected.sort();
    assert_eq!(routed, expected, "only the Tox recipients reached bridge A");

    assert!(
        !contains(&a.pg.dump(), &marker),
        "marker in site A's database"
    );
    assert!(
        !contains(&b.pg.dump(), &marker),
        "marker in site B's database"
    );

    // A mailbox the receiving site does not have: B nacks permanently, A records the failure
    // and sends alice a "failed" DSN within seconds, then forgets the copy.
    let ghost = smtp::message("alice@a.test", &["ghost@b.test"], "boo", "x\r\n");
    let to = ["ghost@b.test"];
    let out = smtp::send(a.postfix.smtp_addr(), "alice@a.test", &to, &ghost)
        .await
        .unwrap();
    assert!(out.accepted(), "{out:?}");
    let bounced = wait_for(Duration::from_secs(30), || {
        a.postfix.maildir_messages("alice").iter().any(|m| {
            contains(m, "Action: failed")
                && contains(m, "Status: 5.1.1")
                && contains(m, "Final-Recipient: rfc822; ghost@b.test")
        })
    });
    assert!(bounced.await, "failed DSN for ghost\n{}", a.bridge_log());
    let dsn = a.postfix.maildir_messages("alice").remove(0);
    assert!(
        contains(&dsn, "Return-Path: <>"),
        "DSN from the null sender"
    );
    assert!(contains(&dsn, "report-type=delivery-status"));
    assert!(contains(&dsn, "Auto-Submitted: auto-replied"));
    let forgotten = async {
        for _ in 0..100 {
            if failed_rows(&a).await.is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(
        forgotten.await,
        "the failed row is removed once its DSN went out"
    );
    assert_eq!(
        b.postfix.maildir_messages("bob").len(),
        2,
        "nothing delivered for ghost"
    );

    // Invalid Tox addresses are refused at RCPT with the socketmap's error: answer.
    for bad in ["zzz@tox", "garbage@b.test"] {
        let m = smtp::message("alice@a.test", &[bad], "bad", "x\r\n");
        let out = smtp::send(a.postfix.smtp_addr(), "alice@a.test", &[bad], &m)
            .await
            .unwrap();
        assert!(out.rcpt_codes().iter().all(|c| *c == 550), "{bad}: {out:?}");
        assert!(format!("{out:?}").contains("5.1.3"), "{bad}: {out:?}");
    }

    // B said hello at protocol level 2 or more: A now seals compressible mail compressed,
    // smaller than the text, and it arrives byte-identical. B is stopped first so
    // the copy waits in A's queue with its envelope (a delivered row keeps none).
    b.stop_bridge();
    let long_body = body_with("compressed").repeat(300);
    let long = smtp::message("alice@a.test", &["bob@b.test"], "long", &long_body);
    let out = smtp::send(
        a.postfix.smtp_addr(),
        "alice@a.test",
        &["bob@b.test"],
        &long,
    )
    .await
    .unwrap();
    assert!(out.accepted(), "{out:?}");
    let queued = async {
        for _ in 0..300 {
            if let Some(found) = queued_envelope(&a, "bob@b.test").await {
                return Some(found);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    };
    let (version, size) = queued.await.expect("the long mail is queued at A");
    // Compressed: version 2, or 4 when the copy also carries extensions (Postfix hands the
    // bridge each recipient's ORCPT, and B said hello at level 3, so its DSN request is sealed).
    assert!(
        [
            toxmail_protocol::ENVELOPE_VERSION_COMPRESSED,
            toxmail_protocol::ENVELOPE_VERSION_EXTENDED_COMPRESSED
        ]
        .contains(&version),
        "version {version}"
    );
    assert!(
        size < long_body.len() / 4,
        "{size} bytes for {}",
        long_body.len()
    );
    b.start_bridge();
    let arrived = wait_for(Duration::from_secs(90), || {
        b.postfix.maildir_messages("bob").len() == 3
    });
    assert!(
        arrived.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );
    let got = b.postfix.maildir_messages("bob");
    let lf_body = long_body.replace("\r\n", "\n");
    assert!(
        got.iter().any(|m| m.ends_with(lf_body.as_bytes())),
        "body byte-identical"
    );
}

/// Envelope version byte and length of a queued outbound copy for `recipient`, if there is one.
async fn queued_envelope(site: &Site, recipient: &str) -> Option<(u8, usize)> {
    let (client, conn) = tokio_postgres::connect(&site.pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let sql = "SELECT envelope FROM outbound WHERE recipient = $1 AND state = 'queued'";
    let row = client.query_opt(sql, &[&recipient]).await.unwrap()?;
    let envelope: Vec<u8> = row.get(0);
    let header = toxmail_protocol::peek_header(&envelope).unwrap();
    Some((header.version, envelope.len()))
}

/// (recipient) of every row in a site's outbound table, whatever its state.
pub async fn outbound_recipients(site: &Site) -> Vec<String> {
    let (client, conn) = tokio_postgres::connect(&site.pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query("SELECT recipient FROM outbound", &[])
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// (recipient, last_error) of failed outbound rows.
async fn failed_rows(site: &Site) -> Vec<(String, String)> {
    let (client, conn) = tokio_postgres::connect(&site.pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let sql = "SELECT recipient, coalesce(last_error, '') FROM outbound WHERE state = 'failed'";
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}
