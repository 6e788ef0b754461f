//! Mail sites and relays: site B registers with relays and goes offline; site A queues a mail
//! for bob@b.test (whose DNS record names the relays), deposits it after the configured delay and
//! shuts down; B comes back and gets it from a relay, which deletes it after B's ack; A's later
//! direct delivery is acked as a duplicate. And a friend's site that relays for B.

use std::time::Duration;

use toxmail_protocol::{MessageId, ToxId};
use toxmail_tests::bootstrapd::{BootstrapDaemon, free_udp_port};
use toxmail_tests::dns::DnsServer;
use toxmail_tests::metrics::{Scrape, http_get, promtool_check};
use toxmail_tests::relay::RelayProcess;
use toxmail_tests::site::SiteSpec;
use toxmail_tests::{smtp, wait_for};

use crate::postfix_flow::spec;
use crate::postfix_recovery::{log_seconds, poll, query_strings};

pub(crate) fn own_ports() -> Option<(u16, u16)> {
    let p = free_udp_port();
    Some((p, p.saturating_add(9)))
}

/// Site A as the relay scenarios need it: it finds bob and his `relays` in a DNS record the
/// returned server serves, and deposits at them after 2 s (keep the server alive).
pub(crate) fn depositing_site_a(bob: ToxId, relays: &[ToxId]) -> (DnsServer, SiteSpec) {
    let relays: String = relays.iter().map(|r| format!(";relay={r}")).collect();
    let record = format!("v=tox1;id={bob}{relays}");
    let dns = DnsServer::start(&[("bob._tox.b.test", vec![record])]).unwrap();
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.dns_domains = vec!["b.test".into()];
    a_spec.nameserver = Some(dns.addr());
    a_spec.extra_sections = "\n[relays]\ndeposit_after_secs = 2\n".into();
    a_spec.tox_ports = own_ports();
    (dns, a_spec)
}

