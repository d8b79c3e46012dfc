#!/usr/bin/env bash
# End-to-end benchmark of ./darknet on the workshop network (cfg/mnist_fc4.cfg):
# train_randseq, FP32 valid and integer-only valid_int8, each run several times
# and reported as medians, then the forward-pass throughputs from the criterion
# benches (criterion's own estimate, on one thread). The last line of stdout
# is for programs:
#   BENCH train_img_s=<f> fp32_fwd_img_s=<f> int8_fwd_img_s=<f> int8_fwd_b1_img_s=<f> valid_int8_s=<f>
# A figure whose bench does not exist is printed as nan.
#
# Every output goes to a temporary folder: a copy of cfg/mnist.data whose
# `backup=` points there, a copy of the cfg, and log/ (the binary writes
# log/<cfg base>.json relative to its working directory, so it runs there).
# The committed backup/mnist_fc4.weights is only read.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

usage() {
    cat <<'EOF'
Usage: scripts/bench.sh [OPTIONS]

Options:
  --train-runs N      train_randseq runs (default 3)
  --valid-runs N      runs of valid and of valid_int8 each (default 5)
  --data FILE         data file to copy (default cfg/mnist.data)
  --cfg FILE          cfg to copy (default cfg/mnist_fc4.cfg)
  --weights FILE      FP32 weights for valid and qat_int8 (default backup/mnist_fc4.weights)
  --binary FILE       darknet binary to measure (default ./darknet)
  --build             run `cargo build --release` and measure
                      target/release/darknet; ./darknet is left as it is
  --no-criterion      skip `cargo bench`; the forward figures become nan
  --fp32-bench NAME   criterion bench (benches/NAME.rs) with the FP32 forward
                      pass at batch 128 (default train_step)
  --fp32-id ID        criterion id of that forward pass (default mlp_fp32/forward_b128)
  --numpy-anchor      after each train_randseq run, time the 11 GEMMs of one
                      training step with numpy/OpenBLAS on 2 threads
                      (scripts/anchors/numpy_mlp_step.py), and print the
                      ratio of the two medians; makes the anchors' venv on
                      first use (ANCHORS_VENV, default /tmp/darknet-anchors-venv)
  --keep              keep the temporary folder and print its path
  -h, --help          print this help

Needs data/mnist/ (run `bash scripts/02_data.sh` first) and /usr/bin/time.
EOF
}

TRAIN_RUNS=3
VALID_RUNS=5
DATA=cfg/mnist.data
CFG=cfg/mnist_fc4.cfg
WEIGHTS=backup/mnist_fc4.weights
BINARY=./darknet
BUILD=0
CRITERION=1
KEEP=0
NUMPY_ANCHOR=0
# benches/train_step.rs times the FP32 forward pass of the workshop network
# as mlp_fp32/forward_b128 and mlp_fp32/forward_b1, and a whole training step
# as mlp_fp32/train_step_b128. Without that bench, fp32_fwd_img_s is nan.
FP32_BENCH=train_step
FP32_ID=mlp_fp32/forward_b128
FP32_B1_ID=mlp_fp32/forward_b1
TRAIN_STEP_ID=mlp_fp32/train_step_b128

# Prints the value that follows option $1, or stops when it is missing or
# looks like another option.
value_of() {
    if [ $# -lt 2 ] || [ -z "$2" ] || [[ "$2" == -* ]]; then
        echo "error: $1 needs a value (see --help)" >&2
        exit 2
    fi
    printf '%s' "$2"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --train-runs|--valid-runs|--data|--cfg|--weights|--binary|--fp32-bench|--fp32-id)
            value=$(value_of "$@")
            case "$1" in
                --train-runs) TRAIN_RUNS=$value ;;
                --valid-runs) VALID_RUNS=$value ;;
                --data) DATA=$value ;;
                --cfg) CFG=$value ;;
                --weights) WEIGHTS=$value ;;
                --binary) BINARY=$value ;;
                --fp32-bench) FP32_BENCH=$value; FP32_B1_ID=""; TRAIN_STEP_ID="" ;;
                --fp32-id) FP32_ID=$value; FP32_B1_ID=""; TRAIN_STEP_ID="" ;;
            esac
            shift 2 ;;
        --build) BUILD=1; BINARY=target/release/darknet; shift ;;
        --no-criterion) CRITERION=0; shift ;;
        --keep) KEEP=1; shift ;;
        --numpy-anchor) NUMPY_ANCHOR=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

