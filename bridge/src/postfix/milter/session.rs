//! Connection state (`Session`, one per Postfix milter connection) and message state
//! (`Transaction`, from MAIL to end of message): who sends, how each recipient is routed, the
//! original Message-ID. The callbacks in `mod.rs` only call these methods.

use std::sync::Arc;
use std::time::Duration;

use indymilter::{SetErrorReply, SmtpReply, Status};
use tokio_util::task::TaskTracker;

use super::notice::{self, Notice};
use super::recipients::{self, Class, Recipients, Verdict};
use super::{MilterConfig, MixedPolicy};
use crate::resolve::{Resolver, Route};

/// Bound on asking the resolver when Postfix sent no `{rcpt_mailer}`: never hold up mail for
/// the bridge's DNS; a late answer counts as ordinary mail.
const RESOLVE_TIMEOUT: Duration = Duration::from_millis(500);
/// The refusal under the `reject` policy. 5.7.1 ("delivery not authorized, message refused")
/// is the code for a site's policy refusing a message; 5.7.4 ("security features not
/// supported") would blame the recipients' systems, but the choice here is the operator's.
const REJECT_CODE: (&str, &str) = ("550", "5.7.1");

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub config: MilterConfig,
    pub resolver: Arc<Resolver>,
    /// Notices in flight, waited for (briefly) at shutdown.
    pub notices: TaskTracker,
}

impl Shared {
    /// The resolver's opinion, for when Postfix did not say how it routes the recipient.
    async fn resolve(&self, address: &str) -> Class {
        match tokio::time::timeout(RESOLVE_TIMEOUT, self.resolver.resolve(address)).await {
            Ok(Route::Tox { .. }) => Class::Tox,
            Ok(_) => Class::Plain,
            Err(_) => {
                tracing::debug!(address, "resolver too slow; counted as ordinary mail");
                Class::Plain
            }
        }
    }
}

/// One milter connection (Postfix opens one per SMTP session).
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    /// Postfix was asked not to expect replies to header events.
    noreply_header: bool,
    tx: Option<Transaction>,
}

/// One message, from MAIL FROM to end of message.
#[derive(Debug, Default)]
struct Transaction {
    /// Envelope sender without brackets; empty for `<>`.
    sender: String,
    recipients: Recipients,
    message_id: Option<String>,
}

/// What Postfix told us about one recipient.
#[derive(Debug, Default)]
pub struct RcptInfo {
    /// `{rcpt_addr}`, else the RCPT argument.
    pub address: String,
    /// `{rcpt_mailer}`: the transport Postfix resolved.
    pub mailer: Option<String>,
    /// `{rcpt_host}`: the nexthop Postfix resolved.
    pub host: Option<String>,
}

impl Session {
    pub fn new(shared: Arc<Shared>, noreply_header: bool) -> Session {
        Session {
            shared,
            noreply_header,
            tx: None,
        }
    }

    /// MAIL FROM: starts a transaction. Messages the policy cannot act on are accepted here,
    /// so Postfix stops asking about them: under `allow`, bounces under `warn`, and anything
    /// that is not a submission of this site's users (SASL `auth` or a `client` address in
    /// `submission_networks`): a notice to an outside, forgeable sender, or a refusal listing
    /// recipients, would tell strangers which of our recipients use Tox.
    pub fn mail(&mut self, sender: &str, auth: Option<&str>, client: Option<&str>) -> Status {
        let sender = sender.trim();
        let sender = sender.strip_prefix('<').unwrap_or(sender);
        let sender = sender.strip_suffix('>').unwrap_or(sender).to_string();
        let config = &self.shared.config;
        let policy = config.policy;
        if !is_submission(auth, client, &config.submission_networks) {
            tracing::debug!(?client, "not a local submission: no mixed-recipient policy");
            self.tx = None;
            return Status::Accept;
        }
        if policy == MixedPolicy::Allow || (policy == MixedPolicy::Warn && sender.is_empty()) {
            self.tx = None;
            return Status::Accept;
        }
        self.tx = Some(Transaction {
            sender,
            ..Transaction::default()
        });
        Status::Continue
    }

