//! Routing decisions against a real DNS server (dnsmasq on 127.0.0.1): DNS discovery, contacts,
//! `<ID>@tox`, local identities, failures and the cache.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use toxmail_bridge::resolve::{Directory, Resolver, ResolverConfig, Route, RouteSource};
use toxmail_protocol::{PublicKey, ToxId};
use toxmail_tests::bootstrapd::free_udp_port;
use toxmail_tests::dns::{DnsOptions, DnsServer};

fn id(n: u8) -> ToxId {
    ToxId::new(PublicKey([n; 32]), u32::from(n) * 1000)
}

fn tox(peer: ToxId, source: RouteSource) -> Route {
    let relays = Vec::new();
    Route::Tox {
        peer,
        source,
        relays,
    }
}

/// The zone every test serves under `b.test`.
fn records() -> Vec<(&'static str, Vec<String>)> {
    let long = format!("v=tox1;id={};sign={}", id(2), "QUJD".repeat(60));
    let (head, tail) = long.split_at(200);
    vec![
        ("alice._tox.b.test", vec![format!("v=tox1;id={}", id(1))]),
        ("long._tox.b.test", vec![head.to_string(), tail.to_string()]),
        ("junk._tox.b.test", vec!["hello world".into()]),
        ("dave._tox.b.test", vec![format!("v=tox1;id={}", id(4))]),
        (
            "first.last._tox.b.test",
            vec![format!("v=tox1;id={}", id(6))],
        ),
        (
            "erin._tox.b.test",
            vec![format!(
                "v=tox1;id={};relay={};relay={}",
                id(7),
                id(8),
                id(9)
            )],
        ),
    ]
}

fn config(server: &DnsServer) -> ResolverConfig {
    ResolverConfig {
        dns_domains: vec!["b.test".into(), "down.test".into()],
        nameservers: vec![server.addr()],
        recipient_delimiter: Some("+".into()),
        dns_timeout: Duration::from_secs(2),
        // Generous: these tests want the answer, not "lookup in progress".
        dns_wait: Duration::from_secs(5),
        ..ResolverConfig::default()
    }
}

fn start_dns() -> DnsServer {
    let options = DnsOptions {
        refused_domains: vec!["down.test".into()],
        ..DnsOptions::default()
    };
    DnsServer::start_with(&records(), &options).expect("dnsmasq (package dnsmasq-base)")
}

#[tokio::test]
async fn dns_record_routes_to_tox() {
    let dns = start_dns();
    let resolver = Resolver::new(config(&dns));
    assert_eq!(
        resolver.resolve("alice@b.test").await,
        tox(id(1), RouteSource::Dns)
    );
    // Dots in the local part are labels.
    let route = resolver.resolve("first.last@b.test").await;
    assert_eq!(route, tox(id(6), RouteSource::Dns));
}

#[tokio::test]
async fn relays_in_the_record_come_with_the_route() {
    let dns = start_dns();
    let resolver = Resolver::new(config(&dns));
    let route = resolver.resolve("erin@b.test").await;
    let relays = vec![id(8), id(9)];
    let expected = Route::Tox {
        peer: id(7),
        source: RouteSource::Dns,
        relays,
    };
    assert_eq!(route, expected);
}

#[tokio::test]
async fn multi_string_txt_record_is_concatenated() {
    let dns = start_dns();
    let resolver = Resolver::new(config(&dns));
    assert_eq!(
        resolver.resolve("long@b.test").await,
        tox(id(2), RouteSource::Dns)
    );
}

#[tokio::test]
async fn uppercase_domain_and_extension_are_normalised() {
    let dns = start_dns();
    let resolver = Resolver::new(config(&dns));
    for address in ["Alice+news@B.TEST", "<ALICE@b.test.>", "alice+@b.test"] {
        let route = resolver.resolve(address).await;
        assert_eq!(route, tox(id(1), RouteSource::Dns), "{address}");
    }
}

#[tokio::test]
async fn contact_routes_to_tox_before_dns() {
    let dns = start_dns();
    let resolver = Resolver::new(config(&dns));
    let contacts = HashMap::from([
        ("carol@c.test".to_string(), id(3)),
        ("Dave@B.test".to_string(), id(5)), // re-normalised by set_directory
    ]);
    resolver.set_directory(Directory {
        contacts,
        local: HashSet::new(),
    });
    let route = resolver.resolve("Carol+x@C.test").await;
    assert_eq!(route, tox(id(3), RouteSource::Contact));
    // dave also has a DNS record (id 4): the contact wins.
    assert_eq!(
        resolver.resolve("dave@b.test").await,
        tox(id(5), RouteSource::Contact)
    );
}

