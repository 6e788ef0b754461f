//! What DNS discovery trusts, against real DNS servers on 127.0.0.1: keys pinned on first use
//! (dnsmasq serving what an attacker who controls the answers would), and DNSSEC validation
//! (Knot DNS signing the zone, hickory validating it against the zone's key as trust anchor).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use toxmail_bridge::resolve::pins::PinEvent;
use toxmail_bridge::resolve::{Resolver, ResolverConfig, Route, RouteSource};
use toxmail_protocol::{PublicKey, ToxId};
use toxmail_tests::dns::DnsServer;
use toxmail_tests::knot::SignedZone;

fn id(n: u8) -> ToxId {
    ToxId::new(PublicKey([n; 32]), u32::from(n) * 1000)
}

fn record(id: ToxId) -> Vec<String> {
    vec![format!("v=tox1;id={id}")]
}

fn tox(peer: ToxId) -> Route {
    let relays = Vec::new();
    let source = RouteSource::Dns;
    Route::Tox {
        peer,
        source,
        relays,
    }
}

fn config(server: std::net::SocketAddr) -> ResolverConfig {
    ResolverConfig {
        dns_domains: vec!["b.test".into()],
        nameservers: vec![server],
        dns_timeout: Duration::from_secs(5),
        dns_wait: Duration::from_secs(10),
        ..ResolverConfig::default()
    }
}

/// A resolver as the daemon runs it: pins come from "the database" (`stored`), learned ones and
/// changes go out as events.
fn pinned_resolver(
    config: ResolverConfig,
    stored: &[(&str, PublicKey)],
) -> (Resolver, mpsc::Receiver<PinEvent>) {
    let (tx, rx) = mpsc::channel(16);
    let resolver = Resolver::with_pin_events(config, tx);
    let stored: HashMap<String, PublicKey> =
        stored.iter().map(|(a, k)| (a.to_string(), *k)).collect();
    resolver.set_pins(stored);
    (resolver, rx)
}

fn is_temp_fail(route: &Route) -> bool {
    matches!(route, Route::TempFail(_))
}

#[tokio::test]
async fn first_key_seen_is_pinned_and_reported_once() {
    let dns = DnsServer::start(&[("bob._tox.b.test", record(id(1)))]).unwrap();
    let (resolver, mut events) = pinned_resolver(config(dns.addr()), &[]);
    assert_eq!(resolver.resolve("bob@b.test").await, tox(id(1)));
    let learned = PinEvent::Learned {
        address: "bob@b.test".into(),
        id: id(1),
    };
    assert_eq!(events.try_recv().ok(), Some(learned));
    // Seen again: pinned already, nothing new to write down.
    assert_eq!(resolver.resolve("Bob@B.test").await, tox(id(1)));
    assert!(events.try_recv().is_err());
    let explanation = resolver.explain("bob@b.test").await;
    assert_eq!(explanation.pinned, Some(id(1).public_key()));
}

#[tokio::test]
async fn a_changed_key_is_refused_until_the_operator_accepts_it() {
    // What a spoofed answer (or a hijacked zone) says: bob's mail should go to key 66.
    let dns = DnsServer::start(&[("bob._tox.b.test", record(id(66)))]).unwrap();
    let pinned = id(1).public_key();
    let (resolver, mut events) = pinned_resolver(config(dns.addr()), &[("bob@b.test", pinned)]);
    let route = resolver.resolve("bob@b.test").await;
    assert!(is_temp_fail(&route), "{route}");
    let changed = PinEvent::Changed {
        address: "bob@b.test".into(),
        pinned,
        seen: Some(id(66)),
    };
    assert_eq!(events.try_recv().ok(), Some(changed));
    // Still refused, and reported only once.
    assert!(is_temp_fail(&resolver.resolve("bob@b.test").await));
    assert!(events.try_recv().is_err());
    // What the operator sees before deciding: DNS's answer, pins aside.
    let (key, answer) = resolver.dns_answer("bob@b.test").await.unwrap();
    assert_eq!((key.as_str(), answer), ("bob@b.test", tox(id(66))));
    // Accepted (the database now pins key 66): followed.
    resolver.set_pins(HashMap::from([("bob@b.test".into(), id(66).public_key())]));
    assert_eq!(resolver.resolve("bob@b.test").await, tox(id(66)));
}

#[tokio::test]
async fn a_rotated_nospam_is_the_same_key() {
    let rotated = ToxId::new(id(1).public_key(), 77);
    let dns = DnsServer::start(&[("bob._tox.b.test", record(rotated))]).unwrap();
    let (resolver, mut events) =
        pinned_resolver(config(dns.addr()), &[("bob@b.test", id(1).public_key())]);
    assert_eq!(resolver.resolve("bob@b.test").await, tox(rotated));
    assert!(events.try_recv().is_err());
}

