//! The service manager's view of a daemon (systemd `Type=notify`, `sd_notify(3)`): readiness,
//! status lines, watchdog pings and stopping, and the wait for a service the daemon cannot start
//! without. Each message is one datagram to `$NOTIFY_SOCKET`; without it (tests, a shell) nothing
//! is sent and only the log says what happens.

use std::fmt::Display;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// The first pause after a failed attempt in [`wait_for`]; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(16);

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot tell the service manager");
    }
}

/// `STATUS=`: the line `systemctl status` shows.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// `READY=1`: the daemon serves (its listeners are bound and answered, its database is
/// reachable). Units with `Type=notify` are started from here on.
pub fn ready(text: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(text)]);
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// With `WatchdogSec=` set, pings the service manager at half the interval until `shutdown`,
/// so a runtime that stops scheduling tasks gets the daemon restarted. Without it, nothing.
pub fn spawn_watchdog(shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    });
}

/// Runs `attempt` until it succeeds, pausing 1 s, 2 s, … up to 16 s after each failure that
/// `is_temporary` accepts (a database still starting, a network not yet up), and saying what
/// it waits for in the log and the unit's status. Other failures return at once. `None`: the
/// daemon was told to stop while waiting. The service manager bounds the wait
/// (`TimeoutStartSec=`), a shell user with Ctrl-C.
pub async fn wait_for<T, E: Display>(
    what: &str,
    shutdown: &CancellationToken,
    is_temporary: impl Fn(&E) -> bool,
    mut attempt: impl AsyncFnMut() -> Result<T, E>,
) -> Result<Option<T>, E> {
    let mut pause = FIRST_PAUSE;
    loop {
        let error = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            result = attempt() => match result {
                Ok(value) => return Ok(Some(value)),
                Err(e) if is_temporary(&e) => e,
                Err(e) => return Err(e),
            },
        };
        tracing::warn!(%error, retry_in = ?pause, "waiting for {what}");
        status(&format!("waiting for {what}: {error}"));
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = next_pause(pause);
    }
}

fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(MAX_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_for_retries_a_temporary_failure_after_a_pause() {
        let start = std::time::Instant::now();
        let mut attempts = 0;
        let result = wait_for(
            "the test",
            &CancellationToken::new(),
            |e: &&str| *e == "down",
            async || {
                attempts += 1;
                if attempts < 2 {
                    Err("down")
                } else {
                    Ok(attempts)
                }
            },
        )
        .await;
        assert_eq!(result, Ok(Some(2)));
        assert!(start.elapsed() >= FIRST_PAUSE);
    }

    #[test]
    fn pauses_double_up_to_the_cap() {
        let mut pauses = vec![FIRST_PAUSE];
        while pauses.len() < 7 {
            pauses.push(next_pause(*pauses.last().unwrap()));
        }
        let secs: Vec<u64> = pauses.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 16, 16]);
    }

    #[tokio::test]
    async fn wait_for_returns_a_permanent_failure_at_once() {
        let mut attempts = 0;
        let result: Result<Option<()>, &str> = wait_for(
            "the test",
            &CancellationToken::new(),
            |e: &&str| *e == "down",
            async || {
                attempts += 1;
                Err("wrong password")
            },
        )
        .await;
        assert_eq!(result, Err("wrong password"));
        assert_eq!(attempts, 1);
    }

    #[tokio::test]
    async fn wait_for_gives_up_when_shutdown_is_cancelled() {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let result: Result<Option<()>, &str> = wait_for(
            "the test",
            &shutdown,
            |_: &&str| true,
            async || {
                stop.cancel();
                Err("down")
            },
        )
        .await;
        assert_eq!(result, Ok(None));
    }

    #[test]
    fn messages_without_a_notify_socket_are_dropped_quietly() {
        // cargo does not set NOTIFY_SOCKET: these must neither fail nor panic then.
        ready("ready");
        status("status");
        stopping();
    }
}
