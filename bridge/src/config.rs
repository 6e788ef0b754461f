//! The bridge's configuration: one typed struct read from TOML, validated at start-up. Unknown keys
//! are rejected; every error names the file and the key. Defaults sit beside the fields.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toxmail_protocol::{PublicKey, ToxId};

pub const DEFAULT_PATH: &str = "/etc/toxmail/bridge.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub bridge: BridgeSection,
    pub database: DatabaseSection,
    #[serde(default)]
    pub socketmap: SocketmapSection,
    #[serde(default)]
    pub lmtp: LmtpSection,
    #[serde(default)]
    pub milter: MilterSection,
    #[serde(default)]
    pub resolver: ResolverSection,
    #[serde(default)]
    pub tox: ToxSection,
    #[serde(default)]
    pub queue: QueueSection,
    pub inbound: InboundSection,
    /// Delivery events on RabbitMQ (`crate::events`, docs/events.md).
    #[serde(default)]
    pub events: crate::events::EventsSection,
    #[serde(default)]
    pub relays: RelaysSection,
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// The operators' HTTP listener: `/metrics`, `/healthz`, `/readyz` (docs/operations.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `host:port` (TCP only); loopback by default, "" turns the listener off.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

/// Relay nodes (docs/relay.md): the ones that hold our mail while we are offline, and when to
/// deposit a queued copy at the relays of a peer that stays offline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaysSection {
    /// Tox IDs of relays every identity here registers with; told to contacts (`RelayList`) and
    /// printed in the DNS record (`relay=`) by `identity add`.
    #[serde(default)]
    pub register_with: Vec<String>,
    /// A copy still queued this long after it was accepted is deposited at the peer's relays
    /// (learned from its DNS record or its `RelayList`); 0 = never deposit.
    #[serde(default = "default_deposit_after")]
    pub deposit_after_secs: u64,
    /// At most this many of the peer's relays get a copy.
    #[serde(default = "default_max_deposits")]
    pub max_deposits: usize,
    /// How long each registration asks the relay to hold our mail (renewed at every connection).
    #[serde(default = "default_register_secs")]
    pub register_secs: u64,
    /// Opt-in: every identity also holds sealed mail for its Tox friends while they are offline
    /// (the relay service of `toxmail-relay`, its tables in this site's database).
    #[serde(default)]
    pub serve_friends: bool,
    /// Longest a friend's mail is held when `serve_friends` is on.
    #[serde(default = "default_serve_hold")]
    pub serve_hold_secs: u64,
}

fn default_serve_hold() -> u64 {
    7 * 24 * 3600
}

impl Default for RelaysSection {
    fn default() -> Self {
        RelaysSection {
            register_with: Vec::new(),
            deposit_after_secs: default_deposit_after(),
            max_deposits: default_max_deposits(),
            register_secs: default_register_secs(),
            serve_friends: false,
            serve_hold_secs: default_serve_hold(),
        }
    }
}

fn default_deposit_after() -> u64 {
    3600
}

fn default_max_deposits() -> usize {
    2
}