# Stops with a message. Once the work folder exists it is kept, so the
# files that a message points to are still there.
fail() {
    echo "error: $*" >&2
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
        KEEP=1
    fi
    exit 1
}

[[ "$TRAIN_RUNS" =~ ^[1-9][0-9]*$ ]] || fail "invalid --train-runs $TRAIN_RUNS: expected a positive integer"
[[ "$VALID_RUNS" =~ ^[1-9][0-9]*$ ]] || fail "invalid --valid-runs $VALID_RUNS: expected a positive integer"
for file in "$DATA" "$CFG" "$WEIGHTS"; do
    [ -f "$file" ] || fail "$file not found"
done
[ -x /usr/bin/time ] || fail "/usr/bin/time not found: install GNU time (apt-get install time)"

if [ "$NUMPY_ANCHOR" = 1 ]; then
    ANCHOR_PYTHON=$(bash scripts/anchors/venv.sh) || fail "could not make the anchors' venv (see above)"
fi
if [ "$BUILD" = 1 ]; then
    cargo build --release >&2
fi
[ -x "$BINARY" ] || fail "$BINARY not found: build it with make"

# --- temporary set-up ---------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/darknet-bench.XXXXXX")
cleanup() {
    if [ "$KEEP" = 1 ]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
mkdir -p "$WORK/backup" "$WORK/log"

# Other builds may replace the binary while this script runs, so every run
# uses one private copy.
BIN="$WORK/darknet"
cp "$BINARY" "$BIN"
BINARY_TIME=$(stat -c '%y' "$BINARY" | cut -d. -f1)

# Relative list paths in the data file are relative to the repository, so they
# are made absolute; `backup=` is redirected to the temporary folder.
absolute() {
    case "$1" in
        /*) printf '%s' "$1" ;;
        *) printf '%s/%s' "$REPO" "$1" ;;
    esac
}
data_value() {
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\([^#[:space:]]*\).*/\1/p" "$DATA" | tail -n 1
}
TRAIN_LIST=$(data_value train)
VALID_LIST=$(data_value valid)
LABELS=$(data_value labels)
for key in TRAIN_LIST VALID_LIST LABELS; do
    [ -n "${!key}" ] || fail "$DATA has no ${key%_LIST} entry"
    printf -v "$key" '%s' "$(absolute "${!key}")"
    [ -f "${!key}" ] || fail "${!key} (from $DATA) not found: run bash scripts/02_data.sh"
done
grep -v -E '^[[:space:]]*(train|valid|labels|backup)[[:space:]]*=' "$DATA" > "$WORK/bench.data" || true
cat >> "$WORK/bench.data" <<EOF
train = $TRAIN_LIST
valid = $VALID_LIST
labels = $LABELS
backup = $WORK/backup/
EOF

BASE=$(basename "$CFG" .cfg)
cp "$CFG" "$WORK/$BASE.cfg"
WEIGHTS=$(absolute "$WEIGHTS")

cfg_value() {
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p" "$CFG" | head -n 1
}
BATCH=$(cfg_value batch)
MAX_BATCHES=$(cfg_value max_batches)
[ -n "$BATCH" ] && [ -n "$MAX_BATCHES" ] || fail "$CFG needs batch= and max_batches= in [net]"
TRAIN_IMAGES=$((BATCH * MAX_BATCHES))

# --- helpers ------------------------------------------------------------------

# Prints the median of the numbers given as arguments.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Runs a command in $WORK under /usr/bin/time -v. Sets WALL (seconds, from the
# nanosecond clock) and RSS_KB (peak resident set size); stdout, stderr and
# time's report stay in $WORK/<label>.{out,err,time}. Exits on failure.
timed_run() {
    local label=$1
    shift
    local start end
    start=$(date +%s%N)
    if ! (cd "$WORK" && /usr/bin/time -v -o "$label.time" "$@" > "$label.out" 2> "$label.err"); then
        tail -n 20 "$WORK/$label.err" >&2
        fail "$label failed: $* (its output is in $WORK/$label.out and $label.err)"
    fi
    end=$(date +%s%N)
    WALL=$(awk -v ns=$((end - start)) 'BEGIN { printf "%.3f", ns / 1e9 }')
    RSS_KB=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$WORK/$label.time")
    [ -n "$RSS_KB" ] || fail "no peak RSS in $WORK/$label.time"
}

# Reads Darknet's summary line `N: top 1: A, top K: B, S seconds` from a
# validation's stdout and sets VALID_IMAGES, TOP1 and VALID_SECONDS.
parse_summary() {
    local line
    line=$(grep -E '^[0-9]+: top 1: ' "$WORK/$1.out" | tail -n 1) || fail "no summary line in $WORK/$1.out"
    VALID_IMAGES=${line%%:*}
    TOP1=$(sed -n 's/^[0-9]*: top 1: \([0-9.]*\),.*/\1/p' <<< "$line")
    VALID_SECONDS=$(sed -n 's/.*, \([0-9.]*\) seconds$/\1/p' <<< "$line")
    [ -n "$TOP1" ] && [ -n "$VALID_SECONDS" ] || fail "unexpected summary line in $WORK/$1.out: $line"
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "nan" }'
}

