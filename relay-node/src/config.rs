//! The relay's configuration: one typed struct read from TOML, validated at start-up. Unknown keys
//! are rejected; every error names the file and the key. Defaults sit beside the fields.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toxmail_protocol::{PublicKey, ToxId};

pub const DEFAULT_PATH: &str = "/etc/toxmail/relay.toml";
/// Highest `policy.max_registrations`: the registration limiter remembers up to twice that many
/// keys in memory (about 100 bytes each, 20 MB at most).
pub const MAX_REGISTRATIONS: u32 = 100_000;

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
    pub relay: RelaySection,
    pub database: DatabaseSection,
    #[serde(default)]
    pub tox: ToxSection,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// The operators' HTTP listener: `/metrics`, `/healthz`, `/readyz` (docs/operations.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `host:port`; loopback by default, "" turns the listener off.
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
    "127.0.0.1:9465".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// The relay's Tox savedata (`relay.tox`) and its transfer spool live here.
    pub state_dir: PathBuf,
    /// Optional file whose contents encrypt the savedata at rest (toxencryptsave).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// libpq-style connection string, e.g. "host=/var/run/postgresql dbname=toxrelay user=toxrelay".
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    8
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToxSection {
    /// UDP ports to bind; the relay is also a DHT node others can bootstrap from.
    #[serde(default = "default_port_range")]
    pub port_range: [u16; 2],
    #[serde(default)]
    pub ipv6: bool,
    #[serde(default)]
    pub local_discovery: bool,
    #[serde(default)]
    pub bootstrap: Vec<BootstrapEntry>,
}

impl Default for ToxSection {
    fn default() -> Self {
        ToxSection {
            port_range: default_port_range(),
            ipv6: false,
            local_discovery: false,
            bootstrap: Vec::new(),
        }
    }
}

