//! Self-test of the Postfix harness (`toxmail_tests::postfix`, `toxmail_tests::smtp`): sites start
//! side by side on their own ports, deliver to Maildirs, relay plain mail into smtp-sink, refuse
//! what they should, and leave nothing behind.

use std::time::{Duration, Instant};

use toxmail_tests::postfix::{PostfixSite, SiteConfig};
use toxmail_tests::{smtp, wait_for};

const DELIVERY: Duration = Duration::from_secs(20);

/// Starts a site and logs how long that took.
fn start(cfg: SiteConfig) -> PostfixSite {
    let name = cfg.name.clone();
    let t = Instant::now();
    let site = PostfixSite::start(cfg).expect("postfix site starts");
    eprintln!("postfix site {name} started in {:?}", t.elapsed());
    site
}

fn with_sink(mut cfg: SiteConfig) -> SiteConfig {
    cfg.relay_sink = true;
    cfg
}

/// The part of a stored message after the blank line that ends its header.
fn body(stored: &[u8]) -> &[u8] {
    let at = stored
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("header/body separator");
    &stored[at + 2..]
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The master pid of a running site (for checking that drop stops it).
fn master_pid(site: &PostfixSite) -> u32 {
    let text = std::fs::read_to_string(site.dir().join("queue/pid/master.pid")).unwrap();
    text.trim().parse().unwrap()
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_deliver_locally_and_relay_plain_mail_to_the_sink() {
    toxmail_tests::init_logging();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start(SiteConfig::new("site-a", "a.test", &["alice", "bob"])));
        let b = s.spawn(|| start(with_sink(SiteConfig::new("site-b", "b.test", &["bob"]))));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.smtp_addr(), b.smtp_addr());
    assert!(a.smtp_addr().ip().is_loopback() && b.sink_addr().unwrap().ip().is_loopback());

    // Leading dots, a lone dot and blank lines survive dot-stuffing.
    let text = "Hi Alice,\n.leading dot\n..two dots\n.\n\nlast line\n";
    let message = smtp::message("bob@b.test", &["alice@a.test"], "local", text);
    let outcome = smtp::send(a.smtp_addr(), "bob@b.test", &["alice@a.test"], &message)
        .await
        .unwrap();
    assert!(outcome.accepted(), "{outcome:?}");
    assert_eq!(outcome.rcpt_codes(), [250]);
    assert!(
        wait_for(DELIVERY, || a.maildir_messages("alice").len() == 1).await,
        "{}",
        a.maillog()
    );
    let stored = &a.maildir_messages("alice")[0];
    assert_eq!(
        body(stored),
        text.as_bytes(),
        "body byte-identical (LF in the Maildir)"
    );
    assert!(contains(stored, "Subject: local") && contains(stored, "Message-ID: <"));
    assert!(a.maildir_messages("bob").is_empty());

    let message = smtp::message("bob@b.test", &["someone@elsewhere.test"], "plain", "out\n");
    let outcome = smtp::send(
        b.smtp_addr(),
        "bob@b.test",
        &["someone@elsewhere.test"],
        &message,
    )
    .await
    .unwrap();
    assert!(outcome.accepted(), "{outcome:?}");
    assert!(
        wait_for(DELIVERY, || b.sink_messages().len() == 1).await,
        "{}",
        b.maillog()
    );
    let sunk = &b.sink_messages()[0];
    assert!(
        contains(sunk, "X-Rcpt-Args: <someone@elsewhere.test>"),
        "{sunk:?}"
    );
    assert!(contains(sunk, "Subject: plain"));
    assert!(b.queue_ids().is_empty());

    assert!(a.maillog().contains("site-a/virtual"), "{}", a.maillog());
    assert!(
        b.maillog().contains("relay=127.0.0.1[127.0.0.1]"),
        "{}",
        b.maillog()
    );
    for site in [&a, &b] {
        let log = site.maillog();
        assert!(!log.contains("fatal:") && !log.contains("panic:"), "{log}");
    }

    let dirs = [a.dir().to_path_buf(), b.dir().to_path_buf()];
    let pids = [master_pid(&a), master_pid(&b)];
    let t = Instant::now();
    drop((a, b));
    eprintln!("two postfix sites stopped in {:?}", t.elapsed());
    for (dir, pid) in dirs.iter().zip(pids) {
        assert!(!dir.exists(), "{} removed", dir.display());
        assert!(!running(pid), "master {pid} stopped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_mailbox_and_foreign_domain_without_sink_are_refused_at_rcpt() {
    let a = start(SiteConfig::new("site-a", "a.test", &["alice"]));
    let rcpts = [
        "nobody@a.test",
        "someone@elsewhere.test",
        "alice+tag@a.test",
    ];
    let message = smtp::message("x@b.test", &rcpts, "mixed", "hello\n");
    let outcome = smtp::send(a.smtp_addr(), "x@b.test", &rcpts, &message)
        .await
        .unwrap();
    assert_eq!(outcome.rcpt_codes(), [550, 450, 250], "{outcome:?}");
    assert!(outcome.rcpt[0].text.starts_with("5.1.1"), "{outcome:?}");
    assert!(outcome.accepted(), "{outcome:?}");
    // alice+tag is alice's, thanks to recipient_delimiter.
    assert!(
        wait_for(DELIVERY, || a.maildir_messages("alice").len() == 1).await,
        "{}",
        a.maillog()
    );

    let outcome = smtp::send(a.smtp_addr(), "x@b.test", &["nobody@a.test"], &message)
        .await
        .unwrap();
    assert_eq!(outcome.data, None, "no DATA without an accepted RCPT");
    assert!(!outcome.accepted());
}

/// Mail whose next hop refuses connections stays deferred and listed in `queue_ids`; after
/// `postconf` points the route at a sink, `flush` delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_mail_is_queued_until_postconf_reroutes_it_and_flush_retries() {
    let sink = start(with_sink(SiteConfig::new("site-sink", "sink.test", &[])));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = SiteConfig::new("site-a", "a.test", &["alice"]);
    let route = |hop: std::net::SocketAddr| format!("smtp:[{}]:{}", hop.ip(), hop.port());
    cfg.extra_main_cf = vec![("default_transport".into(), route(dead))];
    let a = start(cfg);
    let message = smtp::message("alice@a.test", &["x@elsewhere.test"], "later", "x\n");
    let outcome = smtp::send(
        a.smtp_addr(),
        "alice@a.test",
        &["x@elsewhere.test"],
        &message,
    )
    .await
    .unwrap();
    assert!(outcome.accepted(), "{outcome:?}");
    assert!(wait_for(DELIVERY, || a.maillog().contains("status=deferred")).await);
    assert_eq!(a.queue_ids().len(), 1, "{}", a.maillog());

    a.postconf(&format!(
        "default_transport = {}",
        route(sink.sink_addr().unwrap())
    ));
    let retried = wait_for(DELIVERY, || {
        a.flush();
        !sink.sink_messages().is_empty()
    });
    assert!(retried.await, "{}", a.maillog());
    assert!(contains(
        &sink.sink_messages()[0],
        "X-Rcpt-Args: <x@elsewhere.test>"
    ));
    assert!(
        wait_for(DELIVERY, || a.queue_ids().is_empty()).await,
        "{}",
        a.maillog()
    );
}

/// The answer the bridge's socketmap gives, `toxlmtp:inet:[127.0.0.1]:PORT`, selects the LMTP
/// service the harness adds to master.cf (here with smtp-sink speaking LMTP as the server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxlmtp_transport_delivers_over_lmtp() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("smtp-sink")
        .args(["-L", "-u", "postfix", &format!("127.0.0.1:{port}"), "16"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tables = tempfile::tempdir().unwrap();
    let transport = tables.path().join("transport");
    std::fs::write(
        &transport,
        format!("tox.test toxlmtp:inet:[127.0.0.1]:{port}\n"),
    )
    .unwrap();
    let mut cfg = SiteConfig::new("site-l", "a.test", &["alice"]);
    cfg.transport_maps = Some(format!("texthash:{}", transport.display()));
    let a = start(cfg);

    let message = smtp::message("alice@a.test", &["bob@tox.test"], "lmtp", "hi\n");
    let outcome = smtp::send(a.smtp_addr(), "alice@a.test", &["bob@tox.test"], &message)
        .await
        .unwrap();
    assert!(outcome.accepted(), "{outcome:?}");
    let relay = format!("relay=127.0.0.1[127.0.0.1]:{port}");
    let sent = wait_for(DELIVERY, || {
        let log = a.maillog();
        log.lines()
            .any(|l| l.contains("/lmtp[") && l.contains(&relay) && l.contains("status=sent"))
    });
    assert!(sent.await, "{}", a.maillog());
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Two sites with the same name and domain, started at once next to the other tests' sites.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_site_twice_in_parallel_does_not_clash() {
    let (one, two) = std::thread::scope(|s| {
        let one = s.spawn(|| start(SiteConfig::new("site-a", "a.test", &["alice"])));
        let two = s.spawn(|| start(SiteConfig::new("site-a", "a.test", &["alice"])));
        (one.join().unwrap(), two.join().unwrap())
    });
    assert_ne!(one.smtp_addr(), two.smtp_addr());
    assert_ne!(one.dir(), two.dir());
    for (site, subject) in [(&one, "to one"), (&two, "to two")] {
        let message = smtp::message("x@b.test", &["alice@a.test"], subject, "hi\n");
        let outcome = smtp::send(site.smtp_addr(), "x@b.test", &["alice@a.test"], &message)
            .await
            .unwrap();
        assert!(outcome.accepted(), "{outcome:?}");
    }
    for (site, subject) in [(&one, "to one"), (&two, "to two")] {
        assert!(wait_for(DELIVERY, || site.maildir_messages("alice").len() == 1).await);
        assert!(contains(
            &site.maildir_messages("alice")[0],
            &format!("Subject: {subject}")
        ));
    }
}
