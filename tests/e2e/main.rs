//! End-to-end scenarios against real services on loopback.
