#!/usr/bin/env bash
# Runs the outside reference points (numpy_mlp_step.py, onnx_mlp.py) and
# prints a short table. The packages in requirements.txt are installed with
# pip into a venv, by default /tmp/darknet-anchors-venv, made on first use.
#
#   scripts/anchors/run.sh            # or ANCHORS_VENV=/path/to/venv scripts/anchors/run.sh
#
# Nothing is written to the repository: the ONNX models live in a temporary
# folder that onnx_mlp.py removes.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

PYTHON=$(bash "$HERE/venv.sh")

LOG=$(mktemp "${TMPDIR:-/tmp}/anchors.XXXXXX")
trap 'rm -f "$LOG"' EXIT

echo "load before: $(uptime)"

# The machine may set OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for old OpenBLAS
# builds. They make a current OpenBLAS use an older kernel, so this command
# alone runs without them, and numpy_mlp_step.py prints the kernel it picks.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PYTHON" "$HERE/numpy_mlp_step.py" | tee -a "$LOG"
echo
"$PYTHON" "$HERE/onnx_mlp.py" | tee -a "$LOG"

echo
echo "load after: $(uptime)"
echo
printf '%-42s %12s %14s\n' "anchor" "images/s" "per step/run"
grep '^ANCHOR ' "$LOG" | awk '
    {
        delete f
        for (i = 3; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    }
    $2 == "numpy_step" {
        printf "%-42s %12s %11s ms\n", "numpy GEMMs of a train step, " f["threads"] "T", f["img_s"], f["ms"]
    }
    $2 ~ /^onnx_/ {
        name = "onnxruntime " substr($2, 6) " forward, batch " f["batch"] ", 1T"
        printf "%-42s %12s %11s us\n", name, f["img_s"], f["latency_us"]
    }
'
