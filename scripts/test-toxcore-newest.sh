#!/usr/bin/env bash
# The Tox end-to-end tests again, against the newest c-toxcore Debian has as source
# (scripts/build-toxcore.sh), where test.sh runs everything against Debian 12's libtoxcore 0.2.18.
# Builds only what those tests need, in a target dir of its own so that the main build is not
# rebuilt; the tests and both daemons' start logs must name the version built (tests/src/lib.rs,
# assert_logs_libtoxcore). Sourced deps.sh provides the test services and the namespace helper.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

prefix=target/toxcore
scripts/build-toxcore.sh "$prefix"
export PKG_CONFIG_PATH="$PWD/$prefix/lib/pkgconfig"
TOXMAIL_EXPECT_LIBTOXCORE=$(pkg-config --modversion toxcore)
export TOXMAIL_EXPECT_LIBTOXCORE
export CARGO_TARGET_DIR="$PWD/target/toxcore-newest"

# The daemons the relay tests start, and the e2e binary (nextest builds it).
cargo build --locked -p toxmail-bridge -p toxmail-relay --bins
# tox_*: Tox peers in the test process; relay*: toxmail-relay processes, and relay_sites also
# toxmail-bridge with Postfix, so both daemons' version lines are checked.
filter='test(/^(tox_|relay)/)'
echo "Tox e2e tests against libtoxcore $TOXMAIL_EXPECT_LIBTOXCORE"
if cargo nextest --version >/dev/null 2>&1; then
  in_loopback_namespace cargo nextest run --locked --offline -p toxmail-tests --test e2e \
    --no-fail-fast --test-threads 6 -E "$filter"
else
  in_loopback_namespace cargo test --locked --offline -p toxmail-tests --test e2e --no-fail-fast \
    -- --test-threads 6 tox_ relay
fi
