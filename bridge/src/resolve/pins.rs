//! Keys learned from DNS, pinned on first use: once an address's `_tox` record has given a key,
//! a later answer with another key (or no usable record at all) is not followed until the
//! operator accepts it. A spoofed or hijacked DNS answer then delays mail instead of sending it
//! to the attacker's key, or as plain mail.
//!
//! Pure logic: the database holds the pins (`dns_pins`), the roster hands them over, and what is
//! learned between two loads is kept here until the database has it.

use std::collections::{HashMap, HashSet};

use toxmail_protocol::{PublicKey, ToxId};

/// Changes reported (logged, written as pending) at most once each per process; beyond this many
/// the oldest memory is dropped, so a flood of changes cannot grow it without bound.
const REPORTED_CAP: usize = 10_000;

/// What DNS said about a pinned (or not yet pinned) address, as far as pinning cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A usable record with this Tox ID.
    Key(ToxId),
    /// No record, or none usable.
    Nothing,
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// Nothing pinned and nothing seen: not a Tox address as far as DNS knows.
    Unpinned,
    /// Nothing was pinned: this key is now (pin it).
    FirstUse,
    /// The pinned key, seen again.
    Match,
    /// A pin exists and DNS says something else: refuse until the operator decides.
    Changed { pinned: PublicKey },
}

/// An event for the database and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinEvent {
    /// Pin `id`'s key for `address` (if nothing is pinned yet).
    Learned { address: String, id: ToxId },
    /// DNS no longer gives the pinned key; `seen` is what it gives instead, if anything.
    Changed {
        address: String,
        pinned: PublicKey,
        seen: Option<ToxId>,
    },
}

#[derive(Debug, Default)]
pub struct Pins {
    /// As the database holds them.
    stored: HashMap<String, PublicKey>,
    /// Learned since the last load and not in the database yet.
    learned: HashMap<String, PublicKey>,
    /// Changes already reported, so that each is logged once and not at every lookup.
    reported: HashSet<(String, Option<PublicKey>)>,
}

impl Pins {
    /// Replaces the stored pins with the database's; learned pins the database now has (under
    /// any key: the database wins) are dropped.
    pub fn set_stored(&mut self, stored: HashMap<String, PublicKey>) {
        self.learned
            .retain(|address, _| !stored.contains_key(address));
        // A change the operator resolved (accepted or forgot) may be reported again later.
        self.reported
            .retain(|(address, _)| stored.contains_key(address));
        self.stored = stored;
    }

    pub fn pinned(&self, address: &str) -> Option<PublicKey> {
        self.stored
            .get(address)
            .or_else(|| self.learned.get(address))
            .copied()
    }

    pub fn check(&self, address: &str, seen: Seen) -> PinCheck {
        match (self.pinned(address), seen) {
            (None, Seen::Nothing) => PinCheck::Unpinned,
            (None, Seen::Key(_)) => PinCheck::FirstUse,
            (Some(pinned), Seen::Key(id)) if id.public_key() == pinned => PinCheck::Match,
            (Some(pinned), _) => PinCheck::Changed { pinned },
        }
    }

    /// Keeps a first-use pin until the database has it.
    pub fn learn(&mut self, address: &str, key: PublicKey) {
        self.learned.insert(address.to_string(), key);
    }

    /// True the first time this change is seen (report it), false after.
    pub fn first_report(&mut self, address: &str, seen: Seen) -> bool {
        let key = match seen {
            Seen::Key(id) => Some(id.public_key()),
            Seen::Nothing => None,
        };
        if self.reported.len() >= REPORTED_CAP {
            self.reported.clear();
        }
        self.reported.insert((address.to_string(), key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8, nospam: u32) -> ToxId {
        ToxId::new(PublicKey([n; 32]), nospam)
    }

    #[test]
    fn first_key_is_pinned_and_the_same_key_matches_whatever_its_nospam() {
        let mut pins = Pins::default();
        assert_eq!(
            pins.check("a@b.test", Seen::Key(id(1, 1))),
            PinCheck::FirstUse
        );
        pins.learn("a@b.test", id(1, 1).public_key());
        assert_eq!(pins.check("a@b.test", Seen::Key(id(1, 1))), PinCheck::Match);
        // A rotated nospam is the same key.
        assert_eq!(pins.check("a@b.test", Seen::Key(id(1, 2))), PinCheck::Match);
        assert_eq!(pins.check("c@b.test", Seen::Nothing), PinCheck::Unpinned);
    }

    #[test]
    fn another_key_or_no_record_for_a_pinned_address_is_a_change() {
        let mut pins = Pins::default();
        pins.set_stored(HashMap::from([("a@b.test".into(), PublicKey([1; 32]))]));
        let changed = PinCheck::Changed {
            pinned: PublicKey([1; 32]),
        };
        assert_eq!(pins.check("a@b.test", Seen::Key(id(2, 1))), changed);
        assert_eq!(pins.check("a@b.test", Seen::Nothing), changed);
    }

    #[test]
    fn the_database_wins_over_what_was_learned() {
        let mut pins = Pins::default();
        pins.learn("a@b.test", PublicKey([1; 32]));
        pins.learn("c@b.test", PublicKey([3; 32]));
        // The operator accepted another key for a@ meanwhile; c@ is not in the database yet.
        pins.set_stored(HashMap::from([("a@b.test".into(), PublicKey([2; 32]))]));
        assert_eq!(pins.pinned("a@b.test"), Some(PublicKey([2; 32])));
        assert_eq!(pins.pinned("c@b.test"), Some(PublicKey([3; 32])));
        // The next load has c@ too: nothing is lost in between.
        pins.set_stored(HashMap::from([
            ("a@b.test".into(), PublicKey([2; 32])),
            ("c@b.test".into(), PublicKey([3; 32])),
        ]));
        assert_eq!(pins.pinned("c@b.test"), Some(PublicKey([3; 32])));
        assert!(pins.learned.is_empty());
    }

    #[test]
    fn each_change_is_reported_once_until_the_operator_resolves_it() {
        let mut pins = Pins::default();
        let stored = HashMap::from([("a@b.test".into(), PublicKey([1; 32]))]);
        pins.set_stored(stored.clone());
        assert!(pins.first_report("a@b.test", Seen::Key(id(2, 1))));
        assert!(!pins.first_report("a@b.test", Seen::Key(id(2, 9))));
        assert!(pins.first_report("a@b.test", Seen::Nothing));
        assert!(pins.first_report("a@b.test", Seen::Key(id(3, 1))));
        pins.set_stored(stored);
        assert!(!pins.first_report("a@b.test", Seen::Key(id(2, 1))));
        // Forgotten by the operator, pinned anew later: a change is news again.
        pins.set_stored(HashMap::new());
        pins.set_stored(HashMap::from([("a@b.test".into(), PublicKey([1; 32]))]));
        assert!(pins.first_report("a@b.test", Seen::Key(id(2, 1))));
    }

    #[test]
    fn the_report_memory_is_bounded() {
        let mut pins = Pins::default();
        for n in 0..(REPORTED_CAP + 10) {
            pins.first_report(&format!("u{n}@b.test"), Seen::Nothing);
        }
        assert!(pins.reported.len() <= REPORTED_CAP);
    }
}
