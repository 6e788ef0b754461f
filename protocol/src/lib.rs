//! toxmail-protocol: the bytes both toxmail daemons agree on. No I/O, no async, no unsafe.
//!
//! Modules, in the order a message meets them:
//! - [`id`]: `PublicKey`, the 38-byte `ToxId` with its checksum, and the random `MessageId`.
//! - [`hello`]: the friend-request text (`toxmail/1 ...`) that tells toxmail nodes from chat clients.
//! - [`envelope`]: `seal` turns a `Letter` (RFC 5322 bytes plus delivery metadata) into a padded
//!   XSalsa20-Poly1305 box for one recipient key; `peek_header` reads the cleartext header
//!   cheaply; `open` verifies and decrypts it.
//! - [`frame`]: `Hello`, `Offer`, `Ack` and `Nack`, carried in Tox lossless custom packets
//!   (first byte [`PACKET_ID`]); one `Frame::decode` reads every kind, relay frames included.
//! - [`relay`]: `Deposit`, `Custody`, `Refuse`, `Register`, `Holding`, `Released` and `RelayList`,
//!   the store-and-forward frames between bridges and relay nodes (`Frame::Relay`).
//! - `reader` (private): the bounded cursor every decoder reads through.
//!
//! Path of one message: the sending bridge seals a `Letter` for the recipient's key, announces it
//! with a `Frame::Offer` (message id and size), ships the envelope as a Tox file, and the receiver
//! `peek_header`s, `open`s, stores, then answers `Frame::Ack(message_id)` or a `Frame::Nack`.
//! For an offline recipient the sender `Deposit`s the envelope with a relay instead; the relay
//! answers `Custody` and later `Offer`s it to the recipient the same way.
//!
//! Every decoder takes `&[u8]`, checks each length against the remaining input before slicing,
//! and returns its module's error enum instead of panicking. The byte layouts, golden vectors and
//! versioning rules are in `docs/protocol.md`.
#![forbid(unsafe_code)]

pub mod envelope;
pub mod frame;
pub mod hello;
pub mod id;
mod reader;
pub mod relay;

pub use envelope::*;
pub use frame::*;
pub use hello::*;
pub use id::*;
pub use relay::*;
