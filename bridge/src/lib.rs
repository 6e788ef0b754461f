//! toxmail-bridge: the Postfix-facing daemon. (Map filled in as modules land.)
#![forbid(unsafe_code)]

pub mod delivery;
pub mod postfix;
pub mod reply;
pub mod resolve;
pub mod store;
