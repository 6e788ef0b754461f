//! LMTP ingest and end-to-end latency benchmark (in progress).
fn main() {}
