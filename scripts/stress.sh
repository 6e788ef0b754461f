#!/usr/bin/env bash
# Runs one e2e test many times while both cores are kept busy by a CPU hog, and prints how many
# runs passed and the burst figures they printed. Usage: scripts/stress.sh [runs] [test filter]
# (default: 30 runs of tox_burst). Exits non-zero if any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
runs=${1:-30}
filter=${2:-tox_burst}

cargo build --workspace --all-targets --locked -q
hogs=()
for _ in $(seq "$(nproc)"); do
  ( while :; do :; done ) &
  hogs+=($!)
done
trap 'kill "${hogs[@]}" 2>/dev/null || true' EXIT

passed=0
log=$(mktemp)
for i in $(seq "$runs"); do
  if in_loopback_namespace cargo nextest run -p toxmail-tests --test e2e --offline "$filter" \
      --no-capture >"$log" 2>&1; then
    passed=$((passed + 1))
    result=pass
  else
    result=FAIL
    cp "$log" "stress-fail-$i.log"
  fi
  echo "run $i: $result $(grep -ho 'last ack after [0-9.]*[a-z]*' "$log" | head -1)"
done
rm -f "$log"
echo "$passed/$runs passed with $(nproc) CPU hogs running"
[ "$passed" -eq "$runs" ]
