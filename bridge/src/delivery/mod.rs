//! Outbound delivery over Tox (`outbound`: queue rows → courier → delivered/failed/rescheduled),
//! inbound reception (`inbound`: the Inbox that verifies and commits received envelopes, and the
//! injector that hands them to the local MTA), relays (`via_relay`: registration, relay lists,
//! deposits for peers that stay offline), and their helpers.

pub mod dsn;
pub mod inbound;
pub mod notify;
pub mod outbound;
pub mod smtp_client;
pub mod trace;
pub mod via_relay;

use std::time::Duration;

/// Exponential backoff: `min · 2^(attempts-1)`, capped at `max`.
pub fn backoff(attempts: i32, min: Duration, max: Duration) -> Duration {
    let exp = attempts.saturating_sub(1).clamp(0, 20) as u32;
    min.saturating_mul(1u32 << exp).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(backoff(1, min, max), min);
        assert_eq!(backoff(3, min, max), Duration::from_secs(240));
        assert_eq!(backoff(30, min, max), max);
        assert_eq!(backoff(0, min, max), min);
    }
}