mib() {
    awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'
}

# --- header -------------------------------------------------------------------

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no -- src Cargo.toml 2>/dev/null)" ]; then
    COMMIT="$COMMIT (src/ or Cargo.toml modified)"
fi
echo "darknet bench: commit $COMMIT, binary $BINARY built $BINARY_TIME"
echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "load before: $(uptime)"
echo "work folder: $WORK"
echo

# --- train_randseq ------------------------------------------------------------

declare -a train_rate train_wall train_rss numpy_rate
for run in $(seq "$TRAIN_RUNS"); do
    echo "train_randseq run $run/$TRAIN_RUNS ($MAX_BATCHES batches of $BATCH)..." >&2
    rm -f "$WORK/backup/$BASE.weights"
    timed_run "train$run" "$BIN" classifier train_randseq bench.data "$BASE.cfg"
    [ -f "$WORK/backup/$BASE.weights" ] || fail "train_randseq wrote no $WORK/backup/$BASE.weights"
    train_wall+=("$WALL")
    train_rss+=("$RSS_KB")
    train_rate+=("$(ratio "$TRAIN_IMAGES" "$WALL")")
    if [ "$NUMPY_ANCHOR" = 1 ]; then
        # The anchor runs right after each training run, so both see the same
        # machine. The variables that pin an older OpenBLAS kernel are unset,
        # as in scripts/anchors/run.sh.
        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$ANCHOR_PYTHON" scripts/anchors/numpy_mlp_step.py \
            --threads 2 --repeats 200 > "$WORK/numpy$run.out" 2>&1 || fail "numpy_mlp_step.py failed: see $WORK/numpy$run.out"
        numpy_rate+=("$(sed -n 's/^ANCHOR numpy_step threads=2 .*img_s=\([0-9.]*\).*/\1/p' "$WORK/numpy$run.out")")
        [ -n "${numpy_rate[-1]}" ] || fail "no ANCHOR line in $WORK/numpy$run.out"
    fi
done
TRAIN_IMG_S=$(median "${train_rate[@]}")
printf 'train_randseq  %s runs: median %s images/s, %s s wall, peak RSS %s MiB (%d images per run; each: %s)\n' \
    "$TRAIN_RUNS" "$TRAIN_IMG_S" "$(median "${train_wall[@]}")" "$(mib "$(median "${train_rss[@]}")")" "$TRAIN_IMAGES" "${train_rate[*]}"
if [ "$NUMPY_ANCHOR" = 1 ]; then
    NUMPY_IMG_S=$(median "${numpy_rate[@]}")
    printf 'numpy anchor   %s runs, interleaved: median %s images/s (GEMMs only, 2 threads; each: %s)\n' \
        "$TRAIN_RUNS" "$NUMPY_IMG_S" "${numpy_rate[*]}"
    printf 'train_randseq / numpy anchor: %s\n' "$(awk -v a="$TRAIN_IMG_S" -v b="$NUMPY_IMG_S" 'BEGIN { printf "%.2f", a / b }')"
fi

# --- valid (FP32) -------------------------------------------------------------