pub(crate) fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_site_gets_its_mail_from_two_relays_and_later_directly_exactly_once() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let r1 = RelayProcess::start(&root.path().join("relay1"), &boot.node, "");
    let r2 = RelayProcess::start(&root.path().join("relay2"), &boot.node, "");
    let (r1_id, r2_id) = (r1.address(), r2.address());
    let relay_logs = || format!("R1:\n{}\nR2:\n{}", r1.log(), r2.log());

    // Site B: bob registers with both relays, then B goes offline.
    let mut b_spec = spec("site-b", "b.test", &["bob"]);
    b_spec.extra_sections = format!("\n[relays]\nregister_with = [\"{r1_id}\", \"{r2_id}\"]\n");
    b_spec.tox_ports = own_ports();
    let mut b = toxmail_tests::site::Site::prepare(root.path(), b_spec, &boot.node);
    let bob = b.identities["bob@b.test"];
    b.start_bridge();
    // Each identity registers on its own: wait for bob's two (one per relay).
    let registered = wait_for(Duration::from_secs(90), || b.relay_registrations(&bob) >= 2);
    assert!(registered.await, "B:\n{}\n{}", b.bridge_log(), relay_logs());
    b.stop_bridge();

    // Site A finds bob and his relays in DNS, and deposits at both after 2 s.
    let (_dns, mut a_spec) = depositing_site_a(bob, &[r1_id, r2_id]);
    // The one interim notice falls due only once the copy is in custody (see below), so it says
    // "relayed", not "delayed", however long the relays take to connect.
    a_spec.extra_queue = "delay_notice_secs = 3600".into();
    let mut a = toxmail_tests::site::Site::prepare(root.path(), a_spec, &boot.node);
    a.start_bridge();
    let marker = format!("RELAYMARK-{}", MessageId::random());
    let to = ["bob@b.test"];
    let body = format!("Bob,\r\n\r\nthe word is {marker}.\r\n");
    let m = smtp::message("alice@a.test", &to, "while you were away", &body);
    let out = smtp::send(a.postfix.smtp_addr(), "alice@a.test", &to, &m)
        .await
        .unwrap();
    assert!(out.accepted(), "{out:?}");
    let deposited = poll(Duration::from_secs(150), || async {
        r1.held().await == 1 && r2.held().await == 1
    });
    assert!(deposited.await, "A:\n{}\n{}", a.bridge_log(), relay_logs());
    let custody = poll(Duration::from_secs(10), || async {
        query_strings(
            &a,
            "SELECT relayed_to FROM outbound WHERE relayed_at IS NOT NULL",
        )
        .await
        .len()
            == 1
    });
    assert!(custody.await, "custody recorded at A\n{}", a.bridge_log());
    // Age the copy past the notice delay while A is down; A sends the notice as it starts.
    a.stop_bridge();
    let aged = query_strings(
        &a,
        "UPDATE outbound SET created = created - interval '2 hours' RETURNING state",
    )
    .await;
    assert_eq!(aged, ["queued"]);
    a.start_bridge();
    let noticed = wait_for(Duration::from_secs(60), || {
        a.postfix
            .maildir_messages("alice")
            .iter()
            .any(|m| contains(m, "Action: relayed"))
    });
    assert!(noticed.await, "relayed DSN to alice\n{}", a.bridge_log());
    let dsn = a.postfix.maildir_messages("alice").remove(0);
    assert!(contains(&dsn, "Status: 2.0.0"));
    assert!(contains(&dsn, "Final-Recipient: rfc822; bob@b.test"));
    assert!(!contains(&dsn, "Action: delayed"));
    a.stop_bridge();
    for r in [&r1, &r2] {
        let dump = r.pg.dump();
        assert!(
            !contains(&dump, &marker),
            "the body's marker is in a relay's database"
        );
        assert!(
            !contains(&dump, "bob@b.test"),
            "bob's address is in a relay's database"
        );
    }

    // B comes back: bob's mail arrives within 5 s of B's first friend connection to a relay.
    let before = b.bridge_log().lines().count();
    b.start_bridge();
    let arrived = wait_for(Duration::from_secs(120), || {
        !b.postfix.maildir_messages("bob").is_empty()
    });
    assert!(arrived.await, "B:\n{}\n{}", b.bridge_log(), relay_logs());
    let log = b.bridge_log();
    let relays = [
        r1_id.public_key().to_string(),
        r2_id.public_key().to_string(),
    ];
    let fresh: Vec<&str> = log
        .lines()
        .skip(before)
        .filter(|l| relays.iter().any(|r| l.contains(r.as_str())))
        .collect();
    let online = fresh
        .iter()
        .filter(|l| l.contains("friend connection") && !l.contains("None"))
        .find_map(|l| log_seconds(l))
        .expect("friend connection to a relay logged");
    let stored = fresh
        .iter()
        .filter(|l| l.contains("envelope stored"))
        .find_map(|l| log_seconds(l))
        .expect("envelope from a relay stored");
    println!(
        "stored at B {:.2} s after its first friend connection to a relay",
        stored - online
    );
    assert!(stored - online < 5.0, "B:\n{log}");
    let mail = b.postfix.maildir_messages("bob").remove(0);
    assert!(contains(&mail, &marker), "the body arrived intact");
    let deleted = poll(Duration::from_secs(60), || async {
        r1.held().await + r2.held().await == 0
    });
    assert!(
        deleted.await,
        "both relays delete it after B's ack\n{}",
        relay_logs()
    );
    // What the relays' operators see: a deposit stored and handed on, nothing held any more.
    for relay in [&r1, &r2] {
        let scraped = wait_for(Duration::from_secs(30), || {
            relay_scrape(relay).is_some_and(|s| {
                s.value(r#"toxmail_relay_deposits_total{outcome="stored"}"#) >= 1.0
                    && s.value("toxmail_relay_handon_duration_seconds_count") >= 1.0
                    && s.value("toxmail_relay_held_messages") == 0.0
            })
        });
        assert!(scraped.await, "{:?}", relay_scrape(relay).map(|s| s.text));
        let text = relay_scrape(relay).unwrap().text;
        promtool_check(&text).unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
        assert!(text.contains(r#"daemon="relay""#), "{text}");
        let status = relay.admin(&["status"]).unwrap();
        assert!(
            status.contains("daemon: running; node connection="),
            "{status}"
        );
    }

    // A comes back and delivers directly: B acks the duplicate, A closes the copy.
    a.start_bridge();
    let closed = poll(Duration::from_secs(120), || async {
        query_strings(&a, "SELECT state FROM outbound").await == ["delivered"]
    });
    assert!(
        closed.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        b.postfix.maildir_messages("bob").len(),
        1,
        "one copy across two relays and a direct delivery"
    );
}

/// Rows in a site's relay-service table `held` (a site that relays for its friends).
/// The relay's `/metrics`, if it answers.
fn relay_scrape(relay: &RelayProcess) -> Option<Scrape> {
    match http_get(relay.metrics, "/metrics") {
        Ok((200, body)) => Some(Scrape::parse(&body)),
        _ => None,
    }
}

async fn held_at(site: &toxmail_tests::site::Site) -> usize {
    query_strings(site, "SELECT message_id::text FROM held")
        .await
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_friends_site_holds_mail_for_an_offline_site() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();

    // Site C relays for its friends (opt-in).
    let mut c_spec = spec("site-c", "c.test", &["carol"]);
    c_spec.extra_sections = "\n[relays]\nserve_friends = true\n".into();
    c_spec.tox_ports = own_ports();
    let mut c = toxmail_tests::site::Site::prepare(root.path(), c_spec, &boot.node);
    let carol = c.identities["carol@c.test"];
    c.start_bridge();

    // B registers with carol's identity, then goes offline.
    let mut b_spec = spec("site-b", "b.test", &["bob"]);
    b_spec.extra_sections = format!("\n[relays]\nregister_with = [\"{carol}\"]\n");
    b_spec.tox_ports = own_ports();
    let mut b = toxmail_tests::site::Site::prepare(root.path(), b_spec, &boot.node);
    let bob = b.identities["bob@b.test"];
    b.start_bridge();
    // Each of B's identities registers on its own: wait for bob's (carol's site keeps mail only
    // for registered recipients), not just the first "registered with relay".
    let registered = wait_for(Duration::from_secs(90), || b.relay_registrations(&bob) >= 1);
    assert!(
        registered.await,
        "B:\n{}\nC:\n{}",
        b.bridge_log(),
        c.bridge_log()
    );
    b.stop_bridge();

    // A deposits bob's mail at carol's site after 2 s, then goes offline.
    let (_dns, a_spec) = depositing_site_a(bob, &[carol]);
    let mut a = toxmail_tests::site::Site::prepare(root.path(), a_spec, &boot.node);
    a.start_bridge();
    let to = ["bob@b.test"];
    let m = smtp::message("alice@a.test", &to, "via carol", "Bob, via a friend.\r\n");
    let out = smtp::send(a.postfix.smtp_addr(), "alice@a.test", &to, &m)
        .await
        .unwrap();
    assert!(out.accepted(), "{out:?}");
    let deposited = poll(Duration::from_secs(120), || async {
        held_at(&c).await == 1
    });
    assert!(
        deposited.await,
        "A:\n{}\nC:\n{}",
        a.bridge_log(),
        c.bridge_log()
    );
    a.stop_bridge();

    // B comes back and gets it from carol's site, which then deletes it.
    b.start_bridge();
    let arrived = wait_for(Duration::from_secs(120), || {
        b.postfix.maildir_messages("bob").len() == 1
    });
    assert!(
        arrived.await,
        "B:\n{}\nC:\n{}",
        b.bridge_log(),
        c.bridge_log()
    );
    let deleted = poll(Duration::from_secs(30), || async { held_at(&c).await == 0 });
    assert!(
        deleted.await,
        "C deletes it after B's ack\n{}",
        c.bridge_log()
    );
    assert!(
        c.postfix.maildir_messages("carol").is_empty(),
        "nothing delivered to carol"
    );
}
