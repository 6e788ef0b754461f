//! toxmail-protocol: placeholder, filled in by the protocol work.
#![forbid(unsafe_code)]
