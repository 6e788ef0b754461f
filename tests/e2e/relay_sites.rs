//! Two mail sites and a relay: site B registers with relay R and goes offline; site A queues a
//! mail for bob@b.test (whose DNS record names R), deposits it at R after the configured delay
//! and shuts down; B comes back and gets it from R, which deletes it after B's ack.

use std::time::Duration;

use toxmail_protocol::MessageId;
use toxmail_tests::bootstrapd::{BootstrapDaemon, free_udp_port};
use toxmail_tests::dns::DnsServer;
use toxmail_tests::relay::RelayProcess;
use toxmail_tests::{smtp, wait_for};

use crate::postfix_flow::spec;
use crate::postfix_recovery::{log_seconds, poll, query_strings};

fn own_ports() -> Option<(u16, u16)> {
    let p = free_udp_port();
    Some((p, p.saturating_add(9)))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_site_gets_its_mail_from_the_relay_within_seconds_of_connecting() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let relay = RelayProcess::start(&root.path().join("relay"), &boot.node, "");
    let r_id = relay.address();

    // Site B: bob registers with R, then B goes offline.
    let mut b_spec = spec("site-b", "b.test", &["bob"]);
    b_spec.extra_sections = format!("\n[relays]\nregister_with = [\"{r_id}\"]\n");
    b_spec.tox_ports = own_ports();
    let mut b = toxmail_tests::site::Site::prepare(root.path(), b_spec, &boot.node);
    let bob = b.identities["bob@b.test"];
    b.start_bridge();
    let registered = wait_for(Duration::from_secs(90), || {
        b.bridge_log().contains("registered with relay")
    });
    assert!(
        registered.await,
        "B:\n{}\nR:\n{}",
        b.bridge_log(),
        relay.log()
    );
    b.stop_bridge();

    // Site A finds bob and his relay in DNS, and deposits after 2 s.
    let record = format!("v=tox1;id={bob};relay={r_id}");
    let dns = DnsServer::start(&[("bob._tox.b.test", vec![record])]).unwrap();
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.dns_domains = vec!["b.test".into()];
    a_spec.nameserver = Some(dns.addr());
    a_spec.extra_sections = "\n[relays]\ndeposit_after_secs = 2\n".into();
    // The one interim notice comes after the deposit: it says "relayed", not "delayed".
    a_spec.extra_queue = "delay_notice_secs = 30".into();
    a_spec.tox_ports = own_ports();
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
    let deposited = poll(Duration::from_secs(120), || async {
        relay.held().await == 1
    });
    assert!(
        deposited.await,
        "A:\n{}\nR:\n{}",
        a.bridge_log(),
        relay.log()
    );
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
    let noticed = wait_for(Duration::from_secs(60), || {
        a.postfix
            .maildir_messages("alice")
            .iter()
            .any(|m| contains(m, "Action: relayed"))
    });
    assert!(noticed.await, "relayed DSN to alice\n{}", a.bridge_log());
    let dsn = a.postfix.maildir_messages("alice").remove(0);
    assert!(
        contains(&dsn, "Status: 2.0.0") && contains(&dsn, "Final-Recipient: rfc822; bob@b.test")
    );
    assert!(!contains(&dsn, "Action: delayed"));
    a.stop_bridge();
    let dump = relay.pg.dump();
    assert!(
        !contains(&dump, &marker),
        "the body's marker is in the relay's database"
    );
    assert!(
        !contains(&dump, "bob@b.test"),
        "bob's address is in the relay's database"
    );

    // B comes back: bob's mail arrives within 5 s of B's friend connection to R.
    b.start_bridge();
    let arrived = wait_for(Duration::from_secs(120), || {
        b.postfix.maildir_messages("bob").len() == 1
    });
    assert!(arrived.await, "B:\n{}\nR:\n{}", b.bridge_log(), relay.log());
    let log = b.bridge_log();
    let r_key = r_id.public_key().to_string();
    let online = log
        .lines()
        .filter(|l| l.contains("friend connection") && l.contains(&r_key) && !l.contains("None"))
        .filter_map(log_seconds)
        .next_back()
        .expect("friend connection to R logged");
    let stored = log
        .lines()
        .filter(|l| l.contains("envelope stored") && l.contains(&r_key))
        .filter_map(log_seconds)
        .next_back()
        .expect("envelope from R stored");
    println!(
        "stored at B {:.2} s after its friend connection to the relay",
        stored - online
    );
    assert!(stored - online < 5.0, "B:\n{log}");
    let mail = b.postfix.maildir_messages("bob").remove(0);
    assert!(contains(&mail, &marker), "the body arrived intact");

    let deleted = poll(Duration::from_secs(30), || async {
        relay.held().await == 0
    });
    assert!(deleted.await, "R deletes it after B's ack\n{}", relay.log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.postfix.maildir_messages("bob").len(), 1, "one copy");
}

/// Rows in a site's relay-service table `held` (a site that relays for its friends).
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
    let registered = wait_for(Duration::from_secs(90), || {
        b.bridge_log().contains("registered with relay")
    });
    assert!(
        registered.await,
        "B:\n{}\nC:\n{}",
        b.bridge_log(),
        c.bridge_log()
    );
    b.stop_bridge();

    // A deposits bob's mail at carol's site after 2 s, then goes offline.
    let record = format!("v=tox1;id={bob};relay={carol}");
    let dns = DnsServer::start(&[("bob._tox.b.test", vec![record])]).unwrap();
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.dns_domains = vec!["b.test".into()];
    a_spec.nameserver = Some(dns.addr());
    a_spec.extra_sections = "\n[relays]\ndeposit_after_secs = 2\n".into();
    a_spec.tox_ports = own_ports();
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
