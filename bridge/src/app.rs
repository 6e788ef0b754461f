//! Wiring: binds the sockets, starts one Tox node and courier per identity, the directory
//! refresher, the dispatcher, the injector, the socketmap and the LMTP server, and stops them all
//! when `shutdown` is cancelled. `run` takes bound listeners so tests can bind port 0.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tox_runtime::service_manager;
use tox_runtime::transfer::{Courier, CourierTask, FriendPolicy, TransferConfig};

use crate::config::{Config, FriendPolicySetting, ListenAddr, parse_listen};
use crate::delivery::inbound::admission::SiteView;
use crate::delivery::inbound::{BridgeInbox, InboundContext, run_injector};
use crate::delivery::notify::Notifier;
use crate::delivery::outbound::Dispatcher;
use crate::delivery::presence;
use crate::delivery::via_relay::{self, RelaySettings};
use crate::events::publisher::Publisher;
use crate::health;
use crate::identity::{self, DEFAULT_IDENTITY};
use crate::intake::BridgeIntake;
use crate::postfix::{lmtp, milter, socket, socketmap};
use crate::resolve::{Resolver, ResolverConfig, normalise};
use crate::roster::{self, Roster};
use crate::store::lease::{Acquired, LeaseKeeper, Owner, Renewal};
use crate::store::{IdentityRow, Store, StoreError};
use toxmail_protocol::{SecretKey, public_key_of};
use toxmail_relay::service::{Mailroom, Policy as RelayPolicy, RelayInbox};
use toxmail_relay::store::Store as RelayStore;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("binding {0}: {1}")]
    Socket(&'static str, socket::SocketError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("{0}")]
    Ports(String),
    #[error("relay service: {0}")]
    RelayStore(#[from] toxmail_relay::store::StoreError),
    #[error(
        "another bridge took the leases of {0}: this one stopped so that only that one acts \
         for them (started again, it waits as a standby)"
    )]
    LeaseLost(String),
}

/// The sockets Postfix talks to.
#[derive(Debug)]
pub struct Listeners {
    pub socketmap: socketmap::Listener,
    pub lmtp: lmtp::Listener,
    pub milter: Option<milter::Listener>,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: Option<tokio::net::TcpListener>,
}

async fn bind_one(what: &'static str, addr: &str) -> Result<ListenAddrBound, AppError> {
    let err = |source| AppError::Bind {
        what,
        addr: addr.to_string(),
        source,
    };
    match parse_listen(addr).map_err(|m| err(std::io::Error::other(m)))? {
        ListenAddr::Tcp(a) => Ok(ListenAddrBound::Tcp(
            tokio::net::TcpListener::bind(a).await.map_err(err)?,
        )),
        ListenAddr::Unix(p) => Ok(ListenAddrBound::Unix(
            socket::bind(&p).map_err(|e| AppError::Socket(what, e))?,
        )),
    }
}

enum ListenAddrBound {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Listeners, AppError> {
        let socketmap = match bind_one("socketmap", &config.socketmap.listen).await? {
            ListenAddrBound::Tcp(l) => socketmap::Listener::Tcp(l),
            ListenAddrBound::Unix(l) => socketmap::Listener::Unix(l),
        };
        let lmtp = match bind_one("lmtp", &config.lmtp.listen).await? {
            ListenAddrBound::Tcp(l) => lmtp::Listener::Tcp(l),
            ListenAddrBound::Unix(l) => lmtp::Listener::Unix(l),
        };
        let milter = match config.milter.listen.as_str() {
            "" => None,
            addr => Some(match bind_one("milter", addr).await? {
                ListenAddrBound::Tcp(l) => milter::Listener::Tcp(l),
                ListenAddrBound::Unix(l) => milter::Listener::Unix(l),
            }),
        };
        let metrics = tox_runtime::exporter::bind(&config.metrics.listen)
            .await
            .map_err(|source| AppError::Bind {
                what: "metrics",
                addr: config.metrics.listen.clone(),
                source,
            })?;
        Ok(Listeners {
            socketmap,
            lmtp,
            milter,
            metrics,
        })
    }
}

