#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, checks formatting and lints, builds,
# then runs every test inside a network namespace that has only loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --all-targets --locked

# Tox tests mostly wait on the network: run more of them than there are cores.
if cargo nextest --version >/dev/null 2>&1; then
  in_loopback_namespace cargo nextest run --workspace --offline --no-fail-fast --test-threads 6
else
  in_loopback_namespace cargo test --workspace --offline --no-fail-fast -- --test-threads 6
fi

# Every fuzz target (protocol/fuzz, bridge/fuzz) for 20 s: a short pass that catches regressions
# on the committed seeds and a little beyond; scripts/fuzz.sh installs cargo-fuzz when missing.
scripts/fuzz.sh 20

# Compose files, deployment scripts (Zimbra, docker-mailserver, container start and healthcheck).
in_loopback_namespace scripts/deploy-check.sh

# Debian packages: build, dpkg -i, systemd-analyze verify, check-config, dpkg -r/-P.
TOXMAIL_DEB_PROFILE=dev scripts/package-check.sh

# The Tox e2e tests again, against the newest c-toxcore Debian has as source.
./scripts/test-toxcore-newest.sh
