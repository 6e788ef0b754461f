//! Nothing lost, nothing duplicated: a peer offline at send time, the sending bridge killed
//! between its 250 and delivery, the receiving bridge killed between its commit and injection,
//! and the sending site's database down while mail keeps arriving.

use std::process::Command;
use std::time::{Duration, Instant};

use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::site::Site;
use toxmail_tests::{smtp, wait_for};

use crate::postfix_flow::spec;

/// Row states of a site's outbound table.
async fn outbound_states(site: &Site) -> Vec<String> {
    query_strings(site, "SELECT state FROM outbound ORDER BY id").await
}

pub(crate) async fn query_strings(site: &Site, sql: &str) -> Vec<String> {
    let Ok((client, conn)) = tokio_postgres::connect(&site.pg.url(), tokio_postgres::NoTls).await
    else {
        return Vec::new();
    };
    tokio::spawn(conn);
    match client.query(sql, &[]).await {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(_) => Vec::new(),
    }
}

pub(crate) async fn poll<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub(crate) fn postfix_ctl(site: &Site, action: &str) {
    let status = Command::new("postfix")
        .arg("-c")
        .arg(site.postfix.dir().join("etc"))
        .arg(action)
        .status()
        .unwrap();
    assert!(status.success(), "postfix {action}");
}