#[tokio::test]
async fn tox_address_routes_to_its_id() {
    let resolver = Resolver::new(ResolverConfig::default());
    let address = format!("{}@tox", id(7));
    assert_eq!(
        resolver.resolve(&address).await,
        tox(id(7), RouteSource::ToxAddress)
    );
    let lower = format!("<{}+ext@TOX>", id(7).to_string().to_lowercase());
    let with_delimiter = Resolver::new(ResolverConfig {
        recipient_delimiter: Some("+".into()),
        ..ResolverConfig::default()
    });
    let route = with_delimiter.resolve(&lower).await;
    assert_eq!(route, tox(id(7), RouteSource::ToxAddress));
}

#[tokio::test]
async fn bad_tox_addresses_are_invalid() {
    let resolver = Resolver::new(ResolverConfig::default());
    let mut bad = id(7).to_string();
    bad.replace_range(75.., if bad.ends_with('0') { "1" } else { "0" });
    let route = resolver.resolve(&format!("{bad}@tox")).await;
    assert!(
        matches!(&route, Route::Invalid(r) if r.contains("checksum")),
        "{route:?}"
    );
    for address in ["bob@tox", "@tox", "a b@tox", "<x@tox"] {
        let route = resolver.resolve(address).await;
        assert!(matches!(route, Route::Invalid(_)), "{address}: {route:?}");
    }
}

#[tokio::test]
async fn garbage_txt_record_is_invalid() {
    let dns = start_dns();
    let resolver = Resolver::new(config(&dns));
    let route = resolver.resolve("junk@b.test").await;
    assert!(
        matches!(&route, Route::Invalid(r) if r.contains("garbage TXT")),
        "{route:?}"
    );
}

#[tokio::test]
async fn missing_record_is_not_tox() {
    let dns = start_dns();
    let resolver = Resolver::new(config(&dns));
    assert_eq!(resolver.resolve("nobody@b.test").await, Route::NotTox);
    // Names that cannot be DNS labels never reach DNS and stay ordinary mail.
    assert_eq!(resolver.resolve("\"q\"@b.test").await, Route::NotTox);
    assert_eq!(resolver.resolve("not an address").await, Route::NotTox);
}

#[tokio::test]
async fn domain_not_opted_in_is_not_tox_without_a_query() {
    let dns = DnsServer::start(&[(
        "alice._tox.other.test",
        vec![format!("v=tox1;id={}", id(1))],
    )])
    .expect("dnsmasq");
    let resolver = Resolver::new(config(&dns));
    assert_eq!(resolver.resolve("alice@other.test").await, Route::NotTox);
    // A later query shows up in dnsmasq's log: the earlier one would be there before it.
    assert_eq!(resolver.resolve("zed@b.test").await, Route::NotTox);
    assert!(wait_until(|| dns.queries().iter().any(|q| q == "zed._tox.b.test")).await);
    assert_eq!(dns.queries(), ["zed._tox.b.test"]);
}

#[tokio::test]
async fn no_nameservers_disables_dns_discovery() {
    let dns = start_dns();
    let resolver = Resolver::new(ResolverConfig {
        nameservers: vec![],
        ..config(&dns)
    });
    assert_eq!(resolver.resolve("alice@b.test").await, Route::NotTox);
}

#[tokio::test]
async fn unreachable_nameserver_is_temp_fail() {
    let silent = ([127, 0, 0, 1], free_udp_port()).into();
    let resolver = Resolver::new(ResolverConfig {
        dns_domains: vec!["b.test".into()],
        nameservers: vec![silent],
        dns_timeout: Duration::from_millis(500),
        dns_wait: Duration::from_secs(5),
        ..ResolverConfig::default()
    });
    let route = resolver.resolve("alice@b.test").await;
    assert!(matches!(&route, Route::TempFail(_)), "{route:?}");
}

#[tokio::test]
async fn refused_answer_is_temp_fail() {
    let dns = start_dns();
    let resolver = Resolver::new(config(&dns));
    let route = resolver.resolve("alice@down.test").await;
    assert!(
        matches!(&route, Route::TempFail(r) if r.contains("Refused")),
        "{route:?}"
    );
}