fn default_port_range() -> [u16; 2] {
    [33445, 33545]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapEntry {
    pub address: SocketAddr,
    pub key: String,
}

/// Who may deposit, and how much. Limits of 0 mean "no limit" nowhere: every limit is finite.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// true: anyone who knows the relay's full Tox ID may deposit; false: only `depositors`.
    #[serde(default = "yes")]
    pub open: bool,
    /// Tox IDs or public keys (hex) allowed to deposit when `open` is false.
    #[serde(default)]
    pub depositors: Vec<String>,
    /// Largest envelope accepted, in bytes.
    #[serde(default = "default_max_envelope")]
    pub max_envelope_bytes: u64,
    /// Deposits per depositor per UTC day.
    #[serde(default = "default_daily_count")]
    pub daily_count: u32,
    /// Bytes per depositor per UTC day.
    #[serde(default = "default_daily_bytes")]
    pub daily_bytes: u64,
    /// Bytes held for one recipient at once.
    #[serde(default = "default_recipient_bytes")]
    pub recipient_bytes: u64,
    /// Bytes held for all recipients together: the relay's disk budget (default 8 GiB, room
    /// on a Raspberry Pi's card next to PostgreSQL's own needs). A deposit past it is refused
    /// for now (`QuotaBytes`, temporary) until deliveries or expiry free space.
    #[serde(default = "default_total_bytes")]
    pub total_bytes: u64,
    /// true: hold mail only for recipients with a registration in force (`Register`), so the
    /// relay is a mailbox for the people who chose it, not free storage for any Tox key.
    #[serde(default = "yes")]
    pub registered_recipients_only: bool,
    /// Registrations in force at once; a new recipient past it is refused for now.
    #[serde(default = "default_max_registrations")]
    pub max_registrations: u32,
    /// `Register` frames one key may send per hour (a bridge sends one per connection).
    #[serde(default = "default_registrations_per_hour")]
    pub registrations_per_hour: u32,
    /// Longest an envelope is held; longer requests are shortened to this.
    #[serde(default = "default_max_hold")]
    pub max_hold_secs: u64,
    /// How often expired envelopes are purged.
    #[serde(default = "default_purge_interval")]
    pub purge_interval_secs: u64,
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            open: true,
            depositors: Vec::new(),
            max_envelope_bytes: default_max_envelope(),
            daily_count: default_daily_count(),
            daily_bytes: default_daily_bytes(),
            recipient_bytes: default_recipient_bytes(),
            total_bytes: default_total_bytes(),
            registered_recipients_only: true,
            max_registrations: default_max_registrations(),
            registrations_per_hour: default_registrations_per_hour(),
            max_hold_secs: default_max_hold(),
            purge_interval_secs: default_purge_interval(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_max_envelope() -> u64 {
    toxmail_protocol::MAX_ENVELOPE_SIZE as u64
}
fn default_daily_count() -> u32 {
    1000
}
fn default_daily_bytes() -> u64 {
    512 * 1024 * 1024
}
fn default_recipient_bytes() -> u64 {
    1024 * 1024 * 1024
}
fn default_total_bytes() -> u64 {
    8 * 1024 * 1024 * 1024
}
fn default_max_registrations() -> u32 {
    1000
}
fn default_registrations_per_hour() -> u32 {
    12
}
fn default_max_hold() -> u64 {
    14 * 24 * 3600
}
fn default_purge_interval() -> u64 {
    60
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
        if !self.metrics.listen.is_empty() {
            self.metrics
                .listen
                .parse::<std::net::SocketAddr>()
                .map_err(|e| invalid("metrics.listen", format!("not host:port: {e}")))?;
        }
        for b in &self.tox.bootstrap {
            b.key
                .parse::<PublicKey>()
                .map_err(|e| invalid("tox.bootstrap.key", e.to_string()))?;
        }
        let [lo, hi] = self.tox.port_range;
        if lo == 0 || lo > hi {
            return Err(invalid(
                "tox.port_range",
                format!("{lo}..{hi} is not a range"),
            ));
        }
        for d in &self.policy.depositors {
            parse_key(d).map_err(|m| invalid("policy.depositors", m))?;
        }
        if !self.policy.open && self.policy.depositors.is_empty() {
            return Err(invalid(
                "policy.depositors",
                "the relay is closed (open = false) and allows nobody".into(),
            ));
        }
        let p = &self.policy;
        let limits = [
            ("policy.max_envelope_bytes", p.max_envelope_bytes),
            ("policy.daily_count", u64::from(p.daily_count)),
            ("policy.daily_bytes", p.daily_bytes),
            ("policy.recipient_bytes", p.recipient_bytes),
            ("policy.total_bytes", p.total_bytes),
            ("policy.max_registrations", u64::from(p.max_registrations)),
            (
                "policy.registrations_per_hour",
                u64::from(p.registrations_per_hour),
            ),
            ("policy.max_hold_secs", p.max_hold_secs),
            ("policy.purge_interval_secs", p.purge_interval_secs),
        ];
        for (key, value) in limits {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0".into()));
            }
        }
        if p.max_envelope_bytes > default_max_envelope() {
            return Err(invalid(
                "policy.max_envelope_bytes",
                format!("the protocol's limit is {}", default_max_envelope()),
            ));
        }
        if p.total_bytes < p.max_envelope_bytes {
            return Err(invalid(
                "policy.total_bytes",
                format!(
                    "{} is less than policy.max_envelope_bytes ({})",
                    p.total_bytes, p.max_envelope_bytes
                ),
            ));
        }
        if p.max_registrations > MAX_REGISTRATIONS {
            return Err(invalid(
                "policy.max_registrations",
                format!("at most {MAX_REGISTRATIONS}"),
            ));
        }
        Ok(())
    }

    /// The keys allowed to deposit, or `None` when the relay is open.
    pub fn allowed_depositors(&self) -> Option<Vec<PublicKey>> {
        (!self.policy.open).then(|| {
            self.policy
                .depositors
                .iter()
                .map(|d| parse_key(d).expect("validated at load"))
                .collect()
        })
    }
}

