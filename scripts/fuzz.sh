#!/usr/bin/env bash
# Runs each cargo-fuzz target under fuzz/ for SECONDS (default 60), one after
# another, and stops at the first crash. cargo-fuzz needs a nightly toolchain
# (`rustup toolchain install nightly`) and `cargo install cargo-fuzz`.
# TOOLCHAIN=stable-bootstrap uses the stable compiler with RUSTC_BOOTSTRAP=1.
#   scripts/fuzz.sh 600            # ten minutes per target
#   TARGETS="cfg data" scripts/fuzz.sh 30
# A crash leaves its input in fuzz/artifacts/<target>/; replay it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-60}
TARGETS=${TARGETS:-"cfg data weights qweights qparams int8_network"}
TOOLCHAIN=${TOOLCHAIN:-nightly}

if [ "$TOOLCHAIN" = stable-bootstrap ]; then
    export RUSTC_BOOTSTRAP=1
    CARGO=(cargo +stable)
else
    CARGO=(cargo "+$TOOLCHAIN")
fi

# Seed the corpora with valid input, so the fuzzer starts past the size
# checks: the repository's cfg and data files, and zero-filled parameter
# files of the sizes the targets expect (see fuzz/fuzz_targets/).
mkdir -p fuzz/corpus/cfg fuzz/corpus/data fuzz/corpus/weights fuzz/corpus/qweights fuzz/corpus/qparams fuzz/corpus/int8_network
cp cfg/*.cfg fuzz/corpus/cfg/
cp cfg/*.data fuzz/corpus/data/
zeros() { head -c "$1" /dev/zero; }
# weights: a selector byte (0: plain network, 1: batch norm), a 0.2 header, then the floats.
{ printf '\x00'; printf '\x00\x00\x00\x00\x02\x00\x00\x00'; zeros 12; zeros 68; } > fuzz/corpus/weights/plain-0.2
{ printf '\x01'; zeros 16; zeros 56; } > fuzz/corpus/weights/batch-norm-0.0
zeros 38 > fuzz/corpus/qweights/zeros
# qparams: a layer-count byte (2), then per layer S1, S2, S3 = 1.0 and three zero points.
{ printf '\x02'; for _ in 1 2; do printf '\x00\x00\x80\x3f\x00\x00\x80\x3f\x00\x00\x80\x3f\x00\x00\x00'; done; } > fuzz/corpus/qparams/unit-scales
# int8_network: the same two layers of unit scales (30 bytes), then a zero .qweights.
{ for _ in 1 2; do printf '\x00\x00\x80\x3f\x00\x00\x80\x3f\x00\x00\x80\x3f\x00\x00\x00'; done; zeros 38; } > fuzz/corpus/int8_network/unit-scales

for target in $TARGETS; do
    echo "== fuzzing $target for $SECONDS_PER_TARGET s"
    # -O alone turns overflow checks off; -a turns them back on, so an
    # arithmetic overflow on crafted input is reported as a crash.
    "${CARGO[@]}" fuzz run -O -a "$target" -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=1
done
