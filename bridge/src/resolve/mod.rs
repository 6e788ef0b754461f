//! Routing decisions: for each recipient, deliver over Tox (and to which peer), leave it to
//! ordinary mail, or refuse it. The socketmap asks; nothing here touches the database, so
//! answers keep coming while it is down.
//!
//! Order: normalise (`address`) → one of our identities → `<ID>@tox` → contacts → DNS discovery
//! for opted-in domains (`dns`, `record`), answered from `cache` and held to the keys pinned on
//! first use (`pins`) → ordinary mail.

pub mod address;
pub mod cache;
pub mod dns;
pub mod pins;
pub mod record;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use toxmail_protocol::{PublicKey, ToxId};

use address::ToxAddress;
pub use address::normalise;
use cache::Cache;
use dns::{Dnssec, LookupError, TxtAnswer, TxtLookup};
use pins::{PinCheck, PinEvent, Pins, Seen};
use record::Selection;

/// Answers are kept at least this long whatever their TTL: Postfix asks twice per recipient
/// within seconds (smtpd, then qmgr), and a TTL of 0 would send both to DNS.
const MIN_CACHE_TTL: Duration = Duration::from_secs(5);

/// How a Tox peer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSource {
    /// The address was `<ID>@tox`.
    ToxAddress,
    /// A contact in the directory.
    Contact,
    /// A `tox1` TXT record at `user._tox.domain.`.
    Dns,
}

/// What to do with one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Deliver over Tox.
    Tox {
        peer: ToxId,
        source: RouteSource,
        /// Relays the peer receives through while offline (DNS `relay=`).
        relays: Vec<ToxId>,
    },
    /// One of our own identities: never routed to Tox, so that mail cannot loop.
    Local,
    /// Ordinary mail.
    NotTox,
    /// Permanent: a malformed `…@tox`, a bad checksum, an unusable TXT record.
    Invalid(String),
    /// Try again later: DNS failed for an opted-in domain, or is still being asked.
    TempFail(String),
}

impl fmt::Display for RouteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteSource::ToxAddress => "Tox address",
            RouteSource::Contact => "contact",
            RouteSource::Dns => "DNS record",
        })
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Tox {
                peer,
                source,
                relays,
            } => {
                write!(f, "tox via {source}: {peer}")?;
                for r in relays {
                    write!(f, " (relay {r})")?;
                }
                Ok(())
            }
            Route::Local => f.write_str("local identity: never routed over Tox"),
            Route::NotTox => f.write_str("not a Tox recipient: ordinary mail"),
            Route::Invalid(reason) => write!(f, "invalid: {reason}"),
            Route::TempFail(reason) => write!(f, "temporary failure: {reason}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// Domains whose users are looked up in DNS (opt-in), lower-case, exact match.
    pub dns_domains: Vec<String>,
    /// Nameservers asked for DNS discovery. Empty disables DNS discovery entirely: there is no
    /// fallback to the system's or any public resolver.
    pub nameservers: Vec<SocketAddr>,
    /// Postfix's `recipient_delimiter`, e.g. `+`; each character is a delimiter.
    pub recipient_delimiter: Option<String>,
    /// Bound on one DNS lookup.
    pub dns_timeout: Duration,
    /// How long an answer may wait for an uncached lookup before saying "try again".
    pub dns_wait: Duration,
    /// Lifetime of "no record" answers (a smaller SOA negative TTL wins).
    pub negative_ttl: Duration,
    /// Cap on every cached answer's lifetime.
    pub max_ttl: Duration,
    /// Lifetime of DNS failures, so that a dead nameserver is not asked for every message.
    pub temp_fail_ttl: Duration,
    /// Hold DNS-learned keys to the first one seen for each address (see `pins`).
    pub pin_dns_keys: bool,
    /// Domains (among `dns_domains`) whose records count only when DNSSEC validates them.
    pub dnssec_domains: Vec<String>,
    /// DNSKEY records to trust for DNSSEC instead of the root's keys.
    pub trust_anchor: Option<PathBuf>,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            dns_domains: Vec::new(),
            recipient_delimiter: None,
            nameservers: Vec::new(),
            dns_timeout: Duration::from_secs(2),
            dns_wait: Duration::from_millis(250),
            negative_ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(3600),
            temp_fail_ttl: Duration::from_secs(30),
            pin_dns_keys: true,
            dnssec_domains: Vec::new(),
            trust_anchor: None,
        }
    }
}

/// What the application knows from its database, handed over whole.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Normalised address → the contact's Tox ID.
    pub contacts: HashMap<String, ToxId>,
    /// Normalised addresses of our own identities (include their `<ID>@tox` forms too).
    pub local: HashSet<String>,
}

