//! Milter (placeholder; issue 4).
