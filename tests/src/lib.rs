//! Test harness for toxmail: starts real services (Tox peers, tox-bootstrapd, RabbitMQ, …) on
//! loopback, in temp dirs, on free ports, and stops them when dropped. Scenarios live in `e2e/`.

pub mod bootstrapd;
pub mod cli;
pub mod dns;
pub mod dovecot;
pub mod inbox;
pub mod knot;
pub mod metrics;
pub mod peers;
pub mod ports;
pub mod postfix;
pub mod postgres;
pub mod rabbitmq;
pub mod relay;
pub mod site;
pub mod smtp;

use std::time::{Duration, Instant};

/// Polls `cond` every 50 ms until it holds; false after `timeout`. Tests wait with this, never sleep.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The libtoxcore these tests and the daemons they start run on: the one the bindings were
/// generated from (the same build), and `TOXMAIL_EXPECT_LIBTOXCORE` when that is set
/// (`scripts/test-toxcore-newest.sh` sets it to the version it built).
pub fn expected_libtoxcore() -> String {
    let running = tox_runtime::libtoxcore_version();
    assert_eq!(
        running,
        tox_runtime::libtoxcore::BUILT_AGAINST.to_string(),
        "the loader gave another libtoxcore than the build found"
    );
    if let Ok(want) = std::env::var("TOXMAIL_EXPECT_LIBTOXCORE") {
        assert_eq!(running, want, "TOXMAIL_EXPECT_LIBTOXCORE");
    }
    running
}

/// Asserts that a daemon's log names the libtoxcore it runs on (logged once at start), and that
/// it is [`expected_libtoxcore`].
pub fn assert_logs_libtoxcore(daemon: &str, log: &str) {
    let version = expected_libtoxcore();
    let text = format!("libtoxcore={version}");
    let json = format!("\"libtoxcore\":\"{version}\"");
    assert!(
        log.contains(&text) || log.contains(&json),
        "{daemon} did not log libtoxcore {version} at start\n{log}"
    );
}
