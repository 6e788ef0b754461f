//! Which friend requests a node accepts. Every request must carry the toxmail hello, so other Tox
//! clients are told apart; the nospam in the full Tox ID is Tox's own guard against strangers.

use std::collections::HashSet;

use toxmail_protocol::{PublicKey, parse_friend_request};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FriendPolicy {
    /// Anyone who knows our full Tox ID (nospam included) and speaks toxmail.
    AnyoneWithAddress,
    /// Only these keys (the operator's contacts, plus keys added at run time).
    KnownContacts(HashSet<PublicKey>),
}

/// What to do with one friend request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    NotToxmail,
    NotAContact,
}

impl FriendPolicy {
    pub fn judge(&self, from: &PublicKey, message: &[u8]) -> Verdict {
        if parse_friend_request(message).is_none() {
            return Verdict::NotToxmail;
        }
        match self {
            FriendPolicy::AnyoneWithAddress => Verdict::Accept,
            FriendPolicy::KnownContacts(keys) if keys.contains(from) => Verdict::Accept,
            FriendPolicy::KnownContacts(_) => Verdict::NotAContact,
        }
    }

    pub fn allow(&mut self, pk: PublicKey) {
        if let FriendPolicy::KnownContacts(keys) = self {
            keys.insert(pk);
        }
    }

    /// Takes back [`FriendPolicy::allow`].
    pub fn forbid(&mut self, pk: &PublicKey) {
        if let FriendPolicy::KnownContacts(keys) = self {
            keys.remove(pk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toxmail_protocol::friend_request_message;

    #[test]
    fn policy_judges_hello_and_contacts() {
        let a = PublicKey([1; 32]);
        let b = PublicKey([2; 32]);
        let hello = friend_request_message("from a");
        let any = FriendPolicy::AnyoneWithAddress;
        assert_eq!(any.judge(&a, &hello), Verdict::Accept);
        assert_eq!(any.judge(&a, b"hi, add me"), Verdict::NotToxmail);
        let mut known = FriendPolicy::KnownContacts(HashSet::from([a]));
        assert_eq!(known.judge(&a, &hello), Verdict::Accept);
        assert_eq!(known.judge(&b, &hello), Verdict::NotAContact);
        known.allow(b);
        assert_eq!(known.judge(&b, &hello), Verdict::Accept);
    }
}