/// A routing decision with the steps that led to it, for the CLI `resolve` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub address: String,
    pub normalised: Option<String>,
    /// The TXT name asked, when DNS discovery applied.
    pub dns_name: Option<String>,
    /// Whether that name's answer had to validate (a DNSSEC domain).
    pub dnssec: bool,
    /// The key pinned for the address, if any.
    pub pinned: Option<PublicKey>,
    pub route: Route,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.address)?;
        if let Some(normalised) = &self.normalised {
            write!(f, " (as {normalised})")?;
        }
        if let Some(name) = &self.dns_name {
            let dnssec = if self.dnssec { ", DNSSEC" } else { "" };
            write!(f, " [DNS {name}{dnssec}]")?;
        }
        if let Some(key) = &self.pinned {
            write!(f, " [pinned key {key}]")?;
        }
        write!(f, ": {}", self.route)
    }
}

/// Decides routes. Share it through an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Resolver {
    directory: RwLock<Arc<Directory>>,
    discovery: Arc<Discovery>,
    delimiter: Option<String>,
    pinning: bool,
    pins: Mutex<Pins>,
    /// Where first uses and changes go to be written down; without it (the CLI, tests) what is
    /// learned stays in memory.
    pin_events: Option<mpsc::Sender<PinEvent>>,
}

impl Resolver {
    pub fn new(config: ResolverConfig) -> Resolver {
        Resolver {
            directory: RwLock::new(Arc::new(Directory::default())),
            delimiter: config.recipient_delimiter.clone(),
            pinning: config.pin_dns_keys,
            pins: Mutex::new(Pins::default()),
            pin_events: None,
            discovery: Arc::new(Discovery::new(config)),
        }
    }

    /// Like [`Resolver::new`], with pins learned and changes seen sent to `events` (a full
    /// channel means the pin is not taken now; it is offered again at the next lookup).
    pub fn with_pin_events(config: ResolverConfig, events: mpsc::Sender<PinEvent>) -> Resolver {
        Resolver {
            pin_events: Some(events),
            ..Resolver::new(config)
        }
    }

    /// Replaces the pins with the database's (address → key).
    pub fn set_pins(&self, stored: HashMap<String, PublicKey>) {
        let rekey = |key: String| self.normalise(&key).unwrap_or(key);
        let stored = stored.into_iter().map(|(k, v)| (rekey(k), v)).collect();
        self.lock_pins().set_stored(stored);
    }

    fn lock_pins(&self) -> std::sync::MutexGuard<'_, Pins> {
        self.pins.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the directory atomically. Keys are normalised again with this resolver's
    /// delimiter, so a caller that stored them slightly differently still matches.
    pub fn set_directory(&self, dir: Directory) {
        let rekey = |key: String| self.normalise(&key).unwrap_or(key);
        let dir = Directory {
            contacts: dir
                .contacts
                .into_iter()
                .map(|(k, v)| (rekey(k), v))
                .collect(),
            local: dir.local.into_iter().map(rekey).collect(),
        };
        *self.directory.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(dir);
    }

    /// True when some contact's Tox ID has this public key.
    pub fn is_contact_key(&self, key: &toxmail_protocol::PublicKey) -> bool {
        let directory = self.directory.read().unwrap_or_else(|e| e.into_inner());
        directory
            .contacts
            .values()
            .any(|id| id.public_key() == *key)
    }

    /// The route for `address`, within about `dns_wait` at worst.
    pub async fn resolve(&self, address: &str) -> Route {
        self.explain_within(address, Some(self.discovery.config.dns_wait))
            .await
            .route
    }

    /// Like [`Resolver::resolve`], but waits for DNS to finish and says how it decided.
    pub async fn explain(&self, address: &str) -> Explanation {
        self.explain_within(address, None).await
    }

    async fn explain_within(&self, address: &str, wait: Option<Duration>) -> Explanation {
        let mut explanation = Explanation {
            address: address.to_string(),
            normalised: self.normalise(address),
            dns_name: None,
            dnssec: false,
            pinned: None,
            route: Route::NotTox,
        };
        let Some(key) = explanation.normalised.clone() else {
            if address::is_raw_tox_address(address) {
                explanation.route = Route::Invalid("malformed Tox address".into());
            }
            return explanation;
        };
        if let Some(route) = self.route_without_dns(&key) {
            explanation.route = route;
            return explanation;
        }
        if let Some((name, secure)) = self.discovery.txt_name(&key) {
            let route = Discovery::route(&self.discovery, &name, secure, wait).await;
            explanation.route = self.held_to_pin(&key, route);
            explanation.dns_name = Some(name);
            explanation.dnssec = secure;
            explanation.pinned = self
                .pinning
                .then(|| self.lock_pins().pinned(&key))
                .flatten();
        }
        explanation
    }

