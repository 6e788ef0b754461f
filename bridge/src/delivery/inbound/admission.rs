//! Admission of an opened letter. A valid seal proves one thing, the key that sealed it; the
//! sealed envelope sender and recipient are attacker input. The recipient must be the mailbox of
//! the identity the envelope is sealed to; the sender is checked against what this site knows of
//! it (its own domains and identities, contacts, opted-in `_tox` DNS records) and gets a verdict.

use std::collections::HashMap;

use tox_runtime::transfer::Refusal;
use toxmail_protocol::{NackCode, PublicKey, ToxId};

use crate::address::{MailAddress, ReversePath};
use crate::identity::DEFAULT_IDENTITY;
use crate::resolve::{Route, RouteSource, normalise};

/// What the site knows when it admits mail: its domains, its identities and their keys.
#[derive(Debug, Clone)]
pub struct SiteView {
    pub local_domains: Vec<String>,
    /// Postfix's `recipient_delimiter`.
    pub delimiter: Option<String>,
    /// Identity address (normalised; includes the default identity) → its public key.
    pub identities: HashMap<String, PublicKey>,
}

/// How the sealing key relates to the claimed envelope sender (RFC 8601 result of `x-toxmail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The key is the one this site knows for the sender.
    Pass(Basis),
    /// This site knows another key for the sender.
    Fail(Basis),
    /// Nothing is known of the sender (or it is the null path).
    None,
    /// The sender's domain publishes keys, but DNS could not be asked just now.
    TempError,
}

/// Where the key this site knows for a sender comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    Contact,
    Dns,
}

impl Verdict {
    /// The RFC 8601 result keyword.
    pub fn result(self) -> &'static str {
        match self {
            Verdict::Pass(_) => "pass",
            Verdict::Fail(_) => "fail",
            Verdict::None => "none",
            Verdict::TempError => "temperror",
        }
    }

    /// The text stored with the row and read back by the injector.
    pub fn as_db(self) -> &'static str {
        match self {
            Verdict::Pass(Basis::Contact) => "pass contact",
            Verdict::Pass(Basis::Dns) => "pass dns",
            Verdict::Fail(Basis::Contact) => "fail contact",
            Verdict::Fail(Basis::Dns) => "fail dns",
            Verdict::None => "none",
            Verdict::TempError => "temperror",
        }
    }

    /// Reads [`Verdict::as_db`] back; anything else is `None` (nothing vouched for).
    pub fn from_db(text: &str) -> Verdict {
        match text {
            "pass contact" => Verdict::Pass(Basis::Contact),
            "pass dns" => Verdict::Pass(Basis::Dns),
            "fail contact" => Verdict::Fail(Basis::Contact),
            "fail dns" => Verdict::Fail(Basis::Dns),
            "temperror" => Verdict::TempError,
            _ => Verdict::None,
        }
    }

    /// A comment for the header saying what the result rests on.
    pub fn basis(self) -> Option<&'static str> {
        match self {
            Verdict::Pass(Basis::Contact) | Verdict::Fail(Basis::Contact) => Some("contact"),
            Verdict::Pass(Basis::Dns) | Verdict::Fail(Basis::Dns) => Some("_tox DNS record"),
            Verdict::None | Verdict::TempError => None,
        }
    }
}

fn refuse(code: NackCode, detail: &'static str) -> Refusal {
    Refusal::new(code, detail)
}

