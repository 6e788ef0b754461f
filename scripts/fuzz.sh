#!/usr/bin/env bash
# Runs every toxmail-protocol fuzz target for N seconds each (default 60): scripts/fuzz.sh [seconds]
# Uses cargo-fuzz on the stable toolchain via RUSTC_BOOTSTRAP=1 (it needs -Z sanitizer flags).
# Corpora grow in protocol/fuzz/corpus/<target>; crashes land in protocol/fuzz/artifacts/<target>.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [seconds per target, default 60]" >&2
    exit 2
fi

cd "$(dirname "$0")/../protocol"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Seed the corpora with the golden vectors so the first runs start from valid inputs.
# open_envelope reads its mode from the first byte: 0 feeds the rest to open() as raw bytes.
seed() { # target, golden file, prefix byte(s) as a printf format
    mkdir -p "fuzz/corpus/$1"
    { printf "$3"; tr -d ' \n' <"tests/golden/$2.hex" | xxd -r -p; } >"fuzz/corpus/$1/golden-$2"
}
if command -v xxd >/dev/null; then
    for frame in hello offer ack nack deposit custody refuse register holding released relay_list; do seed decode_frame "$frame" ""; done
    seed open_envelope envelope '\x00'
fi

status=0
for target in $(RUSTC_BOOTSTRAP=1 cargo fuzz list); do
    echo "== fuzzing $target for ${seconds}s"
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$seconds"; then
        echo "!! $target found a failure: see protocol/fuzz/artifacts/$target" >&2
        status=1
    fi
done
exit "$status"
