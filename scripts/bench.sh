#!/usr/bin/env bash
# The bridge benchmark (docs/benchmarks.md, "Bridge (issue 3)"): installs what is missing (plus
# Dovecot's LMTP server, the ingest anchor), builds release binaries, then runs
# toxmail-bridge-bench inside a network namespace that has only loopback. Arguments go to the
# benchmark (rounds, default 3); `relay` as the first argument runs toxmail-relay-bench instead,
# `intake` the intake memory benchmark (one LMTP transaction of 50 recipients × 50 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_missing dovecot-lmtpd

# The harness starts the bridge (and relay) found next to the benchmark binary: build them in release.
cargo build --release --locked -p toxmail-bridge -p toxmail-relay -p toxmail-tests --bins
if [ "${1:-}" = relay ]; then
  # `scripts/bench.sh relay [rates|handon]`: relay deposit and drain rates, hand-on memory
  # (docs/benchmarks.md, "Relay").
  in_loopback_namespace target/release/toxmail-relay-bench "${@:2}"
else
  in_loopback_namespace target/release/toxmail-bridge-bench "$@"
fi
