//! End-to-end scenarios against real services on loopback: one module per scenario.
//! Run them inside a network namespace with only `lo` (see `scripts/test.sh`).

mod events;
mod failover;
mod hostile_peer;
mod identity_move;
mod metrics;
mod operator_queue;
mod postfix_bad_input;
mod postfix_dsn;
mod postfix_flow;
mod postfix_harness;
mod postfix_recovery;
mod postfix_smtputf8;
mod postfix_stock_lmtp;
mod relay;
mod relay_bounds;
mod relay_pages;
mod relay_receipts;
mod relay_sites;
mod service_manager;
mod tox_bad_input;
mod tox_burst;
mod tox_delivery;
mod tox_identity;
mod tox_refriend;
mod tox_resume;
mod tox_version;
mod wakeups;

use std::time::Duration;

/// A friend connection over loopback takes ~10 s (c-toxcore's onion lookup); allow a margin.
pub const CONNECT: Duration = Duration::from_secs(90);
