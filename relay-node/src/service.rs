//! The running relay: a Tox node whose transfer engine takes deposits through [`RelayInbox`]
//! (policy, quota, durable store, then custody), and a loop that hands held envelopes to their
//! registered recipients when they are online (a few at a time: [`crate::hand_on`]), deletes each
//! after the recipient's ack (owing its depositor a `Released` receipt, sent when the depositor
//! is online), and purges what expired.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tox_runtime::transfer::{
    Courier, DepositRefusal, FriendPolicy, Inbox, PeerEvent, Refusal, TransferConfig,
};
use tox_runtime::{BootstrapNode, Node, Options, service_manager};
use toxmail_protocol::{
    Deposit, Holding, MessageId, NackClass, NackCode, PublicKey, REGISTER_SUBJECT, Refuse,
    RelayFrame, RelayRefusal, Released,
};

use crate::config::Config;
use crate::hand_on::{Budget, HandOn};
use crate::metrics;
use crate::registrar::RegisterLimiter;
use crate::store::{DepositLimits, Held, HoldRefusal, Limit, Store, StoreError};

/// The window of `registrations_per_hour`.
const REGISTER_WINDOW: Duration = Duration::from_secs(3600);

/// Keys the registration limiter remembers: room for every registered recipient to renew and as
/// many others to ask, so newcomers are refused by the store's cap (with its reason) before the
/// limiter's table fills; at least 1024.
fn limiter_capacity(max_registrations: u32) -> usize {
    (max_registrations as usize).saturating_mul(2).max(1024)
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("tox: {0}")]
    Tox(#[from] tox_runtime::RuntimeError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("binding the metrics listener on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("key file {} can be read by group or others (mode {mode:o}): chmod 600 it", path.display())]
    KeyFileMode { path: PathBuf, mode: u32 },
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the relay accepts: who may deposit, how large, how long, how much.
#[derive(Clone, Debug)]
pub struct Policy {
    /// `None`: open to anyone who knows the relay's Tox ID.
    pub depositors: Option<HashSet<PublicKey>>,
    pub max_envelope: u64,
    pub max_hold_secs: u64,
    pub limits: DepositLimits,
    /// Hold mail only for recipients with a registration in force.
    pub registered_only: bool,
    /// Registrations in force at once.
    pub max_registrations: u32,
    /// `Register` frames one key may send per hour.
    pub registrations_per_hour: u32,
}

impl Policy {
    pub fn from_config(config: &Config) -> Policy {
        let p = &config.policy;
        Policy {
            depositors: config
                .allowed_depositors()
                .map(|keys| keys.into_iter().collect()),
            max_envelope: p.max_envelope_bytes,
            max_hold_secs: p.max_hold_secs,
            limits: DepositLimits {
                daily_count: p.daily_count,
                daily_bytes: p.daily_bytes,
                recipient_bytes: p.recipient_bytes,
                total_bytes: p.total_bytes,
            },
            registered_only: p.registered_recipients_only,
            max_registrations: p.max_registrations,
            registrations_per_hour: p.registrations_per_hour,
        }
    }

    /// The refusal a deposit gets before any store lookup, if any.
    fn judge(&self, from: &PublicKey, d: &Deposit) -> Option<DepositRefusal> {
        if self.depositors.as_ref().is_some_and(|k| !k.contains(from)) {
            let detail = "this relay takes deposits only from its allow-list";
            return Some(DepositRefusal::new(RelayRefusal::NotAllowed, detail));
        }
        if d.size > self.max_envelope {
            let detail = format!(
                "{} bytes exceed this relay's limit of {}",
                d.size, self.max_envelope
            );
            return Some(DepositRefusal::new(RelayRefusal::TooLarge, detail));
        }
        if d.expires <= now() {
            return Some(DepositRefusal::new(
                RelayRefusal::Malformed,
                "deposit already expired",
            ));
        }
        None
    }

    /// The deposit's own expiry, shortened to the relay's longest holding time.
    fn hold_until(&self, d: &Deposit) -> u64 {
        d.expires.min(now().saturating_add(self.max_hold_secs))
    }
}

fn store_failure(e: &StoreError) -> DepositRefusal {
    tracing::warn!(error = %e, "store unavailable for a deposit");
    DepositRefusal::new(RelayRefusal::StorageFailure, "relay storage unavailable")
}

/// The recipient already has an envelope under this id from another depositor: a message id is
/// the sealer's choice, and one depositor's must not stand for (or hide) another's.
fn id_taken() -> DepositRefusal {
    DepositRefusal::new(
        RelayRefusal::NotAllowed,
        "another depositor's envelope is held for this recipient under this id",
    )
}

/// The refusal for a deposit over `limit`; the relay's total is also logged for the operator.
fn over_quota(limit: Limit, limits: &DepositLimits) -> DepositRefusal {
    metrics::quota_refusal(metrics::quota_label(limit));
    let detail = match limit {
        Limit::DailyCount => "daily deposit count reached; try later or another relay",
        Limit::DailyBytes => "daily deposit volume reached; try later or another relay",
        Limit::RecipientBytes => "the recipient's mailbox at this relay is full",
        Limit::TotalBytes => {
            tracing::warn!(
                total_bytes = limits.total_bytes,
                "relay full (policy.total_bytes): deposits refused until deliveries or expiry free space"
            );
            "this relay is full; try later or another relay"
        }
    };
    DepositRefusal::new(limit.code(), detail)
}

fn not_registered() -> DepositRefusal {
    DepositRefusal::new(
        RelayRefusal::NotAllowed,
        "this relay holds mail only for recipients registered with it",
    )
}

/// The transfer engine's view of the relay's mailbox.
#[derive(Clone, Debug)]
pub struct RelayInbox {
    store: Store,
    policy: Arc<Policy>,
    /// Recipients that just got an envelope, so the loop can hand it on if they are online.
    deposited: mpsc::UnboundedSender<PublicKey>,
}

impl RelayInbox {
    /// `deposited` hears the recipient key of every envelope stored (see [`Mailroom::serve`]).
    pub fn new(
        store: Store,
        policy: Arc<Policy>,
        deposited: mpsc::UnboundedSender<PublicKey>,
    ) -> RelayInbox {
        RelayInbox {
            store,
            policy,
            deposited,
        }
    }

    /// Under `registered_only`, the refusal of a deposit for a recipient without a registration
    /// in force.
    async fn unregistered(&self, recipient: &PublicKey) -> Option<DepositRefusal> {
        if !self.policy.registered_only {
            return None;
        }
        match self.store.is_registered(recipient).await {
            Ok(true) => None,
            Ok(false) => Some(not_registered()),
            Err(e) => Some(store_failure(&e)),
        }
    }
}

impl Inbox for RelayInbox {
    async fn contains(&self, _from: PublicKey, _id: MessageId) -> bool {
        false
    }

    async fn store(&self, _from: PublicKey, _id: MessageId, _env: Vec<u8>) -> Result<(), Refusal> {
        Err(Refusal::new(
            NackCode::WrongRecipient,
            "this is a relay node: it holds mail only as deposits",
        ))
    }

    async fn check_deposit(
        &self,
        from: PublicKey,
        d: Deposit,
    ) -> Result<Option<u64>, DepositRefusal> {
        let checked = self.judge_deposit(from, d).await;
        match &checked {
            Ok(Some(_)) => metrics::deposit("duplicate"),
            Ok(None) => {}
            Err(_) => metrics::deposit("refused"),
        }
        checked
    }

    async fn store_deposit(
        &self,
        from: PublicKey,
        d: Deposit,
        envelope: Vec<u8>,
    ) -> Result<u64, DepositRefusal> {
        let stored = self.hold_deposit(from, d, envelope).await;
        metrics::deposit(if stored.is_ok() { "stored" } else { "refused" });
        stored
    }
}

impl RelayInbox {
    async fn judge_deposit(
        &self,
        from: PublicKey,
        d: Deposit,
    ) -> Result<Option<u64>, DepositRefusal> {
        if let Some(refusal) = self.policy.judge(&from, &d) {
            return Err(refusal);
        }
        if let Some(refusal) = self.unregistered(&d.recipient).await {
            return Err(refusal);
        }
        match self.store.held_by(&d.recipient, &d.message_id).await {
            Ok(Some((by, expires))) if by == from => return Ok(Some(expires)),
            Ok(Some(_)) => return Err(id_taken()),
            Ok(None) => {}
            Err(e) => return Err(store_failure(&e)),
        }
        let limits = self.policy.limits;
        match self
            .store
            .quota_refusal(&from, &d.recipient, d.size, limits)
            .await
        {
            Ok(None) => Ok(None),
            Ok(Some(limit)) => Err(over_quota(limit, &limits)),
            Err(e) => Err(store_failure(&e)),
        }
    }

    async fn hold_deposit(
        &self,
        from: PublicKey,
        d: Deposit,
        envelope: Vec<u8>,
    ) -> Result<u64, DepositRefusal> {
        if let Some(refusal) = self.policy.judge(&from, &d) {
            return Err(refusal);
        }
        if let Some(refusal) = self.unregistered(&d.recipient).await {
            return Err(refusal);
        }
        let held = Held {
            message_id: d.message_id,
            recipient: d.recipient,
            envelope,
            expires: self.policy.hold_until(&d),
        };
        match self.store.hold(&held, &from, self.policy.limits).await {
            Ok(Ok(expires)) => {
                let _ = self.deposited.send(d.recipient);
                Ok(expires)
            }
            Ok(Err(HoldRefusal::IdTaken)) => Err(id_taken()),
            Ok(Err(HoldRefusal::Over(limit))) => Err(over_quota(limit, &self.policy.limits)),
            Err(e) => Err(store_failure(&e)),
        }
    }
}

/// Node settings from the [tox] and [relay] sections.
pub fn node_options(config: &Config) -> Result<Options, RelayError> {
    let mut o = Options::new();
    o.ipv6 = config.tox.ipv6;
    o.local_discovery = config.tox.local_discovery;
    o.start_port = config.tox.port_range[0];
    o.end_port = config.tox.port_range[1];
    o.bootstrap = config
        .tox
        .bootstrap
        .iter()
        .map(|b| BootstrapNode {
            addr: b.address,
            dht_key: b.key.parse().expect("validated at load"),
        })
        .collect();
    let mut o = o
        .savedata(config.relay.state_dir.join("relay.tox"))
        .name("toxmail relay");
    if let Some(path) = key_file(config)? {
        // Moved into the options, which wipe it on drop; this copy is wiped here.
        o = o.passphrase(read_key_file(&path)?.to_vec());
    }
    Ok(o)
}

/// The key file the relay's savedata is encrypted with: `relay.key_file`, else
/// `<state_dir>/relay.key`, which a fresh relay generates (random, mode 0600) at its first start.
/// A relay that already has plaintext savedata and no key file keeps running unencrypted (with
/// a warning): encrypting it needs the operator's key file.
fn key_file(config: &Config) -> Result<Option<PathBuf>, RelayError> {
    if let Some(path) = &config.relay.key_file {
        return Ok(Some(path.clone()));
    }
    let path = config.relay.state_dir.join("relay.key");
    if path.exists() {
        return Ok(Some(path));
    }
    if config.relay.state_dir.join("relay.tox").exists() {
        tracing::warn!("relay savedata is not encrypted: set relay.key_file");
        return Ok(None);
    }
    let io = |source| RelayError::File {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&config.relay.state_dir).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    let key = zeroize::Zeroizing::new(toxmail_protocol::MessageId::random().to_string());
    file.write_all(key.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    tracing::info!(path = %path.display(), "generated the key file that encrypts the relay's savedata");
    Ok(Some(path))
}

/// The passphrase in a key file only its owner may read; wiped from memory when dropped.
fn read_key_file(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, RelayError> {
    let io = |source| RelayError::File {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(RelayError::KeyFileMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    std::fs::read(path).map(zeroize::Zeroizing::new).map_err(io)
}

/// Where `run` writes the relay's Tox ID and DHT contact for `status` and operators.
pub fn id_file(config: &Config) -> PathBuf {
    config.relay.state_dir.join("relay.id")
}

/// Runs the relay until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RelayError> {
    tox_runtime::libtoxcore::log_at_start();
    let store = Store::connect(&config.database.url, config.database.max_connections)?;
    // At boot the database may still be starting: wait rather than exit into a restart loop.
    let migrate = async || store.migrate().await;
    let waited =
        service_manager::wait_for("the database", &shutdown, StoreError::is_temporary, migrate);
    if waited.await?.is_none() {
        return Ok(());
    }
    let metrics_listener = tox_runtime::exporter::bind(&config.metrics.listen)
        .await
        .map_err(|source| RelayError::Bind {
            addr: config.metrics.listen.clone(),
            source,
        })?;
    let state_dir = &config.relay.state_dir;
    std::fs::create_dir_all(state_dir).map_err(|source| RelayError::File {
        path: state_dir.clone(),
        source,
    })?;
    let node = Node::start(node_options(&config)?).await?;
    let info = node.info;
    let contact = format!(
        "tox_id {}\ndht_key {}\nudp_port {}\n",
        info.address,
        info.dht_key,
        info.udp_port.unwrap_or(0)
    );
    tox_runtime::write_atomically(&id_file(&config), contact.as_bytes()).map_err(|source| {
        RelayError::File {
            path: id_file(&config),
            source,
        }
    })?;
    tracing::info!(tox_id = %info.address, dht_key = %info.dht_key, udp_port = ?info.udp_port,
        "relay running; depositors befriend the Tox ID, DHT nodes may bootstrap from the key and port");

    let policy = Arc::new(Policy::from_config(&config));
    let (deposited_tx, deposited_rx) = mpsc::unbounded_channel();
    let inbox = RelayInbox::new(store.clone(), policy.clone(), deposited_tx);
    let mut transfer = TransferConfig::new(state_dir.join("spool"));
    transfer.max_envelope = policy.max_envelope;
    transfer.friend_policy = FriendPolicy::AnyoneWithAddress;
    transfer.request_note = "relay".into();
    let (courier, task) = Courier::start(node, inbox, transfer);
    let purge = Duration::from_secs(config.policy.purge_interval_secs);
    metrics::touch(policy.limits.total_bytes);
    let watching = tokio::spawn(watch(store.clone(), shutdown.clone()));
    if let Some(listener) = metrics_listener {
        let exporter = exporter(&courier);
        tokio::spawn(tox_runtime::exporter::serve(
            listener,
            exporter,
            shutdown.clone(),
        ));
    }
    service_manager::ready(&format!("relay {} running", info.address));
    Mailroom::new(store, courier, policy)
        .serve(deposited_rx, purge, shutdown)
        .await;
    let _ = watching.await;
    task.shutdown().await;
    Ok(())
}

/// How often the relay reads its holdings and checks the database for metrics and readiness.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// Samples what the relay holds into its gauges and watches the database.
async fn watch(store: Store, shutdown: CancellationToken) {
    let mut database = metrics::DatabaseWatch::default();
    loop {
        match store.status().await {
            Ok(status) => {
                metrics::holding(&status);
                database.observe(Ok(()));
            }
            Err(e) => database.observe(Err(e.to_string())),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
    }
}

/// `/metrics` with the node's Tox families, and `/readyz`: database up and the node connected.
fn exporter(courier: &Courier) -> tox_runtime::exporter::Exporter {
    let node = courier.clone();
    let status = move || format!("node {}\n", tox_runtime::metrics::node_line(&node));
    tox_runtime::exporter::Exporter::for_nodes(
        "relay",
        env!("CARGO_PKG_VERSION"),
        vec![courier.clone()],
        metrics::database_up,
        Arc::new(status),
    )
}

/// The release side: who is online, what is on its way, and the handing on itself. The relay
/// runs one; a bridge that serves its friends as a relay runs one per identity.
#[derive(Debug)]
pub struct Mailroom {
    store: Store,
    courier: Courier,
    policy: Arc<Policy>,
    online: HashSet<PublicKey>,
    /// The envelopes on their way to online recipients.
    hand_on: HandOn,
    registrations: RegisterLimiter,
    /// Depositors just owed a receipt (the hand-on's), so the loop can send it if they are online.
    released_rx: Option<mpsc::UnboundedReceiver<PublicKey>>,
}

impl Mailroom {
    /// With the process's shared hand-on budget ([`Budget::shared`]).
    pub fn new(store: Store, courier: Courier, policy: Arc<Policy>) -> Mailroom {
        Mailroom::with_budget(store, courier, policy, Budget::shared())
    }

    pub fn with_budget(
        store: Store,
        courier: Courier,
        policy: Arc<Policy>,
        budget: Arc<Budget>,
    ) -> Mailroom {
        let (released, released_rx) = mpsc::unbounded_channel();
        Mailroom {
            hand_on: HandOn::new(store.clone(), courier.clone(), budget, released),
            released_rx: Some(released_rx),
            store,
            courier,
            online: HashSet::new(),
            registrations: RegisterLimiter::new(
                policy.registrations_per_hour,
                REGISTER_WINDOW,
                limiter_capacity(policy.max_registrations),
            ),
            policy,
        }
    }

    /// Registrations, hand-on and purge until `shutdown`; `deposited` comes from the
    /// [`RelayInbox`] of the same courier.
    pub async fn serve(
        mut self,
        mut deposited: mpsc::UnboundedReceiver<PublicKey>,
        purge_every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut events = self.courier.subscribe();
        let mut purge = tokio::time::interval(purge_every);
        let mut released = self.released_rx.take().expect("serve runs once");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(event) = events.recv() => self.on_event(event).await,
                Some(depositor) = released.recv() => {
                    if self.online.contains(&depositor) {
                        self.send_receipts(depositor).await;
                    }
                }
                Some(recipient) = deposited.recv() => {
                    if self.online.contains(&recipient) && self.is_registered(&recipient).await {
                        self.release(recipient);
                    }
                }
                _ = purge.tick() => match self.store.purge_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "expired envelopes deleted"),
                    Err(e) => tracing::warn!(error = %e, "purge failed; will retry"),
                },
            }
        }
    }

    async fn is_registered(&self, pk: &PublicKey) -> bool {
        match self.store.is_registered(pk).await {
            Ok(registered) => registered,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read registrations");
                false
            }
        }
    }

    async fn on_event(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Online(pk) => {
                self.online.insert(pk);
                self.send_receipts(pk).await;
                if self.is_registered(&pk).await {
                    self.release(pk);
                }
            }
            PeerEvent::Offline(pk) => {
                self.online.remove(&pk);
                self.hand_on.stop(&pk);
            }
            PeerEvent::Relay {
                from,
                frame: RelayFrame::Register(reg),
            } => self.register(from, reg.expires).await,
            PeerEvent::Relay { from, frame } => {
                tracing::debug!(peer = %from, ?frame, "relay frame not acted on")
            }
            PeerEvent::Relayed { .. } | PeerEvent::Receipt { .. } => {}
        }
    }

    async fn register(&mut self, from: PublicKey, asked: u64) {
        if let Err(e) = self.registrations.admit(from, Instant::now()) {
            tracing::info!(reason = %e, "registration refused (policy.registrations_per_hour)");
            return self.refuse_registration(from, e.to_string()).await;
        }
        let expires = asked.min(now().saturating_add(self.policy.max_hold_secs));
        let max = self.policy.max_registrations;
        match self.store.register(&from, expires, max).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    max_registrations = max,
                    "registration of a new recipient refused: policy.max_registrations in force"
                );
                let detail = "this relay takes no more recipients now; try later or another relay";
                return self.refuse_registration(from, detail.into()).await;
            }
            Err(e) => {
                tracing::warn!(peer = %from, error = %e, "registration not recorded");
                return;
            }
        }
        let (count, bytes) = self.store.holdings(&from).await.unwrap_or((0, 0));
        tracing::info!(peer = %from, expires, count, bytes, "recipient registered");
        let holding = RelayFrame::Holding(Holding {
            expires: if expires > now() { expires } else { 0 },
            count,
            bytes,
        });
        self.courier.send_relay_frame(from, holding).await;
        if expires > now() {
            self.online.insert(from);
            self.release(from);
        }
    }

    /// Tells `to` its `Register` was not taken (a temporary `QuotaCount` refusal of
    /// [`REGISTER_SUBJECT`]); a registration it had stays as it was.
    async fn refuse_registration(&self, to: PublicKey, detail: String) {
        metrics::quota_refusal("registrations");
        let frame = RelayFrame::Refuse(Refuse {
            message_id: REGISTER_SUBJECT,
            class: NackClass::Temporary,
            code: RelayRefusal::QuotaCount,
            detail,
        });
        self.courier.send_relay_frame(to, frame).await;
    }

    /// Sends `depositor` the receipts it is owed; each is forgotten once handed to Tox. One that
    /// does not go out stays for the depositor's next visit.
    async fn send_receipts(&self, depositor: PublicKey) {
        let receipts = match self.store.receipts_for(&depositor).await {
            Ok(r) => r,
            Err(e) => return tracing::warn!(peer = %depositor, error = %e, "cannot read receipts"),
        };
        for r in receipts {
            let frame = RelayFrame::Released(Released {
                message_id: r.message_id,
                outcome: r.outcome,
            });
            if !self.courier.send_relay_frame(depositor, frame).await {
                return tracing::info!(peer = %depositor, "receipt not sent; kept for later");
            }
            tracing::info!(peer = %depositor, id = %r.message_id, outcome = ?r.outcome, "receipt sent");
            if let Err(e) = self.store.receipt_sent(&depositor, &r.message_id).await {
                tracing::warn!(id = %r.message_id, error = %e, "sent receipt not forgotten; may be sent again");
            }
        }
    }

    /// Hands what is held for `recipient` to it, a page at a time (see [`crate::hand_on`]).
    fn release(&self, recipient: PublicKey) {
        self.hand_on.start(recipient);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deposit(size: u64, expires: u64) -> Deposit {
        Deposit {
            message_id: MessageId([1; 32]),
            recipient: PublicKey([2; 32]),
            size,
            expires,
        }
    }

    #[test]
    fn the_key_file_is_read_into_memory_wiped_on_drop_and_only_when_owner_only() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.key");
        std::fs::write(&path, b"relay passphrase").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pass = read_key_file(&path).unwrap();
        wiped_on_drop(&pass);
        assert_eq!(&pass[..], b"relay passphrase");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            read_key_file(&path),
            Err(RelayError::KeyFileMode { .. })
        ));
    }

    #[test]
    fn policy_refuses_strangers_to_a_closed_relay_large_and_expired_deposits_and_caps_holding() {
        let friend = PublicKey([3; 32]);
        let policy = Policy {
            depositors: Some(HashSet::from([friend])),
            max_envelope: 1000,
            max_hold_secs: 60,
            limits: DepositLimits {
                daily_count: 1,
                daily_bytes: 1,
                recipient_bytes: 1,
                total_bytes: 1,
            },
            registered_only: true,
            max_registrations: 1,
            registrations_per_hour: 1,
        };
        let later = now() + 3600;
        let code = |from: PublicKey, d: Deposit| policy.judge(&from, &d).map(|r| (r.code, r.class));
        assert_eq!(code(friend, deposit(1000, later)), None);
        assert_eq!(
            code(PublicKey([4; 32]), deposit(10, later)),
            Some((RelayRefusal::NotAllowed, NackClass::Permanent))
        );
        assert_eq!(
            code(friend, deposit(1001, later)),
            Some((RelayRefusal::TooLarge, NackClass::Permanent))
        );
        assert_eq!(
            code(friend, deposit(10, now().saturating_sub(1))),
            Some((RelayRefusal::Malformed, NackClass::Permanent))
        );
        let held = policy.hold_until(&deposit(10, later));
        assert!(held <= now() + 60, "holding time capped at max_hold_secs");
        let open = Policy {
            depositors: None,
            ..policy.clone()
        };
        assert_eq!(open.judge(&PublicKey([4; 32]), &deposit(10, later)), None);
    }
}