/// The mailbox a letter sealed to `identity` (whose key is `identity_key`) may be delivered to:
/// that identity's own address (with any extension), `<its Tox ID>@tox`, or, for the site's
/// default identity, a local mailbox that has no key of its own. Everything else is refused:
/// other domains, other mailboxes, `%` and `!` routing, anything that is not a plain address.
pub fn bind_recipient(
    recipient: &str,
    identity: &str,
    identity_key: &PublicKey,
    site: &SiteView,
) -> Result<MailAddress, Refusal> {
    let default = identity == DEFAULT_IDENTITY;
    if let Some((local, domain)) = recipient.rsplit_once('@')
        && domain.eq_ignore_ascii_case(crate::resolve::address::TOX_DOMAIN)
    {
        let named = local.parse::<ToxId>().ok().map(|id| id.public_key());
        if named != Some(*identity_key) || default {
            return Err(refuse(
                NackCode::UnknownMailbox,
                "the Tox address is not this identity's",
            ));
        }
        return MailAddress::parse(identity).map_err(|_| {
            refuse(
                NackCode::UnknownMailbox,
                "this identity has no deliverable address",
            )
        });
    }
    let address = MailAddress::parse(recipient)
        .map_err(|_| refuse(NackCode::Malformed, "the recipient is not a plain address"))?;
    if address.has_routing_characters() {
        return Err(refuse(
            NackCode::UnknownMailbox,
            "the recipient's local part holds % or ! (routing through this site)",
        ));
    }
    if !site.local_domains.iter().any(|d| d == address.domain()) {
        return Err(refuse(
            NackCode::UnknownMailbox,
            "the recipient is not in a domain of this site",
        ));
    }
    let key = normalise(address.as_str(), site.delimiter.as_deref()).unwrap_or_default();
    let bound = if default {
        !site.identities.contains_key(&key)
    } else {
        key == identity
    };
    if !bound {
        return Err(refuse(
            NackCode::UnknownMailbox,
            "the recipient is not the mailbox this key belongs to",
        ));
    }
    Ok(address)
}

/// Parses the sealed envelope sender; a sender that is not the null path or a plain address is
/// refused for good.
pub fn parse_sender(sender: &str) -> Result<ReversePath, Refusal> {
    ReversePath::parse(sender).map_err(|_| {
        refuse(
            NackCode::Malformed,
            "the envelope sender is not a plain address",
        )
    })
}