/// A public key given as 64 hex digits or inside a full 76-digit Tox ID.
pub fn parse_key(text: &str) -> Result<PublicKey, String> {
    let text = text.trim();
    if text.len() == 76 {
        return text
            .parse::<ToxId>()
            .map(|id| id.public_key())
            .map_err(|e| format!("{text}: {e}"));
    }
    text.parse::<PublicKey>()
        .map_err(|e| format!("{text}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[relay]\nstate_dir = \"/var/lib/toxmail-relay\"\n[database]\nurl = \"host=/run/postgresql dbname=toxrelay\"\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("relay.toml"), text)
    }

    #[test]
    fn minimal_config_gets_the_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert!(c.policy.open);
        assert_eq!(c.policy.max_hold_secs, 14 * 24 * 3600);
        assert!(
            c.tox.bootstrap.is_empty(),
            "no public bootstrap node by default"
        );
        assert!(!c.tox.local_discovery);
        assert!(c.allowed_depositors().is_none());
        assert_eq!(c.policy.total_bytes, 8 << 30);
        assert!(c.policy.registered_recipients_only);
        assert_eq!(c.policy.max_registrations, 1000);
        assert_eq!(c.policy.registrations_per_hour, 12);
    }

    #[test]
    fn total_bytes_below_one_envelope_and_huge_registration_caps_are_refused() {
        let e = parse(&format!(
            "{MINIMAL}[policy]\nmax_envelope_bytes = 1000\ntotal_bytes = 999\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("policy.total_bytes"), "{e}");
        let e = parse(&format!("{MINIMAL}[policy]\ntotal_bytes = 0\n")).unwrap_err();
        assert!(e.to_string().contains("policy.total_bytes"), "{e}");
        let e = parse(&format!("{MINIMAL}[policy]\nmax_registrations = 100001\n")).unwrap_err();
        assert!(e.to_string().contains("policy.max_registrations"), "{e}");
        let e = parse(&format!("{MINIMAL}[policy]\nregistrations_per_hour = 0\n")).unwrap_err();
        assert!(
            e.to_string().contains("policy.registrations_per_hour"),
            "{e}"
        );
        let c = parse(&format!(
            "{MINIMAL}[policy]\nregistered_recipients_only = false\nmax_envelope_bytes = 1000\ntotal_bytes = 1000\n"
        ))
        .unwrap();
        assert!(!c.policy.registered_recipients_only);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_and_key() {
        let e = parse(&format!("{MINIMAL}[policy]\nquota = 3\n")).unwrap_err();
        assert!(e.to_string().starts_with("relay.toml:"), "{e}");
        assert!(e.to_string().contains("quota"), "{e}");
        let e = parse(&format!("{MINIMAL}[policy]\nopen = false\n")).unwrap_err();
        assert!(e.to_string().contains("policy.depositors"), "{e}");
        let e = parse(&format!("{MINIMAL}[policy]\ndaily_count = 0\n")).unwrap_err();
        assert!(e.to_string().contains("policy.daily_count"), "{e}");
        let e = parse(&format!(
            "{MINIMAL}[policy]\nopen = false\ndepositors = [\"xyz\"]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("policy.depositors"), "{e}");
    }

    #[test]
    fn depositors_accept_keys_and_full_ids() {
        let key = "AA".repeat(32);
        let c = parse(&format!(
            "{MINIMAL}[policy]\nopen = false\ndepositors = [\"{key}\"]\n"
        ))
        .unwrap();
        assert_eq!(c.allowed_depositors().unwrap(), vec![PublicKey([0xaa; 32])]);
    }
}

#[cfg(test)]
mod example {
    use super::*;

    #[test]
    fn the_compose_relay_config_parses() {
        let text = include_str!("../../deploy/docker/relay.toml");
        let c = Config::parse(Path::new("deploy/docker/relay.toml"), text).unwrap();
        assert!(c.tox.bootstrap.is_empty(), "no public bootstrap node");
    }

    #[test]
    fn deploy_example_parses() {
        let text = include_str!("../../deploy/relay.example.toml");
        let c = Config::parse(Path::new("deploy/relay.example.toml"), text).unwrap();
        assert!(c.policy.open);
        assert!(c.tox.bootstrap.is_empty());
        let defaults = PolicySection::default();
        assert_eq!(c.policy.total_bytes, defaults.total_bytes);
        assert_eq!(
            c.policy.registered_recipients_only,
            defaults.registered_recipients_only
        );
        assert_eq!(c.policy.max_registrations, defaults.max_registrations);
        assert_eq!(
            c.policy.registrations_per_hour,
            defaults.registrations_per_hour
        );
    }
}
