//! DNS discovery on the wire: the TXT name of an address (`user._tox.domain.`) and its lookup
//! through hickory-resolver, sent only to the configured nameservers (no system resolver, no
//! hosts file, no public default) and without hickory's own cache.
//!
//! Domains the operator listed for DNSSEC are asked through hickory's validating resolver: their
//! records count only when they validate up to a trust anchor (the root's keys built into
//! hickory, or the operator's file), and "no record" only when the denial validates too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

/// The label between the local part and the domain.
pub const TOX_LABEL: &str = "_tox";
const MAX_LABEL: usize = 63;
/// RFC 1035 limit on a name in wire form, length octets and root label included.
const MAX_WIRE_NAME: usize = 255;

/// The TXT name for a normalised `local@domain`, fully qualified: `local._tox.domain.`.
///
/// Dots in the local part separate labels (`first.last@b.test` → `first.last._tox.b.test.`),
/// as anyone writing a zone file would expect. `None` when the result cannot be an ordinary DNS
/// name: a label empty or over 63 bytes, the name over 255 bytes, or a byte other than a
/// letter, digit, `-` or `_` in the local part (quoted local parts, UTF-8 local parts). No
/// record can be published for such an address with ordinary zone tooling, so it has no Tox
/// route and goes as ordinary mail (`NotTox`), rather than bouncing a valid mail address.
/// An internationalised domain is asked by its A-labels (`jo@bücher.test` →
/// `jo._tox.xn--bcher-kva.test.`).
pub fn txt_name(normalised: &str) -> Option<String> {
    let (local, domain) = normalised.rsplit_once('@')?;
    let domain = super::address::ascii_domain(domain)?;
    let name = format!("{local}.{TOX_LABEL}.{domain}");
    let mut wire_len = 1; // the root label
    for label in name.split('.') {
        let ok = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > MAX_LABEL || !ok {
            return None;
        }
        wire_len += 1 + label.len();
    }
    (wire_len <= MAX_WIRE_NAME).then(|| name + ".")
}

/// What the nameserver said about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtAnswer {
    /// TXT records, each as its character-strings, and the smallest TTL among them.
    Records {
        records: Vec<Vec<Vec<u8>>>,
        ttl: Duration,
    },
    /// NXDOMAIN or NODATA; the negative TTL from the SOA, when the server sent one.
    Absent { ttl: Option<Duration> },
}

/// A lookup that did not produce an answer. All of them are temporary: the mail waits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("DNS lookup timed out")]
    Timeout,
    #[error("DNS server answered {0}")]
    Server(String),
    #[error("DNS lookup failed: {0}")]
    Transport(String),
    #[error("DNS resolver unavailable: {0}")]
    Setup(String),
    /// A DNSSEC domain's answer did not validate: forged, or the zone is broken. Temporary too:
    /// the mail waits rather than trusting or bouncing on an answer nobody can vouch for.
    #[error("DNSSEC validation failed: {0}")]
    Unverified(String),
}

impl LookupError {
    pub fn is_temporary(&self) -> bool {
        true
    }
}

/// How DNSSEC domains are validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dnssec {
    /// A file of DNSKEY records (zone-file syntax) to trust instead of the root's keys.
    pub trust_anchor: Option<PathBuf>,
}

/// TXT lookups against a fixed set of nameservers.
#[derive(Clone)]
pub struct TxtLookup {
    resolver: TokioResolver,
    /// The validating resolver, when some domain needs DNSSEC.
    secure: Option<TokioResolver>,
    timeout: Duration,
}

impl std::fmt::Debug for TxtLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxtLookup")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TxtLookup {
    /// Queries go to `nameservers` only, over UDP with TCP for truncated answers, one attempt
    /// each, bounded by `timeout` overall.
    /// With `dnssec`, a second, validating resolver serves [`TxtLookup::lookup_secure`].
    pub fn new(
        nameservers: &[SocketAddr],
        timeout: Duration,
        dnssec: Option<&Dnssec>,
    ) -> Result<Self, LookupError> {
        let resolver = build(nameservers, timeout, None)?;
        let secure = match dnssec {
            None => None,
            Some(d) => {
                let anchors = match &d.trust_anchor {
                    None => TrustAnchors::default(),
                    Some(path) => trust_anchors(path)?,
                };
                Some(build(nameservers, timeout, Some(Arc::new(anchors)))?)
            }
        };
        Ok(TxtLookup {
            resolver,
            secure,
            timeout,
        })
    }

    /// Looks up the TXT records at `name` (fully qualified, from [`txt_name`]).
    pub async fn lookup(&self, name: &str) -> Result<TxtAnswer, LookupError> {
        query(&self.resolver, self.timeout, name, false).await
    }

    /// Like [`TxtLookup::lookup`], but every record must validate, and so must a denial.
    pub async fn lookup_secure(&self, name: &str) -> Result<TxtAnswer, LookupError> {
        let Some(resolver) = &self.secure else {
            return Err(LookupError::Setup(
                "DNSSEC validation not configured".into(),
            ));
        };
        query(resolver, self.timeout, name, true).await
    }
}

/// The operator's trust anchor file, read and parsed (a clear error naming it otherwise).
pub fn trust_anchors(path: &Path) -> Result<TrustAnchors, LookupError> {
    TrustAnchors::from_file(path)
        .map_err(|e| LookupError::Setup(format!("trust anchor file {}: {e}", path.display())))
}