    /// What DNS says about `address` now, pins aside: for the operator deciding whether to
    /// accept a changed key. `None` when DNS discovery does not apply to the address.
    pub async fn dns_answer(&self, address: &str) -> Option<(String, Route)> {
        let key = self.normalise(address)?;
        let (name, secure) = self.discovery.txt_name(&key)?;
        Some((
            key,
            Discovery::route(&self.discovery, &name, secure, None).await,
        ))
    }

    /// A DNS answer checked against the key pinned for `address`: a first key is pinned; another
    /// key, or no usable record, for a pinned address waits for the operator (4xx) and is logged
    /// loudly once. A failed lookup stays what it is.
    fn held_to_pin(&self, address: &str, route: Route) -> Route {
        if !self.pinning {
            return route;
        }
        let seen = match &route {
            Route::TempFail(_) => return route,
            Route::Tox { peer, .. } => Seen::Key(*peer),
            _ => Seen::Nothing,
        };
        let mut pins = self.lock_pins();
        match pins.check(address, seen) {
            PinCheck::Unpinned | PinCheck::Match => route,
            PinCheck::FirstUse => {
                if let Seen::Key(id) = seen {
                    let event = PinEvent::Learned {
                        address: address.to_string(),
                        id,
                    };
                    if self.send_pin_event(event) {
                        pins.learn(address, id.public_key());
                    }
                }
                route
            }
            PinCheck::Changed { pinned } => {
                if pins.first_report(address, seen) {
                    let seen = match seen {
                        Seen::Key(id) => Some(id),
                        Seen::Nothing => None,
                    };
                    match seen {
                        Some(id) => tracing::error!(
                            %address, %pinned, new = %id,
                            "the Tox key in DNS changed: mail to this address waits until the \
                             operator accepts it (toxmail-bridge resolve --accept-new-key)"
                        ),
                        None => tracing::error!(
                            %address, %pinned, answer = %route,
                            "the Tox record in DNS is gone or unusable for a pinned address: \
                             mail waits until the operator decides (toxmail-bridge resolve \
                             --accept-new-key, or pins remove)"
                        ),
                    }
                    let address = address.to_string();
                    self.send_pin_event(PinEvent::Changed {
                        address,
                        pinned,
                        seen,
                    });
                }
                Route::TempFail(
                    "the Tox key in DNS differs from the pinned one; waiting for the operator"
                        .into(),
                )
            }
        }
    }

    /// True when the event was taken (or there is nowhere to send it).
    fn send_pin_event(&self, event: PinEvent) -> bool {
        match &self.pin_events {
            None => true,
            Some(tx) => tx.try_send(event).is_ok(),
        }
    }

    /// The steps that need no network: own identities, `<ID>@tox`, contacts.
    fn route_without_dns(&self, key: &str) -> Option<Route> {
        let directory = self
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if directory.local.contains(key) {
            return Some(Route::Local);
        }
        match address::parse_tox_address(key) {
            ToxAddress::Id(peer) => {
                let source = RouteSource::ToxAddress;
                let relays = Vec::new();
                return Some(Route::Tox {
                    peer,
                    source,
                    relays,
                });
            }
            ToxAddress::Malformed(reason) => return Some(Route::Invalid(reason)),
            ToxAddress::NotTox => {}
        }
        let peer = *directory.contacts.get(key)?;
        let source = RouteSource::Contact;
        let relays = Vec::new();
        Some(Route::Tox {
            peer,
            source,
            relays,
        })
    }

    fn normalise(&self, address: &str) -> Option<String> {
        normalise(address, self.delimiter.as_deref())
    }
}

/// DNS discovery with its cache and the lookups in flight, shared with background tasks.
#[derive(Debug)]
struct Discovery {
    config: ResolverConfig,
    domains: HashSet<String>,
    /// Domains whose answers must validate.
    secure_domains: HashSet<String>,
    /// `None` when discovery is disabled (no nameservers).
    lookup: Option<Result<TxtLookup, LookupError>>,
    cache: Mutex<Cache<Route>>,
    in_flight: Mutex<HashMap<String, watch::Receiver<Option<Route>>>>,
}