fn default_register_secs() -> u64 {
    30 * 24 * 3600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSection {
    /// Name used in LMTP greetings and Received: lines.
    pub hostname: String,
    /// Tox savedata of each identity and the transfer spool live here.
    pub state_dir: PathBuf,
    /// A file the operator controls; its contents encrypt every identity's savedata at rest.
    pub key_file: PathBuf,
    /// What to do with mail from a local sender who has no Tox identity of their own.
    #[serde(default)]
    pub unknown_sender: UnknownSender,
    /// How long this bridge's leases on its identities last unless renewed (every third of
    /// it): with several bridges on one database, how soon a standby takes over from one that
    /// stopped renewing. A bridge that was killed or lost its connection is noticed sooner.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
}

fn default_lease_secs() -> u64 {
    15
}

/// Bounds of `bridge.lease_secs`: renewals every second at least, takeover within minutes.
const LEASE_SECS: std::ops::RangeInclusive<u64> = 3..=300;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSender {
    /// Send with the site's default identity.
    #[default]
    Default,
    /// Refuse with 550 5.7.1.
    Refuse,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// libpq-style connection string, e.g. "host=/var/run/postgresql dbname=toxmail user=toxmail".
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    16
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketmapSection {
    /// "127.0.0.1:9025" or "unix:/path/to/socket".
    #[serde(default = "default_socketmap_listen")]
    pub listen: String,
    #[serde(default = "default_map_name")]
    pub map_name: String,
    /// The transport:nexthop the socketmap answers for Tox recipients; derived from [lmtp].listen
    /// ("toxlmtp:inet:[127.0.0.1]:2424") when empty.
    #[serde(default)]
    pub nexthop: String,
}

impl Default for SocketmapSection {
    fn default() -> Self {
        SocketmapSection {
            listen: default_socketmap_listen(),
            map_name: default_map_name(),
            nexthop: String::new(),
        }
    }
}

fn default_socketmap_listen() -> String {
    "127.0.0.1:9025".into()
}

fn default_map_name() -> String {
    "transport".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmtpSection {
    /// "unix:/var/spool/postfix/toxmail/lmtp" (preferred: only Postfix may connect) or
    /// "127.0.0.1:2424" (any local user could connect and hand in mail as any identity).
    #[serde(default = "default_lmtp_listen")]
    pub listen: String,
    /// Postfix's `queue_directory`. A socket below it is named to Postfix relative to it
    /// ("unix:toxmail/lmtp"): Postfix daemons run there, chrooted or not, while a chrooted lmtp(8)
    /// would look for an absolute path inside its chroot.
    #[serde(default = "default_postfix_queue_directory")]
    pub postfix_queue_directory: PathBuf,
    #[serde(default = "default_max_message_size")]
    pub max_message_size: u64,
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    /// Connections served at once (Postfix opens up to its destination concurrency, 20).
    #[serde(default = "default_lmtp_connections")]
    pub max_connections: usize,
    /// A whole transaction, MAIL to the final replies, must finish within this many seconds.
    #[serde(default = "default_transaction_timeout")]
    pub transaction_timeout_secs: u64,
}

impl Default for LmtpSection {
    fn default() -> Self {
        LmtpSection {
            listen: default_lmtp_listen(),
            postfix_queue_directory: default_postfix_queue_directory(),
            max_message_size: default_max_message_size(),
            max_recipients: default_max_recipients(),
            max_connections: default_lmtp_connections(),
            transaction_timeout_secs: default_transaction_timeout(),
        }
    }
}

fn default_lmtp_connections() -> usize {
    64
}

fn default_transaction_timeout() -> u64 {
    600
}

fn default_lmtp_listen() -> String {
    "127.0.0.1:2424".into()
}

fn default_postfix_queue_directory() -> PathBuf {
    "/var/spool/postfix".into()
}

fn default_max_message_size() -> u64 {
    50 * 1024 * 1024
}

fn default_max_recipients() -> usize {
    100
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilterSection {
    /// "127.0.0.1:8892" or "unix:/path"; empty (the default) = no milter. Postfix:
    /// smtpd_milters = inet:127.0.0.1:8892 and milter_default_action = accept.
    #[serde(default)]
    pub listen: String,
    /// What to do with a message that mixes Tox and plain recipients.
    #[serde(default)]
    pub policy: crate::postfix::milter::MixedPolicy,
    /// The {rcpt_mailer} value that means "Tox" (the transport the socketmap answers).
    #[serde(default = "default_tox_transport")]
    pub tox_transport: String,
    /// Clients whose messages are this site's own users' submissions (besides SASL-authenticated
    /// ones): the policy applies to them only. Mail from anywhere else is never answered with a
    /// notice or a refusal, which would go to a forgeable sender and tell which recipients use Tox.
    #[serde(default = "default_submission_networks")]
    pub submission_networks: Vec<String>,
}

impl Default for MilterSection {
    fn default() -> Self {
        MilterSection {
            listen: String::new(),
            policy: Default::default(),
            tox_transport: default_tox_transport(),
            submission_networks: default_submission_networks(),
        }
    }
}

fn default_submission_networks() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1/128".into()]
}

impl MilterSection {
    /// `submission_networks` parsed (validated at load).
    pub fn networks(&self) -> Vec<ipnet::IpNet> {
        self.submission_networks
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect()
    }
}

fn default_tox_transport() -> String {
    "toxlmtp".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSection {
    /// Domains whose DNS may be asked for `user._tox.domain` TXT records (opt-in: each lookup
    /// tells that domain's DNS who is being mailed).
    #[serde(default)]
    pub dns_domains: Vec<String>,
    /// Nameservers for those lookups; empty disables DNS discovery.
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
    /// Postfix's recipient_delimiter, e.g. "+".
    #[serde(default)]
    pub recipient_delimiter: Option<String>,
    /// Pin each address's DNS-learned key on first use; a different key later waits for the
    /// operator (`resolve --accept-new-key`).
    #[serde(default = "yes")]
    pub pin_dns_keys: bool,
    /// Domains (among dns_domains) whose records must validate with DNSSEC.
    #[serde(default)]
    pub dnssec_domains: Vec<String>,
    /// DNSKEY records (zone-file syntax) to trust instead of the DNS root's keys.
    #[serde(default)]
    pub trust_anchor: Option<PathBuf>,
}

impl Default for ResolverSection {
    fn default() -> Self {
        ResolverSection {
            dns_domains: Vec::new(),
            nameservers: Vec::new(),
            recipient_delimiter: None,
            pin_dns_keys: true,
            dnssec_domains: Vec::new(),
            trust_anchor: None,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToxSection {
    /// UDP ports the identities bind, one each. Unset: from 33445, as many as there are
    /// identities plus a tenth to spare, at least 101 (`ToxSection::ports`).
    #[serde(default)]
    pub port_range: Option<[u16; 2]>,
    #[serde(default)]
    pub ipv6: bool,
    #[serde(default)]
    pub local_discovery: bool,
    /// DHT nodes to bootstrap from. Nothing is assumed: an empty list means the operator adds
    /// them (there is no built-in public node list).
    #[serde(default)]
    pub bootstrap: Vec<BootstrapEntry>,
    #[serde(default)]
    pub friend_policy: FriendPolicySetting,
    /// Friends accepted from strangers (not contacts, not relays) and not yet proven by a
    /// validly sealed envelope, at most; further requests wait until one proves or expires.
    #[serde(default = "default_max_pending_strangers")]
    pub max_pending_strangers: usize,
    /// New strangers accepted per minute, at most.
    #[serde(default = "default_strangers_per_minute")]
    pub strangers_per_minute: u32,
    /// A stranger that delivered nothing validly sealed this long after it was accepted is
    /// unfriended.
    #[serde(default = "default_stranger_grace")]
    pub stranger_grace_secs: u64,
    /// Partial envelopes of broken-off transfers older than this are deleted.
    #[serde(default = "default_spool_max_age")]
    pub spool_max_age_secs: u64,
    /// The oldest partial envelopes are deleted while the spool holds more than this.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// A peer with mail waiting that stays offline this long is sent our friend request again,
    /// in case it ended the friendship (removed or blocked us, lost its friend list).
    #[serde(default = "default_refriend_after")]
    pub refriend_after_secs: u64,
}

fn default_refriend_after() -> u64 {
    900
}

fn default_spool_max_age() -> u64 {
    2 * 86_400
}

fn default_spool_max_bytes() -> u64 {
    4 * 1024 * 1024 * 1024
}

impl Default for ToxSection {
    fn default() -> Self {
        ToxSection {
            port_range: None,
            ipv6: false,
            local_discovery: false,
            bootstrap: Vec::new(),
            friend_policy: FriendPolicySetting::default(),
            max_pending_strangers: default_max_pending_strangers(),
            strangers_per_minute: default_strangers_per_minute(),
            stranger_grace_secs: default_stranger_grace(),
            spool_max_age_secs: default_spool_max_age(),
            spool_max_bytes: default_spool_max_bytes(),
            refriend_after_secs: default_refriend_after(),
        }
    }
}

fn default_max_pending_strangers() -> usize {
    tox_runtime::transfer::StrangerLimits::default().max_pending
}

fn default_strangers_per_minute() -> u32 {
    tox_runtime::transfer::StrangerLimits::default().per_minute
}

fn default_stranger_grace() -> u64 {
    tox_runtime::transfer::StrangerLimits::default()
        .grace
        .as_secs()
}

impl ToxSection {
    pub fn stranger_limits(&self) -> tox_runtime::transfer::StrangerLimits {
        tox_runtime::transfer::StrangerLimits {
            max_pending: self.max_pending_strangers,
            per_minute: self.strangers_per_minute,
            grace: std::time::Duration::from_secs(self.stranger_grace_secs),
        }
    }
}

/// The first port of the range sized by the identity count, and its least size (c-toxcore's own
/// default range, 33445..=33545).
const DEFAULT_FIRST_PORT: u16 = 33445;
const DEFAULT_PORTS: usize = 101;

impl ToxSection {
    /// The UDP port range for `identities` identities: the configured one if it has a port for
    /// each, else an error saying how wide it must be; unset, one sized by the count.
    pub fn ports(&self, identities: usize) -> Result<[u16; 2], String> {
        let Some([lo, hi]) = self.port_range else {
            // A tenth to spare: other Tox processes on the host (a relay) take ports from it too.
            let size = (identities + identities / 10).max(DEFAULT_PORTS);
            let last = usize::from(DEFAULT_FIRST_PORT) + size - 1;
            return u16::try_from(last)
                .map(|hi| [DEFAULT_FIRST_PORT, hi])
                .map_err(|_| {
                    format!(
                        "tox.port_range: {identities} identities do not fit in the UDP ports \
                         from {DEFAULT_FIRST_PORT}; set a range starting lower"
                    )
                });
        };
        let size = usize::from(hi - lo) + 1;
        if size >= identities {
            return Ok([lo, hi]);
        }
        let need = u16::try_from(usize::from(lo) + identities - 1).map_or_else(
            |_| "a range starting lower".to_string(),
            |h| format!("[{lo}, {h}]"),
        );
        Err(format!(
            "tox.port_range [{lo}, {hi}] has {size} UDP port{}, fewer than the {identities} \
             identities the database lists (each needs a port of its own): widen it to {need}, \
             or remove port_range to size it by the identity count",
            if size == 1 { "" } else { "s" }
        ))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapEntry {
    pub address: SocketAddr,
    /// The node's DHT public key, 64 hex digits.
    pub key: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FriendPolicySetting {
    /// Anyone who knows an identity's full Tox ID.
    #[default]
    Anyone,
    /// Only addresses in the contacts table.
    Contacts,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    /// How long a message may wait for its peer before it bounces.
    #[serde(default = "default_lifetime")]
    pub lifetime_secs: u64,
    #[serde(default = "default_retry_min")]
    pub retry_min_secs: u64,
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
    /// One "delayed" DSN goes to the sender once a copy has waited this long.
    #[serde(default = "default_delay_notice")]
    pub delay_notice_secs: u64,
    /// Delivered copies, and received messages once injected (or bounced), are kept this many
    /// days, then purged (`crate::retention`). At least 7 and more than `lifetime_secs`.
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
    /// Transfers (and relay deposits) under way at once over all peers; each peer gets at most
    /// `tox_runtime::transfer::MAX_IN_FLIGHT_PER_PEER` of them. Queued copies beyond this
    /// wait in the database, not in memory.
    #[serde(default = "default_max_transfers")]
    pub max_transfers: usize,
    /// Envelope bytes held in memory by transfers under way, over all peers, in MiB: a transfer
    /// reads its envelope only once there is room (one larger than this waits for all of it).
    #[serde(default = "default_max_transfer_mib")]
    pub max_transfer_mib: u64,
}

impl Default for QueueSection {
    fn default() -> Self {
        QueueSection {
            lifetime_secs: default_lifetime(),
            retry_min_secs: default_retry_min(),
            retry_max_secs: default_retry_max(),
            delay_notice_secs: default_delay_notice(),
            retention_days: default_retention_days(),
            max_transfers: default_max_transfers(),
            max_transfer_mib: default_max_transfer_mib(),
        }
    }
}

fn default_retention_days() -> u64 {
    30
}

/// The shortest retention accepted. Postfix retries an LMTP transaction whose replies it did not
/// get until its `maximal_queue_lifetime` (5 days by default), and only a kept row recognises
/// the retry by its queue id; received rows from before schema 11 carry no sealed expiry, so
/// they are kept at least as long as a sender with the usual 5-day lifetime may resend, plus
/// the grace of `store::retention::EXPIRY_GRACE`.
pub const MIN_RETENTION_DAYS: u64 = 7;

fn default_lifetime() -> u64 {
    5 * 24 * 3600
}

fn default_max_transfers() -> usize {
    256
}

fn default_max_transfer_mib() -> u64 {
    256
}

fn default_retry_min() -> u64 {
    60
}

fn default_retry_max() -> u64 {
    3600
}

fn default_delay_notice() -> u64 {
    4 * 3600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSection {
    /// Where received mail is injected: "smtp:127.0.0.1:25" (Postfix) or "lmtp:127.0.0.1:24" (Dovecot).
    /// Best a dedicated Postfix service that takes mail for local domains only (`postfix-config`).
    pub next_hop: String,
    /// Where the bridge's own messages go (DSNs, milter notices), which may be for other sites:
    /// the MTA's ordinary smtpd. Empty: `next_hop`.
    #[serde(default)]
    pub notice_hop: String,
    /// Mail domains this site receives for (recipients outside them get a permanent nack).
    pub local_domains: Vec<String>,
    /// What to do with mail whose sealing key contradicts what this site knows of its envelope
    /// sender (a contact's key, the sender domain's `_tox` record).
    #[serde(default)]
    pub sender_mismatch: SenderMismatch,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderMismatch {
    /// Refuse it for good: the sending site bounces it to its sender.
    #[default]
    Reject,
    /// Deliver it with `Authentication-Results: …; x-toxmail=fail`.
    Tag,
}

/// A parsed `listen` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A parsed `next_hop` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub lmtp: bool,
    pub addr: SocketAddr,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        crate::address::Domain::parse(&self.bridge.hostname)
            .map_err(|e| invalid("bridge.hostname", e.to_string()))?;
        if !LEASE_SECS.contains(&self.bridge.lease_secs) {
            let (lo, hi) = (LEASE_SECS.start(), LEASE_SECS.end());
            return Err(invalid(
                "bridge.lease_secs",
                format!("{} is not between {lo} and {hi}", self.bridge.lease_secs),
            ));
        }
        parse_listen(&self.socketmap.listen).map_err(|m| invalid("socketmap.listen", m))?;
        parse_listen(&self.lmtp.listen).map_err(|m| invalid("lmtp.listen", m))?;
        if !self.metrics.listen.is_empty() {
            self.metrics
                .listen
                .parse::<SocketAddr>()
                .map_err(|e| invalid("metrics.listen", format!("not host:port: {e}")))?;
        }
        if !self.milter.listen.is_empty() {
            parse_listen(&self.milter.listen).map_err(|m| invalid("milter.listen", m))?;
        }
        for net in &self.milter.submission_networks {
            net.parse::<ipnet::IpNet>()
                .map_err(|e| invalid("milter.submission_networks", format!("{net:?}: {e}")))?;
        }
        parse_next_hop(&self.inbound.next_hop).map_err(|m| invalid("inbound.next_hop", m))?;
        if !self.inbound.notice_hop.is_empty() {
            parse_next_hop(&self.inbound.notice_hop)
                .map_err(|m| invalid("inbound.notice_hop", m))?;
        }
        for b in &self.tox.bootstrap {
            b.key
                .parse::<PublicKey>()
                .map_err(|e| invalid("tox.bootstrap.key", e.to_string()))?;
        }
        if let Some([lo, hi]) = self.tox.port_range
            && (lo == 0 || lo > hi)
        {
            return Err(invalid(
                "tox.port_range",
                format!("{lo}..{hi} is not a range"),
            ));
        }
        if self.inbound.local_domains.is_empty() {
            return Err(invalid(
                "inbound.local_domains",
                "list at least one domain".into(),
            ));
        }
        for d in &self.resolver.dns_domains {
            if self
                .inbound
                .local_domains
                .iter()
                .any(|l| l.eq_ignore_ascii_case(d))
            {
                return Err(invalid(
                    "resolver.dns_domains",
                    format!("{d} is also a local domain; its mail would loop"),
                ));
            }
        }
        for d in &self.resolver.dnssec_domains {
            let opted_in = self.resolver.dns_domains.iter().any(|o| {
                o.trim_end_matches('.')
                    .eq_ignore_ascii_case(d.trim_end_matches('.'))
            });
            if !opted_in {
                return Err(invalid(
                    "resolver.dnssec_domains",
                    format!("{d} is not in resolver.dns_domains"),
                ));
            }
        }
        if let Some(path) = &self.resolver.trust_anchor {
            crate::resolve::dns::trust_anchors(path)
                .map_err(|e| invalid("resolver.trust_anchor", e.to_string()))?;
        }
        for r in &self.relays.register_with {
            r.parse::<ToxId>()
                .map_err(|e| invalid("relays.register_with", format!("{r}: {e}")))?;
        }
        self.events.check().map_err(|(key, m)| invalid(key, m))?;
        self.check_retention()
            .map_err(|m| invalid("queue.retention_days", m))?;
        if self.queue.retry_min_secs == 0 || self.queue.retry_min_secs > self.queue.retry_max_secs {
            return Err(invalid(
                "queue.retry_min_secs",
                "must be > 0 and ≤ retry_max_secs".into(),
            ));
        }
        if !(1..=1 << 20).contains(&self.queue.max_transfer_mib) {
            return Err(invalid(
                "queue.max_transfer_mib",
                "must be between 1 and 1048576 (1 TiB)".into(),
            ));
        }
        if self.queue.max_transfers == 0 {
            return Err(invalid("queue.max_transfers", "must be > 0".into()));
        }
        Ok(())
    }

    /// Largest envelope accepted over Tox (and held for friends): room for the largest message
    /// LMTP takes plus its sealing and padding, at least 1 MiB.
    pub fn max_envelope(&self) -> u64 {
        self.lmtp.max_message_size.saturating_mul(2).max(1 << 20)
    }

    /// The relays our identities register with (validated at load).
    pub fn own_relays(&self) -> Vec<ToxId> {
        self.relays
            .register_with
            .iter()
            .map(|r| r.parse().expect("validated at load"))
            .collect()
    }

    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.queue.lifetime_secs)
    }

    /// How long a lease on the identities lasts unless renewed (validated at load).
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.bridge.lease_secs)
    }

    /// How long finished rows are kept (validated at load).
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.queue.retention_days.saturating_mul(86_400))
    }

    /// The retention must outlast a sender's retries: Postfix's (`MIN_RETENTION_DAYS`) and a
    /// peer's, taken to be configured like this site (its queue lifetime plus the expiry grace).
    fn check_retention(&self) -> Result<(), String> {
        let days = self.queue.retention_days;
        if days < MIN_RETENTION_DAYS {
            return Err(format!(
                "{days} days is less than the {MIN_RETENTION_DAYS} days a sender may still \
                 retry the same message"
            ));
        }
        let grace = crate::store::retention::EXPIRY_GRACE;
        let needed = self.lifetime().saturating_add(grace);
        if self.retention() < needed {
            return Err(format!(
                "{days} days is shorter than queue.lifetime_secs plus {} day of grace ({}s): \
                 a peer configured like this site may still resend what a purge forgot",
                grace.as_secs() / 86_400,
                needed.as_secs()
            ));
        }
        Ok(())
    }

    pub fn local_domains(&self) -> Vec<String> {
        self.inbound
            .local_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect()
    }

    /// What the socketmap answers for Tox recipients.
    pub fn socketmap_nexthop(&self) -> String {
        if !self.socketmap.nexthop.is_empty() {
            return self.socketmap.nexthop.clone();
        }
        match parse_listen(&self.lmtp.listen) {
            Ok(ListenAddr::Tcp(a)) => format!("toxlmtp:inet:[{}]:{}", a.ip(), a.port()),
            Ok(ListenAddr::Unix(p)) => {
                let queue = &self.lmtp.postfix_queue_directory;
                let seen = p.strip_prefix(queue).unwrap_or(&p);
                format!("toxlmtp:unix:{}", seen.display())
            }
            Err(_) => String::new(),
        }
    }

    pub fn next_hop(&self) -> NextHop {
        parse_next_hop(&self.inbound.next_hop).expect("validated at load")
    }

    /// Where DSNs and notices go: `inbound.notice_hop`, or `next_hop` when unset.
    pub fn notice_hop(&self) -> NextHop {
        match self.inbound.notice_hop.as_str() {
            "" => self.next_hop(),
            hop => parse_next_hop(hop).expect("validated at load"),
        }
    }
}

pub fn parse_listen(value: &str) -> Result<ListenAddr, String> {
    if let Some(path) = value.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("{path:?}: a unix socket path must be absolute"));
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    value
        .parse()
        .map(ListenAddr::Tcp)
        .map_err(|_| format!("{value:?} is neither host:port nor unix:/path"))
}

pub fn parse_next_hop(value: &str) -> Result<NextHop, String> {
    let (kind, rest) = value
        .split_once(':')
        .ok_or_else(|| format!("{value:?}: expected smtp:host:port or lmtp:host:port"))?;
    let lmtp = match kind {
        "smtp" => false,
        "lmtp" => true,
        _ => return Err(format!("{kind:?}: expected smtp or lmtp")),
    };
    let addr = rest
        .parse()
        .map_err(|_| format!("{rest:?} is not an IP address and port"))?;
    Ok(NextHop { lmtp, addr })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[bridge]
hostname = "mx.a.test"
state_dir = "/tmp/x"
key_file = "/tmp/x/key"
[database]
url = "host=127.0.0.1 dbname=toxmail"
[inbound]
next_hop = "smtp:127.0.0.1:25"
local_domains = ["a.test"]
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
        assert_eq!(c.socketmap.listen, "127.0.0.1:9025");
        assert_eq!(c.socketmap_nexthop(), "toxlmtp:inet:[127.0.0.1]:2424");
        assert_eq!(c.queue.lifetime_secs, 5 * 24 * 3600);
        assert_eq!(c.queue.max_transfers, 256);
        assert_eq!(c.queue.max_transfer_mib, 256);
        assert_eq!(c.bridge.unknown_sender, UnknownSender::Default);
        assert!(c.tox.bootstrap.is_empty(), "no built-in bootstrap nodes");
    }

    #[test]
    fn unknown_key_is_rejected_with_file_and_key() {
        let text = MINIMAL.replace("[database]", "[database]\nurll = \"x\"");
        let err = Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.toml:"), "{err}");
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let text = MINIMAL.replace("smtp:127.0.0.1:25", "ftp:127.0.0.1:25");
        let err = Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("inbound.next_hop"), "{err}");
        let text = MINIMAL.replace(
            "[inbound]",
            "[resolver]\ndns_domains = [\"A.test\"]\n[inbound]",
        );
        let err = Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("resolver.dns_domains"), "{err}");
        let text = format!("{MINIMAL}[queue]\nmax_transfers = 0\n");
        let err = Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue.max_transfers"), "{err}");
    }

    #[test]
    fn dnssec_domains_must_be_opted_in_and_the_trust_anchor_must_parse() {
        let with = |resolver: &str| {
            MINIMAL.replace("[inbound]", &format!("[resolver]\n{resolver}\n[inbound]"))
        };
        let parse = |text: String| Config::parse(Path::new("t.toml"), &text).map(|_| ());
        let ok = "dns_domains = [\"b.test\"]\ndnssec_domains = [\"B.test.\"]";
        parse(with(ok)).unwrap();
        let err = parse(with("dnssec_domains = [\"b.test\"]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("resolver.dnssec_domains"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let anchor = dir.path().join("anchor.keys");
        std::fs::write(&anchor, "b.test. 300 IN DNSKEY 257 3 13 not-base64!\n").unwrap();
        let bad = format!("{ok}\ntrust_anchor = \"{}\"", anchor.display());
        let err = parse(with(&bad)).unwrap_err().to_string();
        assert!(
            err.contains("resolver.trust_anchor") && err.contains("anchor.keys"),
            "{err}"
        );
        let missing = format!("{ok}\ntrust_anchor = \"{}/none\"", dir.path().display());
        assert!(parse(with(&missing)).is_err());
    }

    #[test]
    fn leases_last_15_s_by_default_and_between_3_s_and_5_min() {
        let with = |line: &str| {
            let text = MINIMAL.replace("[bridge]\n", &format!("[bridge]\n{line}\n"));
            Config::parse(Path::new("t.toml"), &text)
        };
        assert_eq!(with("").unwrap().lease(), Duration::from_secs(15));
        assert_eq!(
            with("lease_secs = 3").unwrap().lease(),
            Duration::from_secs(3)
        );
        for bad in ["lease_secs = 2", "lease_secs = 301", "lease_secs = 0"] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("bridge.lease_secs"), "{bad}: {err}");
        }
    }

    #[test]
    fn retention_defaults_to_30_days_and_must_outlast_a_senders_retries() {
        let with = |queue: &str| {
            let text = MINIMAL.replace("[inbound]", &format!("[queue]\n{queue}\n[inbound]"));
            Config::parse(Path::new("t.toml"), &text)
        };
        let c = with("").unwrap();
        assert_eq!(c.retention(), Duration::from_secs(30 * 86_400));
        assert_eq!(with("retention_days = 7").unwrap().queue.retention_days, 7);
        for bad in [
            "retention_days = 6",
            "retention_days = 0",
            "retention_days = 10\nlifetime_secs = 864000",
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("queue.retention_days"), "{bad}: {err}");
        }
        with("retention_days = 11\nlifetime_secs = 864000").unwrap();
    }

    #[test]
    fn a_socket_in_the_postfix_queue_directory_is_named_relative_to_it() {
        let with = |listen: &str| {
            let text = MINIMAL.replace(
                "[inbound]",
                &format!("[lmtp]\nlisten = {listen:?}\n[inbound]"),
            );
            Config::parse(Path::new("t.toml"), &text).map(|c| c.socketmap_nexthop())
        };
        let queued = with("unix:/var/spool/postfix/toxmail/lmtp").unwrap();
        assert_eq!(queued, "toxlmtp:unix:toxmail/lmtp");
        let private = with("unix:/var/spool/postfix/private/toxmail").unwrap();
        assert_eq!(private, "toxlmtp:unix:private/toxmail");
        let elsewhere = with("unix:/run/toxmail/lmtp").unwrap();
        assert_eq!(elsewhere, "toxlmtp:unix:/run/toxmail/lmtp");
        assert_eq!(with("127.0.0.1:24").unwrap(), "toxlmtp:inet:[127.0.0.1]:24");
        let err = with("unix:toxmail/lmtp").unwrap_err().to_string();
        assert!(
            err.contains("lmtp.listen") && err.contains("absolute"),
            "{err}"
        );
    }

    #[test]
    fn the_port_range_is_sized_by_the_identity_count_unless_set_and_too_small_is_refused() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/bridge.example.toml");
        let tox = Config::load(&example).unwrap().tox;
        assert_eq!(
            tox.ports(1),
            Ok([33445, 33545]),
            "c-toxcore's range at least"
        );
        assert_eq!(tox.ports(1000), Ok([33445, 34544]), "a tenth to spare");
        assert!(tox.ports(40_000).unwrap_err().contains("starting lower"));

        let text = format!("{MINIMAL}[tox]\nport_range = [40000, 40099]\n");
        let tox = Config::parse(Path::new("t.toml"), &text).unwrap().tox;
        assert_eq!(tox.ports(100), Ok([40000, 40099]));
        assert_eq!(
            tox.ports(150).unwrap_err(),
            "tox.port_range [40000, 40099] has 100 UDP ports, fewer than the 150 identities the \
             database lists (each needs a port of its own): widen it to [40000, 40149], or \
             remove port_range to size it by the identity count"
        );
        let text = format!("{MINIMAL}[tox]\nport_range = [40100, 40000]\n");
        let err = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert!(err.to_string().contains("tox.port_range"), "{err}");
    }

    #[test]
    fn every_bridge_example_config_in_deploy_parses() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let mut seen = 0;
        let entries = [
            deploy.clone(),
            deploy.join("docker"),
            deploy.join("mailcow"),
        ]
        .into_iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap());
        for entry in entries {
            let path = entry.unwrap().path();
            let bridge = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("bridge"));
            if bridge && path.extension().is_some_and(|e| e == "toml") {
                let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                if path.ends_with("deploy/bridge.example.toml") {
                    assert_eq!(
                        config.queue.max_transfers, 256,
                        "documented with its default"
                    );
                }
                seen += 1;
            }
        }
        assert!(
            seen >= 3,
            "deploy/, deploy/docker/ and deploy/mailcow/ have bridge configs"
        );
    }
}