pub fn resolver_config(config: &Config) -> ResolverConfig {
    ResolverConfig {
        dns_domains: config
            .resolver
            .dns_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        nameservers: config.resolver.nameservers.clone(),
        recipient_delimiter: config.resolver.recipient_delimiter.clone(),
        pin_dns_keys: config.resolver.pin_dns_keys,
        dnssec_domains: config
            .resolver
            .dnssec_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        trust_anchor: config.resolver.trust_anchor.clone(),
        ..ResolverConfig::default()
    }
}

/// Every identity the database lists. The site's default identity is made on the first run,
/// when the database has none: the one time `run` creates keys. Any other identity comes from
/// `identity add`, and a listed identity without its savedata stops the bridge.
async fn identities(config: &Config, store: &Store) -> Result<Vec<IdentityRow>, AppError> {
    let mut rows = store.identities().await?;
    // Before making any key: a state_dir that lost listed identities is the wrong one.
    for row in &rows {
        let path = identity::savedata_path(&config.bridge.state_dir, &row.address);
        if !path.is_file() {
            let address = row.address.clone();
            return Err(identity::IdentityError::Missing { address, path }.into());
        }
    }
    if !rows.iter().any(|r| r.address == DEFAULT_IDENTITY) {
        let id = identity::create(config, DEFAULT_IDENTITY).await?;
        store.add_identity(DEFAULT_IDENTITY, &id).await?;
        rows = store.identities().await?;
    }
    Ok(rows)
}

/// What admission knows of the site: its domains, and each identity's public key by its
/// normalised address.
fn site_view(config: &Config, keys: &HashMap<String, SecretKey>) -> SiteView {
    let delimiter = config.resolver.recipient_delimiter.clone();
    let identities = keys
        .iter()
        .map(|(address, secret)| {
            let key = normalise(address, delimiter.as_deref()).unwrap_or_else(|| address.clone());
            (key, public_key_of(secret))
        })
        .collect();
    SiteView {
        local_domains: config.local_domains(),
        delimiter,
        identities,
    }
}

/// How often a site that relays for its friends purges what expired.
const RELAY_PURGE: Duration = Duration::from_secs(60);

/// `[relays].serve_friends`: the relay service's store (its own tables in this database, migrated
/// here) and its policy: any friend may deposit for a friend registered with the site, within
/// the relay's default quotas (total and registration bounds included).
async fn serve_friends(
    config: &Config,
) -> Result<Option<(RelayStore, Arc<RelayPolicy>)>, AppError> {
    if !config.relays.serve_friends {
        return Ok(None);
    }
    let store = RelayStore::connect(&config.database.url, 4)?;
    store.migrate().await?;
    let defaults = toxmail_relay::config::PolicySection::default();
    let policy = RelayPolicy {
        depositors: None,
        max_envelope: config.max_envelope(),
        max_hold_secs: config.relays.serve_hold_secs,
        limits: toxmail_relay::store::DepositLimits {
            daily_count: defaults.daily_count,
            daily_bytes: defaults.daily_bytes,
            recipient_bytes: defaults.recipient_bytes,
            total_bytes: defaults.total_bytes,
        },
        registered_only: defaults.registered_recipients_only,
        max_registrations: defaults.max_registrations,
        registrations_per_hour: defaults.registrations_per_hour,
    };
    tracing::info!(hold_secs = policy.max_hold_secs, "relaying for friends");
    Ok(Some((store, Arc::new(policy))))
}

