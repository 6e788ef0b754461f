#!/usr/bin/env bash
# The bridge benchmark (docs/benchmarks.md, "Bridge (issue 3)"): installs what is missing (plus
# Dovecot's LMTP server, the ingest anchor), builds release binaries, then runs
# toxmail-bridge-bench inside a network namespace that has only loopback. Arguments go to the
# benchmark (rounds, default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_missing dovecot-lmtpd

# The harness starts the bridge found next to the benchmark binary: build both in release.
cargo build --release --locked -p toxmail-bridge -p toxmail-tests --bins
in_loopback_namespace target/release/toxmail-bridge-bench "$@"
