#!/usr/bin/env bash
# The bridge benchmark (docs/benchmarks.md, "Bridge (issue 3)"): installs what is missing (plus
# Dovecot's LMTP server, the ingest anchor), builds release binaries, then runs
# toxmail-bridge-bench inside a network namespace that has only loopback. Arguments go to the
# benchmark (rounds, default 3); `relay` as the first argument runs toxmail-relay-bench instead;
# `queue [N]` the queue-memory figure of issue 12 (N copies for an offline peer, default 100,000).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_missing dovecot-lmtpd

# The harness starts the bridge (and relay) found next to the benchmark binary: build them in release.
cargo build --release --locked -p toxmail-bridge -p toxmail-relay -p toxmail-tests --bins
if [ "${1:-}" = relay ]; then
  # `scripts/bench.sh relay`: relay deposit and drain rates (docs/benchmarks.md, "Relay").
  in_loopback_namespace target/release/toxmail-relay-bench
else
  in_loopback_namespace target/release/toxmail-bridge-bench "$@"
fi