/// The verdict on `sender` for mail sealed by `sealer`, given how this site would route mail to
/// the sender (`route`: contacts, `_tox` DNS, own identities). A sender in one of this site's own
/// domains is refused unless sealed by that identity's own key: a stranger never speaks for a
/// local user.
pub fn sender_verdict(
    sender: &ReversePath,
    sealer: &PublicKey,
    route: &Route,
    site: &SiteView,
) -> Result<Verdict, Refusal> {
    let Some(address) = sender.address() else {
        return Ok(Verdict::None);
    };
    let local_claim =
        site.local_domains.iter().any(|d| d == address.domain()) || *route == Route::Local;
    if local_claim {
        let key = normalise(address.as_str(), site.delimiter.as_deref()).unwrap_or_default();
        return match site.identities.get(&key) {
            Some(own) if own == sealer => Ok(Verdict::None),
            _ => Err(refuse(
                NackCode::Forged,
                "a sender of this site's own domain, sealed by a key that is not theirs",
            )),
        };
    }
    Ok(match route {
        Route::Tox { peer, source, .. } => {
            let basis = match source {
                RouteSource::Dns => Basis::Dns,
                RouteSource::Contact | RouteSource::ToxAddress => Basis::Contact,
            };
            if peer.public_key() == *sealer {
                Verdict::Pass(basis)
            } else {
                Verdict::Fail(basis)
            }
        }
        Route::TempFail(_) => Verdict::TempError,
        Route::Local | Route::NotTox | Route::Invalid(_) => Verdict::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn site() -> SiteView {
        SiteView {
            local_domains: vec!["b.test".into()],
            delimiter: Some("+".into()),
            identities: HashMap::from([
                ("bob@b.test".to_string(), key(1)),
                (DEFAULT_IDENTITY.to_string(), key(9)),
            ]),
        }
    }

    fn tox_address(pk: PublicKey) -> String {
        format!("{}@tox", ToxId::new(pk, 0))
    }

    #[test]
    fn the_recipient_is_the_mailbox_of_the_identity_it_is_sealed_to() {
        let s = site();
        let ok =
            |r: &str, id: &str, k: u8| bind_recipient(r, id, &key(k), &s).map(|a| a.to_string());
        assert_eq!(ok("bob@b.test", "bob@b.test", 1).unwrap(), "bob@b.test");
        assert_eq!(
            ok("Bob+lists@B.test", "bob@b.test", 1).unwrap(),
            "Bob+lists@b.test"
        );
        assert_eq!(
            ok(&tox_address(key(1)), "bob@b.test", 1).unwrap(),
            "bob@b.test"
        );
        // The default identity takes local mailboxes without a key of their own.
        assert_eq!(
            ok("carol@b.test", DEFAULT_IDENTITY, 9).unwrap(),
            "carol@b.test"
        );

        let refused =
            |r: &str, id: &str, k: u8| bind_recipient(r, id, &key(k), &s).unwrap_err().code;
        assert_eq!(
            refused("alice@b.test", "bob@b.test", 1),
            NackCode::UnknownMailbox
        );
        assert_eq!(
            refused("bob@b.test", DEFAULT_IDENTITY, 9),
            NackCode::UnknownMailbox
        );
        assert_eq!(
            refused("bob@c.test", "bob@b.test", 1),
            NackCode::UnknownMailbox
        );
        assert_eq!(
            refused(&tox_address(key(2)), "bob@b.test", 1),
            NackCode::UnknownMailbox
        );
        assert_eq!(
            refused(&tox_address(key(9)), DEFAULT_IDENTITY, 9),
            NackCode::UnknownMailbox
        );
        assert_eq!(
            refused("carol%plain.test@b.test", DEFAULT_IDENTITY, 9),
            NackCode::UnknownMailbox
        );
        assert_eq!(
            refused("plain.test!carol@b.test", DEFAULT_IDENTITY, 9),
            NackCode::UnknownMailbox
        );
        let smuggle = "carol@plain.test>\r\nDATA\r\n.\r\nRCPT TO:<bob@b.test";
        assert_eq!(refused(smuggle, "bob@b.test", 1), NackCode::Malformed);
        assert_eq!(
            refused("@b.test:bob@b.test", "bob@b.test", 1),
            NackCode::Malformed
        );
    }

    #[test]
    fn sender_verdicts_follow_what_the_site_knows() {
        let s = site();
        let sender = |a: &str| parse_sender(a).unwrap();
        let tox = |k: u8, source| Route::Tox {
            peer: ToxId::new(key(k), 0),
            source,
            relays: Vec::new(),
        };
        let v = |a: &str, sealer: u8, route: &Route| {
            sender_verdict(&sender(a), &key(sealer), route, &s)
        };
        assert_eq!(v("", 5, &Route::NotTox).unwrap(), Verdict::None);
        assert_eq!(v("a@a.test", 5, &Route::NotTox).unwrap(), Verdict::None);
        assert_eq!(
            v("a@a.test", 5, &tox(5, RouteSource::Contact)).unwrap(),
            Verdict::Pass(Basis::Contact)
        );
        assert_eq!(
            v("a@a.test", 5, &tox(6, RouteSource::Dns)).unwrap(),
            Verdict::Fail(Basis::Dns)
        );
        let temp = Route::TempFail("dns".into());
        assert_eq!(v("a@a.test", 5, &temp).unwrap(), Verdict::TempError);
        // A stranger claiming a local user, in any case.
        assert_eq!(
            v("alice@b.test", 5, &Route::NotTox).unwrap_err().code,
            NackCode::Forged
        );
        assert_eq!(
            v("Bob@B.TEST", 5, &Route::Local).unwrap_err().code,
            NackCode::Forged
        );
        // The identity's own key may.
        assert_eq!(v("bob@b.test", 1, &Route::Local).unwrap(), Verdict::None);
        assert!(parse_sender("a@a.test>\r\nRCPT TO:<x@y.test").is_err());
    }

    #[test]
    fn verdicts_survive_the_database() {
        for v in [
            Verdict::Pass(Basis::Contact),
            Verdict::Pass(Basis::Dns),
            Verdict::Fail(Basis::Contact),
            Verdict::Fail(Basis::Dns),
            Verdict::None,
            Verdict::TempError,
        ] {
            assert_eq!(Verdict::from_db(v.as_db()), v);
        }
        assert_eq!(Verdict::from_db("pass"), Verdict::None);
    }
}
