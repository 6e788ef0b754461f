#!/usr/bin/env bash
# The bridge benchmark (docs/benchmarks.md, "Bridge (issue 3)"): installs what is missing (plus
# Dovecot's LMTP server, the ingest anchor), builds release binaries, then runs
# toxmail-bridge-bench inside a network namespace that has only loopback. Arguments go to the
# benchmark (rounds, default 3); `relay` as the first argument runs toxmail-relay-bench instead,
# `intake` the intake memory benchmark (one LMTP transaction of 50 recipients × 50 MiB);
# `queue [N]` the queue-memory figure of issue 12 (N copies for an offline peer, default 100,000);
# `mailboxes` runs toxmail-mailboxes-bench (idle cost of 1 / 100 / 1,000 identities; the rest of
# the arguments go to it, e.g. `scripts/bench.sh mailboxes --settle 60 --window 60 1 100 1000`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
if [ "${1:-}" = mailboxes ]; then
  # docs/benchmarks.md, "A thousand mailboxes (issue 12)": needs tox-bootstrapd (toxcore-utils).
  shift
  install_missing toxcore-utils
  cargo build --release --locked -p toxmail-tests --bin toxmail-mailboxes-bench
  in_loopback_namespace target/release/toxmail-mailboxes-bench "$@"
  exit
fi
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
