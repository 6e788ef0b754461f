//! toxmail-bridge: the Postfix-facing daemon. (Map filled in as modules land.)
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
pub mod delivery;
pub mod identity;
pub mod intake;
pub mod postfix;
pub mod reply;
pub mod resolve;
pub mod store;