#[tokio::test]
async fn local_identity_is_local() {
    let dns = start_dns();
    let resolver = Resolver::new(config(&dns));
    let own = format!("{}@tox", id(1)).to_lowercase();
    resolver.set_directory(Directory {
        contacts: HashMap::from([("alice@b.test".to_string(), id(1))]),
        local: HashSet::from(["alice@b.test".to_string(), own.clone()]),
    });
    assert_eq!(resolver.resolve("Alice+x@b.test").await, Route::Local);
    assert_eq!(resolver.resolve(&own.to_uppercase()).await, Route::Local);
}

#[tokio::test]
async fn answers_are_cached_after_the_first_lookup() {
    let dns = start_dns();
    let resolver = Resolver::new(config(&dns));
    assert_eq!(
        resolver.resolve("alice@b.test").await,
        tox(id(1), RouteSource::Dns)
    );
    assert_eq!(resolver.resolve("nobody@b.test").await, Route::NotTox);
    let junk = resolver.resolve("junk@b.test").await;
    drop(dns);
    assert_eq!(
        resolver.resolve("ALICE@b.test").await,
        tox(id(1), RouteSource::Dns)
    );
    assert_eq!(resolver.resolve("nobody@b.test").await, Route::NotTox);
    assert_eq!(resolver.resolve("junk@b.test").await, junk);
    // Not asked before the server went away: now a failure.
    let route = resolver.resolve("dave@b.test").await;
    assert!(matches!(route, Route::TempFail(_)), "{route:?}");
}

#[tokio::test]
async fn slow_lookup_is_temp_fail_then_answered_from_cache() {
    // Nothing answers there: the lookup takes dns_timeout, far longer than dns_wait.
    let silent = ([127, 0, 0, 1], free_udp_port()).into();
    let resolver = Resolver::new(ResolverConfig {
        dns_domains: vec!["b.test".into()],
        nameservers: vec![silent],
        dns_timeout: Duration::from_millis(400),
        dns_wait: Duration::from_millis(20),
        ..ResolverConfig::default()
    });
    let started = std::time::Instant::now();
    let route = resolver.resolve("alice@b.test").await;
    assert!(
        matches!(&route, Route::TempFail(r) if r.contains("in progress")),
        "{route:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(300));
    // The lookup goes on in the background; its failure lands in the cache.
    let mut route = route;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        route = resolver.resolve("alice@b.test").await;
        if !matches!(&route, Route::TempFail(r) if r.contains("in progress")) {
            break;
        }
    }
    assert!(
        matches!(&route, Route::TempFail(r) if r.contains("alice._tox.b.test")),
        "{route:?}"
    );
    let cached = std::time::Instant::now();
    assert_eq!(resolver.resolve("alice@b.test").await, route);
    assert!(cached.elapsed() < Duration::from_millis(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_one_name_share_one_query() {
    let dns = start_dns();
    let resolver = std::sync::Arc::new(Resolver::new(config(&dns)));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let resolver = resolver.clone();
            tokio::spawn(async move { resolver.resolve("alice@b.test").await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), tox(id(1), RouteSource::Dns));
    }
    assert_eq!(resolver.resolve("zed@b.test").await, Route::NotTox);
    assert!(wait_until(|| dns.queries().iter().any(|q| q == "zed._tox.b.test")).await);
    let alice = dns
        .queries()
        .iter()
        .filter(|q| *q == "alice._tox.b.test")
        .count();
    assert_eq!(alice, 1);
}

#[tokio::test]
async fn explain_names_the_record_it_used() {
    let dns = start_dns();
    let resolver = Resolver::new(ResolverConfig {
        dns_wait: Duration::ZERO,
        ..config(&dns)
    });
    // explain waits for DNS, whatever dns_wait says.
    let explanation = resolver.explain("Alice+x@B.test").await;
    assert_eq!(explanation.normalised.as_deref(), Some("alice@b.test"));
    assert_eq!(explanation.dns_name.as_deref(), Some("alice._tox.b.test."));
    assert_eq!(explanation.route, tox(id(1), RouteSource::Dns));
    let text = explanation.to_string();
    assert!(text.contains("alice._tox.b.test."), "{text}");
    assert!(
        text.contains(&format!("tox via DNS record: {}", id(1))),
        "{text}"
    );
}

async fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    toxmail_tests::wait_for(Duration::from_secs(5), &mut cond).await
}
