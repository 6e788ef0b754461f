//! Routing decisions: for each recipient, deliver over Tox (and to which peer), leave it to
//! ordinary mail, or refuse it. The socketmap asks; nothing here touches the database, so
//! answers keep coming while it is down.
//!
//! Order: normalise (`address`) → one of our identities → `<ID>@tox` → contacts → DNS discovery
//! for opted-in domains (`dns`, `record`), answered from `cache` → ordinary mail.

pub mod address;
pub mod cache;
pub mod dns;
pub mod record;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use toxmail_protocol::ToxId;

use address::ToxAddress;
pub use address::normalise;
use cache::Cache;
use dns::{LookupError, TxtAnswer, TxtLookup};
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
    pub route: Route,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.address)?;
        if let Some(normalised) = &self.normalised {
            write!(f, " (as {normalised})")?;
        }
        if let Some(name) = &self.dns_name {
            write!(f, " [DNS {name}]")?;
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
}

impl Resolver {
    pub fn new(config: ResolverConfig) -> Resolver {
        Resolver {
            directory: RwLock::new(Arc::new(Directory::default())),
            delimiter: config.recipient_delimiter.clone(),
            discovery: Arc::new(Discovery::new(config)),
        }
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
        explanation.dns_name = self.discovery.txt_name(&key);
        if let Some(name) = &explanation.dns_name {
            explanation.route = Discovery::route(&self.discovery, name, wait).await;
        }
        explanation
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
    /// `None` when discovery is disabled (no nameservers).
    lookup: Option<Result<TxtLookup, LookupError>>,
    cache: Mutex<Cache<Route>>,
    in_flight: Mutex<HashMap<String, watch::Receiver<Option<Route>>>>,
}

impl Discovery {
    fn new(config: ResolverConfig) -> Discovery {
        let domains = config
            .dns_domains
            .iter()
            .map(|d| d.trim_end_matches('.').to_lowercase())
            .collect();
        let lookup = (!config.nameservers.is_empty())
            .then(|| TxtLookup::new(&config.nameservers, config.dns_timeout));
        if let Some(Err(e)) = &lookup {
            tracing::error!(error = %e, "DNS discovery cannot work; opted-in domains get 4.4.3");
        }
        Discovery {
            config,
            domains,
            lookup,
            cache: Mutex::new(Cache::new(cache::CAPACITY)),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The TXT name to ask, if the address's domain opted in and discovery is enabled.
    fn txt_name(&self, key: &str) -> Option<String> {
        let (_, domain) = key.rsplit_once('@')?;
        if self.lookup.is_none() || !self.domains.contains(domain) {
            return None;
        }
        dns::txt_name(key)
    }

    /// The cached answer for `name`, or the answer of a lookup started (or joined) now, if it
    /// arrives within `wait`. A late answer still lands in the cache for the next request.
    async fn route(this: &Arc<Discovery>, name: &str, wait: Option<Duration>) -> Route {
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
                    let task = Discovery::run(this.clone(), lookup.clone(), name.to_string(), tx);
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
        tx: watch::Sender<Option<Route>>,
    ) {
        let (route, ttl) = this.decide(&name, lookup.lookup(&name).await);
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
