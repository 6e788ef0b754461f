//! End-to-end scenarios against real services on loopback: one module per scenario.
//! Run them inside a network namespace with only `lo` (see `scripts/test.sh`).

mod hostile_peer;
mod postfix_bad_input;
mod postfix_dsn;
mod postfix_flow;
mod postfix_harness;
mod postfix_recovery;
mod relay;
mod relay_bounds;
mod relay_receipts;
mod relay_sites;
mod tox_bad_input;
mod tox_burst;
mod tox_delivery;
mod tox_identity;
mod tox_resume;

use std::time::Duration;

/// A friend connection over loopback takes ~10 s (c-toxcore's onion lookup); allow a margin.
pub const CONNECT: Duration = Duration::from_secs(90);

/// After a peer restarts (a new, random DHT key), the other side keeps trying the old DHT key
/// until c-toxcore drops it as a bad node (`BAD_NODE_TIMEOUT`, 122 s) when the two cannot find
/// each other through the onion, as on a two-node test network: seen reconnecting after 8 s or
/// after 124 s, nothing in between. Then the usual connection time.
pub const RECONNECT_AFTER_RESTART: Duration = Duration::from_secs(122 + 90);