    /// RCPT TO (only recipients Postfix accepted): classified and remembered, never refused.
    pub async fn rcpt(&mut self, rcpt: RcptInfo) -> Status {
        let Some(tx) = self.tx.as_mut() else {
            return Status::Continue;
        };
        let transport = &self.shared.config.tox_transport;
        let class =
            match recipients::classify(transport, rcpt.mailer.as_deref(), rcpt.host.as_deref()) {
                Some(class) => class,
                None => self.shared.resolve(&rcpt.address).await,
            };
        let (address, mailer, host) = (&rcpt.address, &rcpt.mailer, &rcpt.host);
        tracing::debug!(address, ?mailer, ?host, ?class, "recipient classified");
        tx.recipients.push(class, &rcpt.address);
        Status::Continue
    }

    /// One header: only the first Message-ID is kept.
    pub fn header(&mut self, name: &str, value: &str) -> Status {
        if let Some(tx) = self.tx.as_mut()
            && tx.message_id.is_none()
            && name.eq_ignore_ascii_case("Message-ID")
        {
            tx.message_id = recipients::message_id(value);
        }
        if self.noreply_header {
            Status::Noreply
        } else {
            Status::Continue
        }
    }

    /// End of message: the policy's verdict. A notice is sent by a task of its own, so the
    /// reply to Postfix does not wait for it.
    pub fn eom(&mut self, queue_id: Option<String>, reply: &mut SmtpReply) -> Status {
        let Some(tx) = self.tx.take() else {
            return Status::Continue;
        };
        let config = &self.shared.config;
        let verdict = recipients::decide(config.policy, &tx.sender, &tx.recipients);
        let id = queue_id.as_deref().unwrap_or("-");
        let (tox, plain) = (tx.recipients.tox(), tx.recipients.plain());
        let (tox, plain) = (tox.0.len() + tox.1, plain.0.len() + plain.1);
        match verdict {
            Verdict::Accept => {
                tracing::debug!(queue_id = id, tox, plain, "message accepted");
                Status::Continue
            }
            Verdict::Notify => {
                crate::metrics::mixed_message("warn", plain);
                tracing::info!(
                    queue_id = id,
                    tox,
                    plain,
                    "mixed recipients: accepted, notifying sender"
                );
                let notice = Notice {
                    sender: tx.sender,
                    original_id: tx.message_id,
                    queue_id,
                    recipients: tx.recipients,
                };
                let shared = self.shared.clone();
                self.shared
                    .notices
                    .spawn(async move { notice::send(&shared.config, notice).await });
                Status::Continue
            }
            Verdict::Reject => {
                crate::metrics::mixed_message("reject", plain);
                tracing::info!(queue_id = id, tox, plain, "mixed recipients: rejected");
                let text = notice::reject_text(&tx.recipients);
                let (code, status) = REJECT_CODE;
                if let Err(e) = reply.set_error_reply(code, Some(status), [text]) {
                    // Still refused, with Postfix's generic "550 5.7.1 Command rejected".
                    tracing::warn!(error = %e, "reject text refused by indymilter");
                }
                Status::Reject
            }
        }
    }

    /// The client gave up on the message (RSET, disconnect).
    pub fn abort(&mut self) {
        self.tx = None;
    }
}