/// At boot the database may still be starting: waits until it answers (false: told to stop
/// first) rather than exit into a restart loop. `main` binds the listeners only afterwards, so
/// meanwhile Postfix's lookups are refused at once (a temporary failure) instead of hanging.
pub async fn wait_for_database(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<bool, AppError> {
    let store = Store::connect(&config.database.url, 1)?;
    let database = async || store.ping().await;
    let waited =
        service_manager::wait_for("the database", shutdown, StoreError::is_temporary, database);
    Ok(waited.await?.is_some())
}

/// What this bridge took before it may serve: the lease of every identity of the site, and
/// those identities.
#[derive(Debug)]
pub struct Leased {
    keeper: LeaseKeeper,
    rows: Vec<IdentityRow>,
}

/// Takes the lease of every identity, waiting as a standby while another bridge on the same
/// database holds them (polling every third of a lease). `None`: told to stop while waiting.
/// Only a bridge with the leases starts its Tox nodes, binds its sockets and touches the queue.
pub async fn take_leases(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<Leased>, AppError> {
    let store = Store::connect(&config.database.url, 1)?;
    let name = format!("{} pid {}", config.bridge.hostname, std::process::id());
    let mut keeper = LeaseKeeper::new(&store, Owner::random(), &name, config.lease());
    let poll = config.lease() / 3;
    let mut told: Option<String> = None;
    loop {
        let attempt = async {
            let rows = identities(config, &store).await?;
            let addresses: Vec<String> = rows.iter().map(|r| r.address.clone()).collect();
            Ok::<_, AppError>((keeper.try_acquire(&addresses).await?, rows))
        };
        match attempt.await {
            Ok((Acquired::All(fences), rows)) => {
                let fences: Vec<String> = fences.iter().map(|(i, f)| format!("{i}#{f}")).collect();
                tracing::info!(
                    owner = keeper.owner().as_str(),
                    leases = %fences.join(" "),
                    "took the lease of every identity"
                );
                return Ok(Some(Leased { keeper, rows }));
            }
            Ok((Acquired::Held(holder), _)) => {
                if told.as_deref() != Some(holder.name.as_str()) {
                    let until = crate::admin::utc(holder.expires);
                    tracing::warn!(
                        identity = %holder.identity,
                        holder = %holder.name,
                        until = %until,
                        "standby: another bridge on this database holds the identities; \
                         taking over when it stops renewing its leases"
                    );
                    service_manager::ready(&format!("standby behind {}", holder.name));
                    told = Some(holder.name);
                }
            }
            Err(AppError::Store(e)) if e.is_temporary() => {
                tracing::warn!(error = %e, "cannot take the identity leases yet");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Renews the leases every third of their length until `stop`. Losing one to another bridge
/// stops this one (`shutdown`) and returns true: from then on the fenced store refuses it
/// everything anyway, and its Tox nodes must not stay online beside the new owner's.
async fn renew_leases(
    keeper: &mut LeaseKeeper,
    stop: CancellationToken,
    shutdown: CancellationToken,
) -> Option<String> {
    let every = keeper.length() / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(every) => {}
        }
        match keeper.renew().await {
            Ok(Renewal::Renewed) => {}
            Ok(Renewal::Lost(identities)) => {
                let lost = identities.join(", ");
                tracing::error!(identities = %lost, "another bridge took this bridge's leases");
                shutdown.cancel();
                return Some(lost);
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot renew the identity leases: they lapse unless renewed in time"
            ),
        }
    }
}

pub async fn run(
    mut config: Config,
    listeners: Listeners,
    leased: Leased,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    tox_runtime::libtoxcore::log_at_start();
    let Leased { mut keeper, rows } = leased;
    let store = Store::connect(&config.database.url, config.database.max_connections)?
        .fenced(keeper.owner());
    let stop_renewing = CancellationToken::new();
    let renewer = {
        let (stop, shutdown) = (stop_renewing.clone(), shutdown.clone());
        tokio::spawn(async move {
            let lost = renew_leases(&mut keeper, stop, shutdown).await;
            (keeper, lost)
        })
    };
    // Before any clone: every copy of the store writes events when `[events]` is on.
    let (store, publisher) = Publisher::setup(&config, store);
    // Each identity binds a UDP port of its own: a range too small is refused before any starts.
    config.tox.port_range = Some(config.tox.ports(rows.len()).map_err(AppError::Ports)?);
    let pass = identity::read_key_file(&config.bridge.key_file)?;
    let mut nodes = Vec::new();
    let mut keys = HashMap::new();
    for row in &rows {
        let address = &row.address;
        let node = identity::start_node(&config, address, &row.tox_id, &pass).await?;
        let secret = node
            .handle
            .secret_key()
            .await
            .map_err(|e| identity::IdentityError::Tox(address.clone(), e))?;
        tracing::info!(identity = %address, tox_id = %node.info.address, "identity online");
        keys.insert(address.clone(), secret);
        nodes.push((address.clone(), node));
    }

    // Admission asks the resolver what the site knows of a sender: load it before any courier.
    let (pin_events, pins_seen) = tokio::sync::mpsc::channel(roster::PIN_EVENTS);
    let resolver = Arc::new(Resolver::with_pin_events(
        resolver_config(&config),
        pin_events,
    ));
    roster::load_resolver(&store, &resolver).await;
    let ctx = Arc::new(InboundContext {
        store: store.clone(),
        hostname: config.bridge.hostname.clone(),
        next_hop: config.next_hop(),
        notice_hop: config.notice_hop(),
        site: site_view(&config, &keys),
        keys: keys.clone(),
        resolver: resolver.clone(),
        sender_mismatch: config.inbound.sender_mismatch,
        contacts_only: config.tox.friend_policy == FriendPolicySetting::Contacts,
        blocked: Default::default(),
        lifetime: config.lifetime(),
        injector: Notify::new(),
    });
    let relay_service = serve_friends(&config).await?;
    let mut mailrooms = Vec::new();
    let mut couriers = HashMap::new();
    let mut tasks: Vec<CourierTask> = Vec::new();
    for (address, node) in nodes {
        let mut tc = TransferConfig::new(config.bridge.state_dir.join("spool").join(&address));
        tc.max_envelope = config.max_envelope();
        tc.strangers = config.tox.stranger_limits();
        tc.spool_max_age = Duration::from_secs(config.tox.spool_max_age_secs);
        tc.spool_max_bytes = config.tox.spool_max_bytes;
        tc.refriend_after = Duration::from_secs(config.tox.refriend_after_secs.max(1));
        if config.tox.friend_policy == FriendPolicySetting::Contacts {
            tc.friend_policy = FriendPolicy::KnownContacts(HashSet::new());
        }
        let (relay, deposited) = match &relay_service {
            Some((store, policy)) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let inbox = RelayInbox::new(store.clone(), policy.clone(), tx);
                (Some(inbox), Some(rx))
            }
            None => (None, None),
        };
        let inbox = BridgeInbox {
            identity: address.clone(),
            ctx: ctx.clone(),
            relay,
        };
        let (courier, task) = Courier::start(node, inbox, tc);
        if let (Some((store, policy)), Some(rx)) = (&relay_service, deposited) {
            let mailroom = Mailroom::new(store.clone(), courier.clone(), policy.clone());
            mailrooms.push((mailroom, rx));
        }
        couriers.insert(address, courier);
        tasks.push(task);
    }

    let relay_settings = Arc::new(RelaySettings::from_config(&config));
    let dispatcher = Arc::new(
        Dispatcher::new(
            store.clone(),
            couriers.clone(),
            Duration::from_secs(config.queue.retry_min_secs),
            Duration::from_secs(config.queue.retry_max_secs),
            relay_settings.clone(),
            config.queue.max_transfers,
        )
        .with_transfer_bytes(config.queue.max_transfer_mib),
    );
    let intake = Arc::new(BridgeIntake {
        resolver: resolver.clone(),
        store: store.clone(),
        keys: keys.clone(),
        unknown_sender: config.bridge.unknown_sender,
        delimiter: config.resolver.recipient_delimiter.clone(),
        lifetime: config.lifetime(),
        dispatcher: dispatcher.clone(),
    });
    let lmtp_config = lmtp::LmtpConfig {
        hostname: config.bridge.hostname.clone(),
        max_message_size: config.lmtp.max_message_size,
        max_recipients: config.lmtp.max_recipients,
        max_connections: config.lmtp.max_connections.max(1),
        transaction_timeout: Duration::from_secs(config.lmtp.transaction_timeout_secs),
        ..lmtp::LmtpConfig::default()
    };

    // Routing, contacts and blocks must be in place before Postfix asks its first question.
    let by_address: HashMap<String, Courier> = couriers
        .iter()
        .map(|(a, c)| (a.clone(), c.clone()))
        .collect();
    let mut roster = Roster::new(store.clone(), resolver.clone(), by_address, ctx.clone());
    roster.load().await;
    let mut set = tokio::task::JoinSet::new();
    set.spawn(roster.run(shutdown.clone()));
    set.spawn(roster::record_pins(
        store.clone(),
        pins_seen,
        shutdown.clone(),
    ));
    set.spawn(dispatcher.clone().run(shutdown.clone()));
    if let Some(publisher) = publisher {
        set.spawn(publisher.run(shutdown.clone()));
    }
    for (mailroom, deposited) in mailrooms {
        set.spawn(mailroom.serve(deposited, RELAY_PURGE, shutdown.clone()));
    }
    for (address, courier) in &couriers {
        let stop = shutdown.clone();
        let follow = presence::follow(address.clone(), courier.clone(), store.clone(), stop);
        set.spawn(follow);
        let (courier, store) = (courier.clone(), store.clone());
        set.spawn(via_relay::agent(
            courier,
            store,
            relay_settings.clone(),
            shutdown.clone(),
        ));
    }
    let notifier = Notifier::new(
        store.clone(),
        config.notice_hop(),
        config.bridge.hostname.clone(),
        Duration::from_secs(config.queue.delay_notice_secs),
        dispatcher.notices.clone(),
    )
    .with_keys(keys);
    set.spawn(notifier.run(shutdown.clone()));
    set.spawn(run_injector(ctx, shutdown.clone()));
    if let Some(listener) = listeners.milter {
        let milter_config = milter::MilterConfig {
            policy: config.milter.policy,
            tox_transport: config.milter.tox_transport.clone(),
            hostname: config.bridge.hostname.clone(),
            notice_hop: config.notice_hop(),
            submission_networks: config.milter.networks(),
            timeout: milter::DEFAULT_TIMEOUT,
        };
        set.spawn(milter::serve(
            listener,
            milter_config,
            resolver.clone(),
            shutdown.clone(),
        ));
    }
    set.spawn(socketmap::serve(
        listeners.socketmap,
        config.socketmap.map_name.clone(),
        resolver,
        config.socketmap_nexthop(),
        shutdown.clone(),
    ));
    set.spawn(lmtp::serve(
        listeners.lmtp,
        lmtp_config,
        intake,
        shutdown.clone(),
    ));
    crate::metrics::touch();
    if let Some(relay) = &relay_service {
        toxmail_relay::metrics::touch(relay.1.limits.total_bytes);
    }
    let retention = crate::retention::Retention::new(config.retention());
    set.spawn(crate::retention::run(
        store.clone(),
        retention,
        shutdown.clone(),
    ));
    set.spawn(health::watch(
        store.clone(),
        relay_service.as_ref().map(|r| r.0.clone()),
        shutdown.clone(),
    ));
    if let Some(listener) = listeners.metrics {
        let exporter = health::exporter(couriers.iter());
        set.spawn(tox_runtime::exporter::serve(
            listener,
            exporter,
            shutdown.clone(),
        ));
    }
    tracing::info!("toxmail-bridge running");
    let count = couriers.len();
    let noun = if count == 1 { "identity" } else { "identities" };
    service_manager::ready(&format!("serving {count} {noun}"));
    while set.join_next().await.is_some() {}
    for task in tasks {
        task.shutdown().await;
    }
    stop_renewing.cancel();
    let (mut keeper, lost) = renewer.await.expect("the lease renewer does not panic");
    if let Some(lost) = lost {
        return Err(AppError::LeaseLost(lost));
    }
    // Nothing of this bridge acts any more: another may take over at once.
    if let Err(e) = keeper.release().await {
        tracing::warn!(error = %e, "cannot give the identity leases back; they lapse by themselves");
    }
    tracing::info!("toxmail-bridge stopped");
    Ok(())
}
