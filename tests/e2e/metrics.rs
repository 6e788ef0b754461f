//! What an operator's Prometheus sees of a real two-site delivery: the counters move as the mail
//! did, the scrape passes `promtool check metrics`, `/healthz` and `/readyz` answer, and a
//! database outage shows in `/readyz` and `toxmail_database_up` and is logged once.

use std::time::Duration;

use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::metrics::{Scrape, promtool_check};
use toxmail_tests::site::Site;
use toxmail_tests::{smtp, wait_for};

use crate::postfix_flow::{alice_and_bob, spec};

fn scrape(site: &Site) -> Scrape {
    let (status, body) = site.http_get("/metrics").expect("scrape");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(&body)
}

/// Polls the site's scrape until `cond` holds on it.
async fn scrape_until(site: &Site, cond: impl Fn(&Scrape) -> bool) -> Scrape {
    let mut last = Scrape::default();
    let ok = wait_for(Duration::from_secs(30), || {
        last = scrape(site);
        cond(&last)
    })
    .await;
    assert!(ok, "condition never held on:\n{}", last.text);
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_moves_the_counters_on_both_sites_and_the_scrape_is_valid() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let (_boot, a, b) = alice_and_bob(root.path());
    let bob_id = b.identities["bob@b.test"];

    // Before any mail: every family is there at zero, and the process is alive.
    assert_eq!(a.http_get("/healthz").unwrap().0, 200);
    let before = scrape(&a);
    for family in toxmail_bridge::metrics::exported_names() {
        if family.starts_with("toxmail_relay_") {
            continue; // only a site that relays for friends has these
        }
        assert!(
            before.families().contains(&family),
            "{family} missing from:\n{}",
            before.text
        );
    }
    assert_eq!(
        before.value(r#"toxmail_deliveries_total{result="delivered"}"#),
        0.0
    );

    let rcpts = ["bob@b.test"];
    let message = smtp::message("alice@a.test", &rcpts, "counted", "Hello Bob.\r\n");
    let outcome = smtp::send(a.postfix.smtp_addr(), "alice@a.test", &rcpts, &message)
        .await
        .unwrap();
    assert!(outcome.accepted(), "{outcome:?}");
    let arrived = wait_for(Duration::from_secs(120), || {
        b.postfix.maildir_messages("bob").len() == 1
    });
    assert!(arrived.await, "{}\n{}", a.bridge_log(), b.bridge_log());

    // The sending site: one transaction, one recipient, one delivery with its latency.
    let sent = scrape_until(&a, |s| {
        s.value(r#"toxmail_deliveries_total{result="delivered"}"#) == 1.0
            && s.value(r#"toxmail_queue_messages{state="queued"}"#) == 0.0
    })
    .await;
    let lmtp_ok = r#"toxmail_lmtp_transactions_total{result="accepted"}"#;
    assert_eq!(sent.value(lmtp_ok), 1.0, "{}", sent.text);
    let rcpt_ok = r#"toxmail_lmtp_recipients_total{result="accepted"}"#;
    assert_eq!(sent.value(rcpt_ok), 1.0);
    assert!(sent.value(r#"toxmail_socketmap_lookups_total{result="tox"}"#) >= 1.0);
    assert!(sent.value("toxmail_socketmap_lookup_duration_seconds_count") >= 1.0);
    assert_eq!(sent.value("toxmail_delivery_duration_seconds_count"), 1.0);
    assert!(sent.value("toxmail_delivery_duration_seconds_sum") > 0.0);
    assert_eq!(
        sent.value(r#"toxmail_deliveries_total{result="failed"}"#),
        0.0
    );
    assert!(sent.value(r#"toxmail_tox_envelope_bytes_total{direction="sent"}"#) > 0.0);
    assert_eq!(sent.value("toxmail_database_up"), 1.0);
    assert_eq!(sent.value("toxmail_queue_oldest_age_seconds"), 0.0);
    let online = sent.value(r#"toxmail_tox_friends{state="online"}"#);
    assert!(online >= 1.0, "{}", sent.text);
    let info = sent
        .series
        .keys()
        .find(|k| k.starts_with("toxmail_build_info{"))
        .expect("build info");
    assert!(info.contains(r#"daemon="bridge""#), "{info}");
    assert!(info.contains(r#"libtoxcore="0.2."#), "{info}");

    // The receiving site: stored, injected, a friend request taken.
    let got = scrape_until(&b, |s| {
        s.value(r#"toxmail_inbound_messages_total{result="injected"}"#) == 1.0
    })
    .await;
    let stored = r#"toxmail_inbound_messages_total{result="stored"}"#;
    assert_eq!(got.value(stored), 1.0, "{}", got.text);
    assert_eq!(
        got.value(r#"toxmail_inbound_messages_total{result="refused"}"#),
        0.0
    );
    assert!(got.value(r#"toxmail_tox_envelope_bytes_total{direction="received"}"#) > 0.0);
    assert!(got.value(r#"toxmail_tox_friend_requests_total{outcome="accepted"}"#) >= 1.0);

    // `status` shows the identity online, with a friend, and an empty queue.
    let status = a.admin(&["status"]).unwrap();
    let alice_id = a.identities["alice@a.test"].to_string();
    let line = status
        .lines()
        .find(|l| l.contains("alice@a.test"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(line.contains(&alice_id), "{status}");
    assert!(line.contains("friends=1/1"), "{status}");
    assert!(!line.contains("connection=none"), "{status}");
    assert!(status.contains("daemon: running"), "{status}");
    assert!(status.contains("queue: 0 waiting"), "{status}");
    assert!(status.contains("recent errors: none"), "{status}");

    // No address, key or Tox ID in any label.
    for scrape in [&sent, &got] {
        assert!(!scrape.text.contains('@'), "{}", scrape.text);
        assert!(!scrape.text.contains(&bob_id.to_string()[..16]));
        promtool_check(&scrape.text).unwrap_or_else(|e| panic!("promtool: {e}\n{}", scrape.text));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_and_an_outage_is_logged_once_as_json() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.json_logs = true;
    let mut a = Site::prepare(root.path(), a_spec, &boot.node);
    let stopped = a.admin(&["status"]).unwrap();
    assert!(stopped.contains("daemon: not reachable"), "{stopped}");
    assert!(stopped.contains("alice@a.test"), "{stopped}");
    a.start_bridge();
    let ready = wait_for(Duration::from_secs(60), || {
        a.http_get("/readyz").is_ok_and(|(status, _)| status == 200)
    });
    assert!(
        ready.await,
        "{:?}\n{}",
        a.http_get("/readyz"),
        a.bridge_log()
    );

    a.pg.stop();
    let not_ready = wait_for(Duration::from_secs(30), || {
        a.http_get("/readyz")
            .is_ok_and(|(status, body)| status == 503 && body.contains("database unreachable"))
    });
    assert!(not_ready.await, "{:?}", a.http_get("/readyz"));
    assert_eq!(a.http_get("/healthz").unwrap().0, 200, "alive all the same");
    let down = scrape(&a);
    assert_eq!(down.value("toxmail_database_up"), 0.0);
    assert!(down.value("toxmail_database_errors_total") >= 1.0);
    // Several checks fail while it is down; the log says so once.
    let several = wait_for(Duration::from_secs(30), || {
        scrape(&a).value("toxmail_database_errors_total") >= 3.0
    });
    assert!(several.await);

    a.pg.restart();
    let back = wait_for(Duration::from_secs(30), || {
        a.http_get("/readyz").is_ok_and(|(status, _)| status == 200)
    });
    assert!(back.await, "{:?}", a.http_get("/readyz"));
    let log = a.bridge_log();
    assert_eq!(log.matches("database unreachable").count(), 1, "{log}");
    assert_eq!(log.matches("database reachable again").count(), 1, "{log}");
    // Logged as JSON lines, one object per event, for a log pipeline.
    let outage = log
        .lines()
        .find(|l| l.contains("database unreachable"))
        .unwrap();
    assert!(outage.starts_with('{') && outage.ends_with('}'), "{outage}");
    assert!(outage.contains(r#""level":"ERROR""#), "{outage}");

    // A path it does not serve.
    assert_eq!(a.http_get("/nothing").unwrap().0, 404);
}
