//! How often a key may register. Each `Register` costs database writes (and a new recipient a
//! row), so the relay counts them per key in fixed windows, in a table of bounded size. Pure
//! logic: the caller passes `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use toxmail_protocol::PublicKey;

/// Why a `Register` was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TooMany {
    /// This key used up its registrations for the current window.
    #[error("too many registrations from this key; try again in {retry_in:?}")]
    FromKey { retry_in: Duration },
    /// The table is full of keys whose windows still run: new keys wait for one to end.
    #[error("too many keys registering; try again later")]
    Keys,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    count: u32,
}

/// Registrations per key per window, for at most `capacity` keys at once. A key the table has
/// no room for is refused rather than admitted uncounted, so the whole relay takes at most
/// `capacity × per_window` registrations per window however many keys ask.
#[derive(Debug)]
pub struct RegisterLimiter {
    per_window: u32,
    window: Duration,
    capacity: usize,
    seen: HashMap<PublicKey, Window>,
}

impl RegisterLimiter {
    pub fn new(per_window: u32, window: Duration, capacity: usize) -> RegisterLimiter {
        RegisterLimiter {
            per_window: per_window.max(1),
            window,
            capacity: capacity.max(1),
            seen: HashMap::new(),
        }
    }

    /// Counts one registration from `key` at `now`, or says why it is refused.
    pub fn admit(&mut self, key: PublicKey, now: Instant) -> Result<(), TooMany> {
        if let Some(w) = self.seen.get_mut(&key) {
            let age = now.saturating_duration_since(w.start);
            if age >= self.window {
                *w = Window {
                    start: now,
                    count: 1,
                };
                return Ok(());
            }
            if w.count >= self.per_window {
                return Err(TooMany::FromKey {
                    retry_in: self.window - age,
                });
            }
            w.count += 1;
            return Ok(());
        }
        if self.seen.len() >= self.capacity {
            // Only when full: one pass that forgets every window that has ended.
            let window = self.window;
            self.seen
                .retain(|_, w| now.saturating_duration_since(w.start) < window);
            if self.seen.len() >= self.capacity {
                return Err(TooMany::Keys);
            }
        }
        self.seen.insert(
            key,
            Window {
                start: now,
                count: 1,
            },
        );
        Ok(())
    }

    /// Keys remembered now (at most `capacity`).
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    #[test]
    fn a_key_gets_its_registrations_per_window_then_waits_for_the_next() {
        let t0 = Instant::now();
        let mut l = RegisterLimiter::new(2, HOUR, 10);
        assert_eq!(l.admit(key(1), t0), Ok(()));
        assert_eq!(l.admit(key(1), t0 + Duration::from_secs(60)), Ok(()));
        assert_eq!(
            l.admit(key(1), t0 + Duration::from_secs(600)),
            Err(TooMany::FromKey {
                retry_in: HOUR - Duration::from_secs(600)
            })
        );
        // Refusals are not counted, and another key has its own count.
        assert_eq!(l.admit(key(2), t0 + Duration::from_secs(600)), Ok(()));
        assert_eq!(l.admit(key(1), t0 + HOUR), Ok(()));
        assert_eq!(l.admit(key(1), t0 + HOUR), Ok(()));
        assert!(l.admit(key(1), t0 + HOUR).is_err());
    }

    #[test]
    fn the_table_never_grows_past_its_capacity_and_frees_ended_windows() {
        let t0 = Instant::now();
        let mut l = RegisterLimiter::new(1, HOUR, 3);
        for n in 0..3 {
            assert_eq!(l.admit(key(n), t0), Ok(()));
        }
        // Full of running windows: a new key is refused, not admitted uncounted.
        assert_eq!(
            l.admit(key(9), t0 + Duration::from_secs(1)),
            Err(TooMany::Keys)
        );
        assert_eq!(l.tracked(), 3);
        // A known key is still judged on its own count.
        assert!(matches!(
            l.admit(key(0), t0 + Duration::from_secs(1)),
            Err(TooMany::FromKey { .. })
        ));
        // Once the windows end, their keys are forgotten to make room.
        assert_eq!(l.admit(key(9), t0 + HOUR), Ok(()));
        assert_eq!(l.tracked(), 1);
        for n in 10..250 {
            let _ = l.admit(key(n), t0 + HOUR);
            assert!(l.tracked() <= 3);
        }
    }

    #[test]
    fn a_clock_that_does_not_advance_keeps_the_window_running() {
        let t0 = Instant::now() + HOUR;
        let mut l = RegisterLimiter::new(1, HOUR, 3);
        assert_eq!(l.admit(key(1), t0), Ok(()));
        // An earlier `now` (the caller's clocks disagree) counts as no time passed.
        assert!(l.admit(key(1), t0 - Duration::from_secs(5)).is_err());
    }
}