impl Discovery {
    fn new(config: ResolverConfig) -> Discovery {
        let canonical = |domains: &[String]| {
            domains
                .iter()
                .filter_map(|d| address::canonical_domain(d.trim_end_matches('.')))
                .collect::<HashSet<_>>()
        };
        let domains = canonical(&config.dns_domains);
        let secure_domains = canonical(&config.dnssec_domains);
        let dnssec = (!secure_domains.is_empty()).then(|| Dnssec {
            trust_anchor: config.trust_anchor.clone(),
        });
        let lookup = (!config.nameservers.is_empty())
            .then(|| TxtLookup::new(&config.nameservers, config.dns_timeout, dnssec.as_ref()));
        if let Some(Err(e)) = &lookup {
            tracing::error!(error = %e, "DNS discovery cannot work; opted-in domains get 4.4.3");
        }
        Discovery {
            config,
            domains,
            secure_domains,
            lookup,
            cache: Mutex::new(Cache::new(cache::CAPACITY)),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The TXT name to ask, and whether its answer must validate, if the address's domain opted
    /// in and discovery is enabled.
    fn txt_name(&self, key: &str) -> Option<(String, bool)> {
        let (_, domain) = key.rsplit_once('@')?;
        if self.lookup.is_none() || !self.domains.contains(domain) {
            return None;
        }
        Some((dns::txt_name(key)?, self.secure_domains.contains(domain)))
    }

    /// The cached answer for `name`, or the answer of a lookup started (or joined) now, if it
    /// arrives within `wait`. A late answer still lands in the cache for the next request.
    async fn route(
        this: &Arc<Discovery>,
        name: &str,
        secure: bool,
        wait: Option<Duration>,
    ) -> Route {
        let lookup = match &this.lookup {
            None => return Route::NotTox,
            Some(Err(e)) => return Route::TempFail(e.to_string()),
            Some(Ok(lookup)) => lookup,
        };
        if let Some(route) = this.cached(name) {
            return route;
        }
        let mut answer = {
            let mut in_flight = this.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            // Checked again under the lock: a lookup that just finished has filled the cache
            // before leaving `in_flight`.
            if let Some(route) = this.cached(name) {
                return route;
            }
            match in_flight.get(name) {
                Some(answer) => answer.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    in_flight.insert(name.to_string(), rx.clone());
                    let task =
                        Discovery::run(this.clone(), lookup.clone(), name.to_string(), secure, tx);
                    tokio::spawn(task);
                    rx
                }
            }
        };
        let done = answer.wait_for(Option::is_some);
        let outcome = match wait {
            Some(limit) => tokio::time::timeout(limit, done).await.ok(),
            None => Some(done.await),
        };
        match outcome {
            Some(Ok(route)) => route.clone().unwrap_or(Route::NotTox),
            Some(Err(_)) => {
                // The lookup task died without answering: forget it so the next request
                // starts a new one instead of joining a dead one forever.
                let mut in_flight = this.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                in_flight.remove(name);
                Route::TempFail(format!("DNS lookup of {name} was abandoned"))
            }
            None => Route::TempFail(format!("DNS lookup of {name} in progress")),
        }
    }

    fn cached(&self, name: &str) -> Option<Route> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(name, Instant::now())
    }

    async fn run(
        this: Arc<Discovery>,
        lookup: TxtLookup,
        name: String,
        secure: bool,
        tx: watch::Sender<Option<Route>>,
    ) {
        let answer = if secure {
            lookup.lookup_secure(&name).await
        } else {
            lookup.lookup(&name).await
        };
        let (route, ttl) = this.decide(&name, answer);
        tracing::debug!(%name, %route, ?ttl, "DNS discovery");
        let mut cache = this.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(name.clone(), route.clone(), ttl, Instant::now());
        drop(cache);
        let mut in_flight = this.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight.remove(&name);
        drop(in_flight);
        let _ = tx.send(Some(route));
    }

    /// The route an answer means, and how long to keep it.
    fn decide(&self, name: &str, answer: Result<TxtAnswer, LookupError>) -> (Route, Duration) {
        let config = &self.config;
        let bound = |ttl: Duration| ttl.max(MIN_CACHE_TTL).min(config.max_ttl);
        match answer {
            Ok(TxtAnswer::Records { records, ttl }) => {
                let route = match record::select(&records) {
                    Selection::Found(found) => Route::Tox {
                        peer: found.id,
                        source: RouteSource::Dns,
                        relays: found.relays,
                    },
                    Selection::Unusable(why) => Route::Invalid(format!("{why} at {name}")),
                };
                (route, bound(ttl))
            }
            Ok(TxtAnswer::Absent { ttl }) => {
                let ttl = ttl.map_or(config.negative_ttl, |t| t.min(config.negative_ttl));
                (Route::NotTox, bound(ttl))
            }
            Err(e) => (
                Route::TempFail(format!("{e} ({name})")),
                config.temp_fail_ttl.min(config.max_ttl),
            ),
        }
    }
}