fn build(
    nameservers: &[SocketAddr],
    timeout: Duration,
    anchors: Option<Arc<TrustAnchors>>,
) -> Result<TokioResolver, LookupError> {
    if nameservers.is_empty() {
        return Err(LookupError::Setup("no nameservers configured".into()));
    }
    let servers = nameservers
        .iter()
        .map(|addr| {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut server.connections {
                connection.port = addr.port();
            }
            server
        })
        .collect();
    let config = ResolverConfig::from_parts(None, vec![], servers);
    let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    let options = builder.options_mut();
    options.attempts = 1;
    options.timeout = timeout;
    // We cache ourselves, with the answer's TTLs and our own bounds.
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.ndots = 0;
    let builder = match anchors {
        Some(anchors) => {
            builder.options_mut().validate = true;
            builder.with_trust_anchor(anchors)
        }
        None => builder,
    };
    builder
        .build()
        .map_err(|e| LookupError::Setup(e.to_string()))
}

async fn query(
    resolver: &TokioResolver,
    timeout: Duration,
    name: &str,
    secure: bool,
) -> Result<TxtAnswer, LookupError> {
    let result = tokio::time::timeout(timeout, resolver.txt_lookup(name)).await;
    let lookup = match result {
        Err(_) => return Err(LookupError::Timeout),
        Ok(Err(e)) => return classify(e, secure),
        Ok(Ok(lookup)) => lookup,
    };
    let mut records = Vec::new();
    let mut ttl = u32::MAX;
    for record in lookup.answers() {
        // A CNAME on the way is followed by hickory and shows up here too: skip it.
        if let RData::TXT(txt) = &record.data {
            if secure && record.proof != Proof::Secure {
                let proof = record.proof;
                return Err(LookupError::Unverified(format!(
                    "{name}: record is {proof}"
                )));
            }
            records.push(txt.txt_data.iter().map(|s| s.to_vec()).collect());
            ttl = ttl.min(record.ttl);
        }
    }
    if records.is_empty() {
        if secure {
            return Err(LookupError::Unverified(format!(
                "{name}: unsigned empty answer"
            )));
        }
        return Ok(TxtAnswer::Absent { ttl: None });
    }
    let ttl = Duration::from_secs(u64::from(ttl));
    Ok(TxtAnswer::Records { records, ttl })
}

/// A denial counts for a DNSSEC domain only with a validated NSEC or NSEC3 proof beside it.
fn denial_is_secure(none: &NoRecords) -> bool {
    none.authorities.as_deref().is_some_and(|records| {
        records.iter().any(|r| {
            matches!(r.record_type(), RecordType::NSEC | RecordType::NSEC3)
                && r.proof == Proof::Secure
        })
    })
}

/// Splits hickory's errors into "there is no such record" and temporary failures.
fn classify(error: NetError, secure: bool) -> Result<TxtAnswer, LookupError> {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(none)) if secure && !denial_is_secure(&none) => {
            Err(LookupError::Unverified(format!(
                "{}: denial without a valid proof",
                none.query.name()
            )))
        }
        NetError::Dns(DnsError::NoRecordsFound(none)) => Ok(TxtAnswer::Absent {
            ttl: none.negative_ttl.map(|s| Duration::from_secs(u64::from(s))),
        }),
        NetError::Dns(DnsError::ResponseCode(code)) => Err(LookupError::Server(code.to_string())),
        NetError::Timeout => Err(LookupError::Timeout),
        other => Err(LookupError::Transport(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_name_asks_an_idn_domain_by_its_a_labels() {
        assert_eq!(
            txt_name("jo@bücher.test").as_deref(),
            Some("jo._tox.xn--bcher-kva.test.")
        );
        assert_eq!(
            txt_name("jörg@b.test"),
            None,
            "UTF-8 local parts are not DNS names"
        );
    }

    #[test]
    fn txt_name_maps_local_part_to_labels_under_tox() {
        assert_eq!(
            txt_name("alice@b.test").as_deref(),
            Some("alice._tox.b.test.")
        );
        assert_eq!(
            txt_name("first.last@mail.b.test").as_deref(),
            Some("first.last._tox.mail.b.test.")
        );
        assert_eq!(
            txt_name("a_b-c@b.test").as_deref(),
            Some("a_b-c._tox.b.test.")
        );
    }

    #[test]
    fn txt_name_refuses_what_is_not_an_ordinary_dns_name() {
        let long_label = format!("{}@b.test", "a".repeat(64));
        let long_name = format!("{}@b.test", vec!["a".repeat(63); 4].join("."));
        for address in [
            "a..b@b.test",
            ".a@b.test",
            "a.@b.test",
            "a+b@b.test",
            "\"a\"@b.test",
            "élodie@b.test",
            "a@b..test",
            "noat",
            &long_label,
            &long_name,
        ] {
            assert_eq!(txt_name(address), None, "{address}");
        }
        // 63-byte labels are fine while the whole name fits in 255 bytes.
        let fits = format!("{}@b.test", vec!["a".repeat(63); 3].join("."));
        assert!(txt_name(&fits).is_some());
    }

    #[test]
    fn no_nameservers_means_no_resolver() {
        assert!(matches!(
            TxtLookup::new(&[], Duration::from_secs(1), None),
            Err(LookupError::Setup(_))
        ));
    }
}
