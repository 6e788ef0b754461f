#!/usr/bin/env bash
# The main job (README): installs what is missing, builds, and runs the live demo inside a network
# namespace that has only loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

cargo build --release --locked -p toxmail-tests --bin toxmail-demo
in_loopback_namespace target/release/toxmail-demo "$@"
