//! toxmail-relay: store-and-forward of sealed envelopes for recipients that are offline.
//!
//! - [`config`]: the TOML file (`[relay]`, `[database]`, `[tox]`, `[policy]`), validated at load.
//! - [`store`]: the relay's own PostgreSQL schema: held envelopes (ciphertext and public keys
//!   only), registrations, per-depositor daily usage; versioned migrations.
//! - [`registrar`]: how often a key may register (a bounded, pure rate limiter).
//! - [`metrics`]: every Prometheus family of the relay service.
//! - [`service`]: the Tox node, the deposit policy (`RelayInbox`) and the loop that hands held
//!   envelopes on.
//! - [`hand_on`]: the hand-on itself, in pages: a few envelopes per recipient in memory at once.
//!
//! A deposit's path: a bridge befriends the relay and sends `Deposit` then the envelope as a
//! file (tox-runtime's transfer engine); the engine asks [`service::RelayInbox`] whether the
//! policy (by default: only for registered recipients) and quotas allow it, receives the file, checks that the header names the depositor
//! as sealer and the announced recipient, and the inbox commits it to `held` before the engine
//! confirms `Custody`. When the recipient, registered with `Register`, is online, the relay
//! offers each envelope to that key only, as an ordinary delivery, a few at a time, and deletes
//! it after the recipient's ack. Expired envelopes are purged.
#![forbid(unsafe_code)]

pub mod config;
pub mod hand_on;
pub mod metrics;
pub mod registrar;
pub mod service;
pub mod store;