/// Seconds of the day of a log line's RFC 3339 timestamp ("2026-11-25T17:10:00.123456Z ...").
pub(crate) fn log_seconds(line: &str) -> Option<f64> {
    let time = line
        .split_whitespace()
        .next()?
        .split('T')
        .nth(1)?
        .trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, s): (f64, f64, f64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

/// alice@a.test writes to `to` through site's Postfix, which must accept it.
pub(crate) async fn send(site: &Site, to: &str, subject: &str) {
    let m = smtp::message("alice@a.test", &[to], subject, "body\r\n");
    let out = smtp::send(site.postfix.smtp_addr(), "alice@a.test", &[to], &m)
        .await
        .unwrap();
    assert!(out.accepted(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_peer_and_crashed_bridges_deliver_exactly_once() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let (_boot, mut a, mut b) = crate::postfix_flow::alice_with_bob_offline(root.path());

    // Peer offline at send time: Postfix A gets its 250 and forgets the mail; it is queued.
    send(&a, "bob@b.test", "while you were away").await;
    let queued = poll(Duration::from_secs(30), || async {
        outbound_states(&a).await == ["queued"] && a.postfix.queue_ids().is_empty()
    });
    assert!(queued.await, "queued by bridge A\n{}", a.bridge_log());

    // Bridge A dies between its 250 and the delivery, and comes back.
    a.kill_bridge();
    a.start_bridge();

    // Site B comes online, but its Postfix is down: B commits and acks, injection must wait.
    postfix_ctl(&b, "stop");
    b.start_bridge();
    let delivered = poll(Duration::from_secs(90), || async {
        outbound_states(&a).await == ["delivered"]
    });
    assert!(
        delivered.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );
    let log = a.bridge_log();
    let online = log
        .lines()
        .filter(|l| l.contains("friend connection") && !l.contains("None"))
        .filter_map(log_seconds)
        .next_back()
        .unwrap_or_else(|| panic!("friend connection not logged:\n{log}"));
    let stored = log
        .lines()
        .filter(|l| l.contains("delivered: the peer stored it"))
        .filter_map(log_seconds)
        .next_back()
        .expect("delivery logged");
    println!(
        "delivered {:.2} s after the friend connection",
        stored - online
    );
    assert!(
        stored - online < 5.0,
        "delivery started late after the connection"
    );

    // Bridge B dies after its commit, before injection; then Postfix B and bridge B return.
    assert!(b.postfix.maildir_messages("bob").is_empty());
    b.kill_bridge();
    postfix_ctl(&b, "start");
    b.start_bridge();
    let arrived = wait_for(Duration::from_secs(60), || {
        b.postfix.maildir_messages("bob").len() == 1
    });
    assert!(arrived.await, "B:\n{}", b.bridge_log());
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        b.postfix.maildir_messages("bob").len(),
        1,
        "exactly one copy"
    );
    let inbound = query_strings(&b, "SELECT state FROM inbound").await;
    assert_eq!(inbound, ["injected"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_defers_tox_mail_while_plain_mail_flows_through_the_milter() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut b = Site::prepare(root.path(), spec("site-b", "b.test", &["bob"]), &boot.node);
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.relay_sink = true;
    a_spec.milter = Some("warn".into());
    let mut a = Site::prepare(root.path(), a_spec, &boot.node);
    let bob = b.identities["bob@b.test"].to_string();
    a.admin(&["contact", "add", "bob@b.test", &bob]).unwrap();
    b.start_bridge();
    a.start_bridge();
    send(&a, "bob@b.test", "before").await;
    let first = wait_for(Duration::from_secs(90), || {
        b.postfix.maildir_messages("bob").len() == 1
    });
    assert!(
        first.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );

    a.pg.stop();
    send(&a, "bob@b.test", "during").await;
    send(&a, "dave@plain.test", "plain during").await;
    let plain = wait_for(Duration::from_secs(30), || {
        a.postfix.sink_messages().len() == 1
    });
    assert!(
        plain.await,
        "plain mail flows while the bridge's database is down"
    );
    let deferred = wait_for(Duration::from_secs(30), || {
        a.postfix.maillog().contains("451 4.3.0") && !a.postfix.queue_ids().is_empty()
    });
    assert!(
        deferred.await,
        "Postfix keeps the Tox mail:\n{}",
        a.postfix.maillog()
    );
    assert_eq!(b.postfix.maildir_messages("bob").len(), 1);

    a.pg.restart();
    a.postfix.flush();
    let second = wait_for(Duration::from_secs(90), || {
        b.postfix.maildir_messages("bob").len() == 2
    });
    assert!(
        second.await,
        "delivered after the database returned\n{}",
        a.bridge_log()
    );

    // Warn policy: one message to a Tox and a plain recipient reaches both, and the sender gets
    // exactly one notice naming each recipient's path.
    let both = ["bob@b.test", "dave@plain.test"];
    let m = smtp::message("alice@a.test", &both, "mixed", "for both\r\n");
    let out = smtp::send(a.postfix.smtp_addr(), "alice@a.test", &both, &m)
        .await
        .unwrap();
    assert!(out.accepted(), "{out:?}");
    let delivered = wait_for(Duration::from_secs(60), || {
        b.postfix.maildir_messages("bob").len() == 3 && a.postfix.sink_messages().len() == 2
    });
    assert!(delivered.await, "both copies delivered\n{}", a.bridge_log());
    let noticed = wait_for(Duration::from_secs(30), || {
        !a.postfix.maildir_messages("alice").is_empty()
    });
    assert!(noticed.await, "sender notified\n{}", a.bridge_log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let notices = a.postfix.maildir_messages("alice");
    assert_eq!(notices.len(), 1, "exactly one notice");
    let text = String::from_utf8_lossy(&notices[0]);
    assert!(text.contains("Auto-Submitted: auto-replied"), "{text}");
    let tox_part = text.split("ordinary mail").next().unwrap();
    assert!(tox_part.contains("bob@b.test"), "bob listed as Tox: {text}");
    assert!(text.contains("dave@plain.test"), "{text}");
}

/// Issue 12: many copies queued for a peer that is offline wait in the database, not in tasks
/// of their own; after a restart of the sending bridge (which loads no envelopes) the peer comes
/// online and each copy is delivered exactly once, through one waiter for the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_copies_for_an_offline_peer_are_delivered_once_when_it_comes_online() {
    toxmail_tests::init_logging();
    const N: usize = 60;
    let root = tempfile::tempdir().unwrap();
    let (_boot, mut a, mut b) = crate::postfix_flow::alice_with_bob_offline(root.path());
    for i in 0..N {
        send(&a, "bob@b.test", &format!("queued copy {i}")).await;
    }
    let queued = poll(Duration::from_secs(60), || async {
        let states = outbound_states(&a).await;
        states.len() == N && states.iter().all(|s| s == "queued")
    });
    assert!(queued.await, "queued by bridge A\n{}", a.bridge_log());

    a.stop_bridge();
    a.start_bridge();
    b.start_bridge();
    let delivered = poll(Duration::from_secs(120), || async {
        let states = outbound_states(&a).await;
        states.len() == N && states.iter().all(|s| s == "delivered")
    });
    assert!(
        delivered.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );
    let arrived = wait_for(Duration::from_secs(60), || {
        b.postfix.maildir_messages("bob").len() >= N
    });
    assert!(arrived.await, "B:\n{}", b.bridge_log());
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mail = b.postfix.maildir_messages("bob");
    assert_eq!(mail.len(), N, "exactly one copy each");
    let mut subjects: Vec<String> = mail
        .iter()
        .filter_map(|m| {
            let text = String::from_utf8_lossy(m);
            let line = text.lines().find(|l| l.starts_with("Subject: "))?;
            Some(line.to_owned())
        })
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), N, "every copy, none twice");
    let inbound = query_strings(&b, "SELECT state FROM inbound").await;
    assert_eq!(inbound.len(), N);
}
