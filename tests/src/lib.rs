//! Test harness: starts real services on loopback in temp dirs.
