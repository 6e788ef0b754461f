#!/usr/bin/env bash
# Runs every fuzz target of toxmail-protocol (protocol/fuzz) and toxmail-bridge (bridge/fuzz) for
# N seconds each (default 60): scripts/fuzz.sh [seconds per target]
# Uses cargo-fuzz on the stable toolchain via RUSTC_BOOTSTRAP=1 (it needs -Z sanitizer flags),
# installing it first when missing (needs crates.io). Corpora grow in <crate>/fuzz/corpus/<target>;
# crashes land in <crate>/fuzz/artifacts/<target>. Exits 1 if any target found a failure.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [seconds per target, default 60]" >&2
    exit 2
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
# The Debian packages the build needs (and in_loopback_namespace: targets run without network).
source "$root/scripts/deps.sh"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Seed the corpora with the golden vectors so the first runs start from valid inputs.
# open_envelope reads its mode from the first byte: 0 feeds the rest to open() as raw bytes.
seed() { # target, golden file, prefix byte(s) as a printf format
    mkdir -p "$root/protocol/fuzz/corpus/$1"
    { printf "$3"; tr -d ' \n' <"$root/protocol/tests/golden/$2.hex" | xxd -r -p; } >"$root/protocol/fuzz/corpus/$1/golden-$2"
}
if command -v xxd >/dev/null; then
    for frame in hello offer ack nack deposit custody refuse register holding released relay_list; do seed decode_frame "$frame" ""; done
    seed open_envelope envelope '\x00'
fi
# The bridge's seeds are committed (bridge/fuzz/seeds/<target>); the corpus starts from a copy.
for dir in "$root"/bridge/fuzz/seeds/*/; do
    target="$(basename "$dir")"
    mkdir -p "$root/bridge/fuzz/corpus/$target"
    for file in "$dir"*; do
        [ -e "$root/bridge/fuzz/corpus/$target/$(basename "$file")" ] || cp "$file" "$root/bridge/fuzz/corpus/$target/"
    done
done

status=0
for crate in protocol bridge; do
    cd "$root/$crate"
    # One build per crate, before the runs: `cargo fuzz run` then only checks it is current.
    RUSTC_BOOTSTRAP=1 cargo fuzz build
    for target in $(RUSTC_BOOTSTRAP=1 cargo fuzz list); do
        echo "== fuzzing $crate $target for ${seconds}s"
        if ! in_loopback_namespace env RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$seconds"; then
            echo "!! $target found a failure: see $crate/fuzz/artifacts/$target" >&2
            status=1
        fi
    done
done
exit "$status"
