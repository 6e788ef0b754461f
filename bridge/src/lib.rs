//! toxmail-bridge: the Postfix-facing daemon. A mail's path through it:
//!
//! 1. Postfix's trivial-rewrite asks [`postfix::socketmap`] about each recipient; the answer comes
//!    from [`resolve`] (`<ToxID>@tox`, the contacts table, or a `_tox` DNS TXT record for opted-in
//!    domains), cached, never blocking on the database.
//! 2. Postfix hands Tox recipients to [`postfix::lmtp`]; [`intake`] picks the sending identity,
//!    seals one envelope per recipient and commits them all to [`store`] before any 250.
//!    [`reply`] is the one table mapping failures to LMTP replies.
//! 3. [`delivery::outbound`] hands queued rows to the identity's courier (tox-runtime), which waits
//!    for the peer and its "stored" ack; outcomes go back to the store with backoff.
//! 4. On the receiving site, [`delivery::inbound`] opens and checks each envelope, commits it
//!    sealed, acks, and later injects it into the local MTA with trace headers.
//!
//! 5. Each queue change above writes a delivery event in the same transaction when `[events]` is
//!    on; [`events::publisher`] sends them to RabbitMQ (docs/events.md).
//!
//! [`app`] wires it all (`run` takes bound listeners), [`config`] is the TOML configuration,
//! [`identity`] the Tox identities and their savedata, [`admin`] the CLI subcommands,
//! [`metrics`] every Prometheus family, [`health`] the database and queue sampler and `/readyz`,
//! [`status`] the operator's `status` report, [`retention`] the purge of finished history.
#![forbid(unsafe_code)]

pub mod address;
pub mod admin;
pub mod app;
pub mod config;
pub mod delivery;
pub mod dsn_request;
pub mod events;
pub mod health;
pub mod identity;
pub mod intake;
pub mod metrics;
pub mod postfix;
pub mod reply;
pub mod resolve;
pub mod retention;
pub mod roster;
pub mod status;
pub mod store;