#[tokio::test]
async fn a_pinned_address_whose_record_vanished_or_broke_waits_instead_of_going_plain() {
    let dns = DnsServer::start(&[("carol._tox.b.test", vec!["garbage".into()])]).unwrap();
    let stored = [
        ("bob@b.test", id(1).public_key()),
        ("carol@b.test", id(3).public_key()),
    ];
    let (resolver, mut events) = pinned_resolver(config(dns.addr()), &stored);
    // No record: without the pin this would be ordinary mail, readable on the way.
    assert!(is_temp_fail(&resolver.resolve("bob@b.test").await));
    assert!(is_temp_fail(&resolver.resolve("carol@b.test").await));
    let mut seen = Vec::new();
    while let Ok(PinEvent::Changed {
        address, seen: s, ..
    }) = events.try_recv()
    {
        seen.push((address, s));
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = vec![("bob@b.test".into(), None), ("carol@b.test".into(), None)];
    assert_eq!(seen, expected);
    // An address never pinned is unaffected.
    assert_eq!(resolver.resolve("dave@b.test").await, Route::NotTox);
}

#[tokio::test]
async fn pinning_off_follows_dns() {
    let dns = DnsServer::start(&[("bob._tox.b.test", record(id(66)))]).unwrap();
    let config = ResolverConfig {
        pin_dns_keys: false,
        ..config(dns.addr())
    };
    let (resolver, mut events) = pinned_resolver(config, &[("bob@b.test", id(1).public_key())]);
    assert_eq!(resolver.resolve("bob@b.test").await, tox(id(66)));
    assert!(events.try_recv().is_err());
}

#[tokio::test]
async fn a_dns_failure_is_not_a_key_change() {
    // Nothing listens there: the lookup fails, which says nothing about the key.
    let port = toxmail_tests::bootstrapd::free_udp_port();
    let config = ResolverConfig {
        dns_timeout: Duration::from_millis(300),
        ..config(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    };
    let (resolver, mut events) = pinned_resolver(config, &[("bob@b.test", id(1).public_key())]);
    assert!(is_temp_fail(&resolver.resolve("bob@b.test").await));
    assert!(events.try_recv().is_err());
}

fn signed_b_test() -> SignedZone {
    let records = [
        ("bob._tox.b.test", record(id(1))),
        ("alice._tox.b.test", record(id(2))),
    ];
    SignedZone::start("b.test", &records).expect("knotd (package knot)")
}

fn dnssec_config(server: std::net::SocketAddr, anchor: &std::path::Path) -> ResolverConfig {
    ResolverConfig {
        dnssec_domains: vec!["b.test".into()],
        trust_anchor: Some(anchor.to_path_buf()),
        ..config(server)
    }
}

#[tokio::test]
async fn dnssec_domain_records_that_validate_route_to_tox() {
    let zone = signed_b_test();
    let resolver = Resolver::new(dnssec_config(zone.addr(), zone.trust_anchor()));
    let explanation = resolver.explain("bob@b.test").await;
    assert_eq!(explanation.route, tox(id(1)), "{explanation}");
    assert!(explanation.dnssec);
    assert!(explanation.to_string().contains("DNSSEC"), "{explanation}");
    // A validated denial: ordinary mail.
    assert_eq!(resolver.resolve("nobody@b.test").await, Route::NotTox);
}

#[tokio::test]
async fn dnssec_domain_unsigned_answers_are_refused() {
    // The same names served unsigned, as an attacker spoofing answers would: neither the record
    // nor a denial counts.
    let zone = signed_b_test();
    let spoof = DnsServer::start(&[("bob._tox.b.test", record(id(66)))]).unwrap();
    let resolver = Resolver::new(dnssec_config(spoof.addr(), zone.trust_anchor()));
    let route = resolver.resolve("bob@b.test").await;
    assert!(is_temp_fail(&route), "{route}");
    assert!(route.to_string().contains("DNSSEC"), "{route}");
    assert!(is_temp_fail(&resolver.resolve("nobody@b.test").await));
}

#[tokio::test]
async fn dnssec_domain_signed_with_another_key_is_refused() {
    // A zone signed by someone else's key (e.g. a hijacked server re-signing): bogus.
    let zone = signed_b_test();
    let impostor = SignedZone::start("b.test", &[("bob._tox.b.test", record(id(66)))]).unwrap();
    let resolver = Resolver::new(dnssec_config(impostor.addr(), zone.trust_anchor()));
    let route = resolver.resolve("bob@b.test").await;
    assert!(is_temp_fail(&route), "{route}");
}

#[tokio::test]
async fn domains_without_dnssec_are_asked_as_before() {
    let zone = signed_b_test();
    let config = ResolverConfig {
        dns_domains: vec!["b.test".into()],
        dnssec_domains: Vec::new(),
        ..config(zone.addr())
    };
    let resolver = Resolver::new(config);
    let explanation = resolver.explain("bob@b.test").await;
    assert_eq!(explanation.route, tox(id(1)));
    assert!(!explanation.dnssec);
}