# images/s divides by the seconds of Darknet's summary line. They cover
# reading the list, decoding the JPEGs and the forward passes, and the wall
# time adds process start and loading the weights.
declare -a valid_rate valid_wall valid_rss
for run in $(seq "$VALID_RUNS"); do
    timed_run "valid$run" "$BIN" classifier valid bench.data "$BASE.cfg" "$WEIGHTS"
    parse_summary "valid$run"
    valid_rate+=("$(ratio "$VALID_IMAGES" "$VALID_SECONDS")")
    valid_wall+=("$WALL")
    valid_rss+=("$RSS_KB")
done
printf 'valid          %s runs: median %s images/s, %s s whole process, peak RSS %s MiB (%s images, top-1 %s)\n' \
    "$VALID_RUNS" "$(median "${valid_rate[@]}")" "$(median "${valid_wall[@]}")" \
    "$(mib "$(median "${valid_rss[@]}")")" "$VALID_IMAGES" "$TOP1"

# --- qat_int8, then valid_int8 ------------------------------------------------

echo "qat_int8 (makes the .qweights and .qparams)..." >&2
timed_run qat "$BIN" classifier qat_int8 bench.data "$BASE.cfg" "$WEIGHTS"
QWEIGHTS="backup/$BASE.qat.int8.qweights"
QPARAMS="backup/$BASE.qat.int8.qparams"
[ -f "$WORK/$QWEIGHTS" ] && [ -f "$WORK/$QPARAMS" ] || fail "qat_int8 wrote no $WORK/$QWEIGHTS or $WORK/$QPARAMS"
printf 'qat_int8       1 run: %s s wall (not a benchmark figure, it makes the int8 files)\n' "$WALL"

declare -a int8_rate int8_wall int8_rss
for run in $(seq "$VALID_RUNS"); do
    timed_run "valid_int8_$run" "$BIN" classifier valid_int8 bench.data "$BASE.cfg" "$QWEIGHTS" "$QPARAMS"
    parse_summary "valid_int8_$run"
    int8_rate+=("$(ratio "$VALID_IMAGES" "$VALID_SECONDS")")
    int8_wall+=("$WALL")
    int8_rss+=("$RSS_KB")
done
VALID_INT8_S=$(median "${int8_wall[@]}")
printf 'valid_int8     %s runs: median %s images/s, %s s whole process, peak RSS %s MiB (%s images, top-1 %s)\n' \
    "$VALID_RUNS" "$(median "${int8_rate[@]}")" "$VALID_INT8_S" \
    "$(mib "$(median "${int8_rss[@]}")")" "$VALID_IMAGES" "$TOP1"

# --- forward passes (criterion) -----------------------------------------------

# Prints `<id> <seconds>` for each benchmark in criterion's stdout, where
# seconds is the middle of `time: [low estimate high]`. Criterion 0.5 prints
# its slope estimate there (the mean without one), not the median. The id is at
# the start of a line, and `time:` follows on the same line or, for a long id,
# on the next. The `change:` block repeats
# `time:` with percentages, so only the first `time:` after an id counts.
parse_criterion() {
    awk '
        function seconds(value, unit) {
            if (unit == "ps") return value * 1e-12
            if (unit == "ns") return value * 1e-9
            if (unit ~ /^(µ|μ|u)s$/) return value * 1e-6
            if (unit == "ms") return value * 1e-3
            if (unit == "s") return value
            return -1
        }
        function take(start,   s) {
            s = seconds($(start + 3), $(start + 4))
            if (s > 0) printf "%s %.9g\n", id, s
            id = ""
        }
        /^[^[:space:]]/ { id = $1; if ($2 == "time:") take(2); next }
        id != "" && $1 == "time:" { take(1) }
    ' "$1"
}

# Runs one criterion bench on one thread and prints `<id> <seconds>`
# for the ids matching the regex.
run_criterion() {
    local bench=$1 regex=$2 out="$WORK/criterion_$1.out"
    echo "cargo bench --bench $bench (RAYON_NUM_THREADS=1, ids matching $regex)..." >&2
    if ! RAYON_NUM_THREADS=1 cargo bench --bench "$bench" -- --warm-up-time 1 --measurement-time 3 "$regex" \
        > "$out" 2> "$WORK/criterion_$bench.err"; then
        tail -n 20 "$WORK/criterion_$bench.err" >&2
        fail "cargo bench --bench $bench failed"
    fi
    parse_criterion "$out"
}