/// A SASL-authenticated client, or one in the submission networks (Postfix's `{client_addr}`,
/// `IPv6:`-prefixed or not; sendmail(1) submissions show 127.0.0.1).
fn is_submission(auth: Option<&str>, client: Option<&str>, networks: &[ipnet::IpNet]) -> bool {
    if auth.is_some_and(|a| !a.trim().is_empty()) {
        return true;
    }
    let Some(client) = client else {
        return false;
    };
    let client = client.strip_prefix("IPv6:").unwrap_or(client);
    match client.parse::<std::net::IpAddr>() {
        Ok(ip) => networks.iter().any(|n| n.contains(&ip)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NextHop;
    use crate::resolve::{Directory, ResolverConfig};
    use toxmail_protocol::{PublicKey, ToxId};

    fn session(resolver: Resolver) -> Session {
        let config = MilterConfig {
            policy: MixedPolicy::Reject,
            tox_transport: "toxlmtp".into(),
            hostname: "mx.a.test".into(),
            notice_hop: NextHop {
                lmtp: false,
                addr: ([127, 0, 0, 1], 25).into(),
            },
            submission_networks: vec!["127.0.0.1/32".parse().unwrap()],
            timeout: crate::postfix::milter::DEFAULT_TIMEOUT,
        };
        let resolver = Arc::new(resolver);
        let notices = TaskTracker::new();
        Session::new(
            Arc::new(Shared {
                config,
                resolver,
                notices,
            }),
            false,
        )
    }

    fn rcpt(address: &str, mailer: Option<&str>) -> RcptInfo {
        RcptInfo {
            address: address.into(),
            mailer: mailer.map(str::to_string),
            host: None,
        }
    }

    #[tokio::test]
    async fn macros_decide_and_the_resolver_only_fills_in_when_they_are_missing() {
        let resolver = Resolver::new(ResolverConfig::default());
        let peer = ToxId::new(PublicKey([7; 32]), 1);
        let contacts = [("bob@b.test".to_string(), peer)].into_iter().collect();
        resolver.set_directory(Directory {
            contacts,
            ..Directory::default()
        });
        let mut s = session(resolver);
        assert_eq!(
            s.mail("<alice@a.test>", None, Some("127.0.0.1")),
            Status::Continue
        );
        s.rcpt(rcpt("bob@b.test", None)).await;
        s.rcpt(rcpt("carol@b.test", Some("toxlmtp"))).await;
        s.rcpt(rcpt("dave@plain.test", None)).await;
        // Postfix's routing wins over the resolver's opinion.
        s.rcpt(rcpt("BOB+tag@b.test", Some("smtp"))).await;
        let recipients = &s.tx.as_ref().unwrap().recipients;
        assert_eq!(recipients.tox().0, ["bob@b.test", "carol@b.test"]);
        assert_eq!(recipients.plain().0, ["dave@plain.test", "BOB+tag@b.test"]);
    }

    #[tokio::test]
    async fn a_silent_nameserver_costs_at_most_the_resolve_timeout() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let resolver = Resolver::new(ResolverConfig {
            dns_domains: vec!["slow.test".into()],
            nameservers: vec![silent.local_addr().unwrap()],
            dns_timeout: Duration::from_secs(10),
            dns_wait: Duration::from_secs(10),
            ..ResolverConfig::default()
        });
        let mut s = session(resolver);
        s.mail("<alice@a.test>", None, Some("127.0.0.1"));
        let started = std::time::Instant::now();
        s.rcpt(rcpt("x@slow.test", None)).await;
        assert!(started.elapsed() < RESOLVE_TIMEOUT + Duration::from_millis(300));
        assert_eq!(s.tx.as_ref().unwrap().recipients.plain().0, ["x@slow.test"]);
    }

    #[test]
    fn only_authenticated_or_submission_network_clients_are_submissions() {
        let nets: Vec<ipnet::IpNet> =
            vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(is_submission(None, Some("127.0.0.1"), &nets));
        assert!(is_submission(None, Some("IPv6:::1"), &nets));
        assert!(is_submission(Some("alice"), Some("127.0.0.9"), &nets));
        assert!(!is_submission(Some(""), Some("127.0.0.9"), &nets));
        assert!(!is_submission(None, Some("127.0.0.9"), &nets));
        assert!(!is_submission(None, None, &nets));
        assert!(!is_submission(None, Some("unknown"), &nets));
    }

    #[test]
    fn mail_from_outside_is_accepted_at_mail_from_under_any_policy() {
        let mut s = session(Resolver::new(ResolverConfig::default()));
        assert_eq!(
            s.mail("<ceo@bank.test>", None, Some("127.0.0.9")),
            Status::Accept
        );
        assert_eq!(s.mail("<ceo@bank.test>", None, None), Status::Accept);
    }

    #[test]
    fn policies_that_cannot_act_accept_at_mail_from() {
        let mut s = session(Resolver::new(ResolverConfig::default()));
        assert_eq!(
            s.mail("<>", None, Some("127.0.0.1")),
            Status::Continue,
            "reject still checks bounces"
        );
        let mut shared = Arc::try_unwrap(s.shared).unwrap();
        shared.config.policy = MixedPolicy::Warn;
        s = Session::new(Arc::new(shared), true);
        assert_eq!(
            s.mail("<>", None, Some("127.0.0.1")),
            Status::Accept,
            "no one to warn"
        );
        assert_eq!(
            s.mail("<alice@a.test>", None, Some("127.0.0.1")),
            Status::Continue
        );
        assert_eq!(s.header("Message-Id", " <m@a.test>"), Status::Noreply);
        assert_eq!(
            s.tx.as_ref().unwrap().message_id.as_deref(),
            Some("<m@a.test>")
        );
        s.abort();
        assert!(s.tx.is_none());
    }
}
