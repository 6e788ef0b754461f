//! Friends nobody vouched for. Under `AnyoneWithAddress` whoever read a Tox ID from DNS may
//! befriend the node, and every friend costs savedata, memory and a connection for good. A friend
//! accepted this way is a *stranger* until it proves itself by delivering a validly sealed
//! envelope (or we deliver to it); strangers are accepted at a bounded rate, at most so many at
//! once, and dropped when they have not proven themselves within a grace period. Pure: the
//! caller passes `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use toxmail_protocol::PublicKey;

/// The bounds, with the defaults a family site needs (a handful of new correspondents a day).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrangerLimits {
    /// Strangers befriended and not yet proven, at most.
    pub max_pending: usize,
    /// New strangers accepted per minute, at most.
    pub per_minute: u32,
    /// A stranger that has not delivered a sealed envelope this long after it was accepted is
    /// dropped (the friendship deleted).
    pub grace: Duration,
}

impl Default for StrangerLimits {
    fn default() -> Self {
        StrangerLimits {
            max_pending: 32,
            per_minute: 10,
            grace: Duration::from_secs(600),
        }
    }
}

/// Why a stranger's friend request is not taken now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// `max_pending` strangers are already waiting to prove themselves.
    Pending,
    /// `per_minute` strangers were already accepted this minute.
    Rate,
}

#[derive(Debug)]
pub struct Strangers {
    limits: StrangerLimits,
    /// Accepted, not yet proven: when each was accepted.
    pending: HashMap<PublicKey, Instant>,
    window: Option<(Instant, u32)>,
}

impl Strangers {
    pub fn new(limits: StrangerLimits) -> Self {
        Strangers {
            limits,
            pending: HashMap::new(),
            window: None,
        }
    }

    /// Records `pk` as a stranger accepted at `now`, unless a bound says no. A stranger already
    /// pending (a repeated request) is admitted again without counting twice.
    pub fn admit(&mut self, pk: PublicKey, now: Instant) -> Result<(), Bound> {
        if self.pending.contains_key(&pk) {
            return Ok(());
        }
        if self.pending.len() >= self.limits.max_pending {
            return Err(Bound::Pending);
        }
        let (start, count) = match self.window {
            Some((start, count)) if now.duration_since(start) < Duration::from_secs(60) => {
                (start, count)
            }
            _ => (now, 0),
        };
        if count >= self.limits.per_minute {
            return Err(Bound::Rate);
        }
        self.window = Some((start, count + 1));
        self.pending.insert(pk, now);
        Ok(())
    }

    /// `pk` delivered a validly sealed envelope, or we delivered to it: no longer a stranger.
    pub fn proven(&mut self, pk: &PublicKey) {
        self.pending.remove(pk);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Strangers whose grace ran out by `now`; they are forgotten here, the caller unfriends them.
    pub fn expired(&mut self, now: Instant) -> Vec<PublicKey> {
        let grace = self.limits.grace;
        let gone: Vec<PublicKey> = self
            .pending
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= grace)
            .map(|(pk, _)| *pk)
            .collect();
        for pk in &gone {
            self.pending.remove(pk);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    fn limits() -> StrangerLimits {
        StrangerLimits {
            max_pending: 3,
            per_minute: 2,
            grace: Duration::from_secs(100),
        }
    }

    #[test]
    fn the_rate_and_the_pending_cap_bound_new_strangers() {
        let t0 = Instant::now();
        let mut s = Strangers::new(limits());
        assert_eq!(s.admit(pk(1), t0), Ok(()));
        assert_eq!(s.admit(pk(2), t0), Ok(()));
        assert_eq!(s.admit(pk(3), t0), Err(Bound::Rate));
        assert_eq!(
            s.admit(pk(1), t0),
            Ok(()),
            "a repeated request is no new stranger"
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(s.admit(pk(3), later), Ok(()));
        assert_eq!(s.admit(pk(4), later), Err(Bound::Pending));
        s.proven(&pk(2));
        assert_eq!(s.admit(pk(4), later), Ok(()));
        assert_eq!(s.len(), 3);
        assert!(!s.pending.contains_key(&pk(2)) && s.pending.contains_key(&pk(4)));
    }

    #[test]
    fn strangers_that_never_prove_themselves_expire() {
        let t0 = Instant::now();
        let mut s = Strangers::new(limits());
        s.admit(pk(1), t0).unwrap();
        s.admit(pk(2), t0 + Duration::from_secs(50)).unwrap();
        assert!(s.expired(t0 + Duration::from_secs(99)).is_empty());
        assert_eq!(s.expired(t0 + Duration::from_secs(100)), vec![pk(1)]);
        s.proven(&pk(2));
        assert!(s.expired(t0 + Duration::from_secs(1000)).is_empty());
        assert_eq!(s.len(), 0);
    }
}
