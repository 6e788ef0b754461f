#!/usr/bin/env bash
# The main job (README): two mail sites on one machine; a mail sent through Postfix at site A
# arrives in a mailbox at site B over Tox. Installs what is missing, builds the release binaries
# and runs the demo inside a network namespace that has only loopback. `--keep` keeps its files.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

# toxmail-demo runs toxmail-bridge from its own directory (target/release).
cargo build --release --locked -p toxmail-bridge -p toxmail-tests \
  --bin toxmail-demo --bin toxmail-bridge

if [ "$(id -u)" -eq 0 ]; then
  in_loopback_namespace target/release/toxmail-demo "$@"
else
  # Private Postfix instances must be started by root.
  echo "the demo starts its own Postfix and PostgreSQL instances: running it with sudo"
  exec sudo -- unshare -n -- bash -c 'ip link set lo up && exec "$@"' _ \
    target/release/toxmail-demo "$@"
fi