# Prints the seconds of one id from run_criterion's output, or fails.
criterion_seconds() {
    local seconds
    seconds=$(awk -v id="$2" '$1 == id { print $2 }' <<< "$1")
    [ -n "$seconds" ] || fail "criterion printed no time for $2"
    echo "$seconds"
}

has_bench() {
    [ -f "benches/$1.rs" ] && grep -q "^name = \"$1\"" Cargo.toml
}

FP32_FWD_IMG_S=nan
INT8_FWD_IMG_S=nan
INT8_FWD_B1_IMG_S=nan
if [ "$CRITERION" = 1 ]; then
    # The kernel the binary picks: DARKNET_GEMM_I8 if set, else the fastest the
    # CPU supports (Kernel::best_supported in src/kernels/gemm_i8/mod.rs).
    if [ -n "${DARKNET_GEMM_I8:-}" ]; then
        KERNEL=$DARKNET_GEMM_I8
    elif grep -qw avx512f /proc/cpuinfo && grep -qw avx512_vnni /proc/cpuinfo; then
        KERNEL=vnni
    elif grep -qw avx2 /proc/cpuinfo; then
        KERNEL=avx2
    else
        KERNEL=scalar
    fi

    if has_bench gemm_i8; then
        # benches/gemm_i8.rs: group `forward`, ids forward/batch<rows>/<kernel>,
        # the four int8 layers on one thread.
        times=$(run_criterion gemm_i8 "^forward/batch(1|128)/$KERNEL\$")
        seconds_b128=$(criterion_seconds "$times" "forward/batch128/$KERNEL")
        seconds_b1=$(criterion_seconds "$times" "forward/batch1/$KERNEL")
        INT8_FWD_IMG_S=$(ratio 128 "$seconds_b128")
        INT8_FWD_B1_IMG_S=$(ratio 1 "$seconds_b1")
        printf 'int8 forward   criterion, %s kernel, 1 thread: batch 128 %s images/s, batch 1 %s images/s\n' \
            "$KERNEL" "$INT8_FWD_IMG_S" "$INT8_FWD_B1_IMG_S"
    else
        echo "note: no gemm_i8 bench in benches/ and Cargo.toml; int8 forward figures are nan" >&2
    fi

    if has_bench "$FP32_BENCH"; then
        # Batch 1 and the training step are printed for comparison with the
        # anchors. They are not part of the BENCH line.
        ids="$FP32_ID${FP32_B1_ID:+|$FP32_B1_ID}${TRAIN_STEP_ID:+|$TRAIN_STEP_ID}"
        times=$(run_criterion "$FP32_BENCH" "^($ids)\$")
        seconds_b128=$(criterion_seconds "$times" "$FP32_ID")
        FP32_FWD_IMG_S=$(ratio 128 "$seconds_b128")
        printf 'fp32 forward   criterion, %s, 1 thread: batch 128 %s images/s\n' "$FP32_ID" "$FP32_FWD_IMG_S"
        if [ -n "$FP32_B1_ID" ]; then
            seconds_b1=$(criterion_seconds "$times" "$FP32_B1_ID")
            printf 'fp32 forward   criterion, %s, 1 thread: batch 1 %s images/s\n' "$FP32_B1_ID" "$(ratio 1 "$seconds_b1")"
        fi
        if [ -n "$TRAIN_STEP_ID" ]; then
            seconds_step=$(criterion_seconds "$times" "$TRAIN_STEP_ID")
            printf 'fp32 train step criterion, %s, 1 thread: %s ms, %s images/s\n' "$TRAIN_STEP_ID" \
                "$(awk -v s="$seconds_step" 'BEGIN { printf "%.2f", s * 1e3 }')" "$(ratio 128 "$seconds_step")"
        fi
    else
        echo "note: no $FP32_BENCH bench in benches/ and Cargo.toml; fp32_fwd_img_s is nan" >&2
    fi
fi

echo
echo "load after: $(uptime)"
echo "BENCH train_img_s=$TRAIN_IMG_S fp32_fwd_img_s=$FP32_FWD_IMG_S int8_fwd_img_s=$INT8_FWD_IMG_S int8_fwd_b1_img_s=$INT8_FWD_B1_IMG_S valid_int8_s=$VALID_INT8_S"
