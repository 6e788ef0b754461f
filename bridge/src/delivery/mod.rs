//! Outbound delivery over Tox (`outbound`: queue rows → courier → delivered/failed/rescheduled),
//! inbound reception (`inbound`: the Inbox that verifies and commits received envelopes, and the
//! injector that hands them to the local MTA), relays (`via_relay`: registration, relay lists,
//! deposits for peers that stay offline), peer presence for the operator (`presence`), and their
//! helpers.

pub mod dsn;
pub mod inbound;
pub mod notify;
pub mod outbound;
pub mod presence;
pub mod returned;
pub mod smtp_client;
pub mod trace;
pub mod via_relay;

use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Longest a work loop sleeps with neither a wake-up nor a due time: a net for work written by
/// another process (`toxmail-bridge queue` commands, a second bridge), not how work is found.
pub const SAFETY_POLL: Duration = Duration::from_secs(60);

/// Waits for a wake-up (a commit in this process), for `due`, or for [`SAFETY_POLL`]; false
/// when `shutdown` came first. A wake-up given while the loop was busy is kept by `Notify`.
pub async fn idle(wake: &Notify, due: Option<SystemTime>, shutdown: &CancellationToken) -> bool {
    let until = due
        .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
        .map_or(SAFETY_POLL, |d| d.min(SAFETY_POLL));
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = wake.notified() => true,
        _ = tokio::time::sleep(until) => true,
    }
}

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
