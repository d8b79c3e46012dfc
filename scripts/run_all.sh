#!/usr/bin/env bash
# Runs every workshop step in order on a clean copy of the committed tree and
# prints a summary table (accuracies and seconds per step).
#
#   scripts/run_all.sh [--cfg CFG] [--keep]
#
# --cfg CFG  the network cfg to train (default cfg/mnist_fc4.cfg)
# --keep     keep the clean copy and print its path
# Exits non-zero as soon as a step fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cfg=cfg/mnist_fc4.cfg
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cfg) cfg=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "usage: scripts/run_all.sh [--cfg CFG] [--keep]" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/darknet-run-all.XXXXXX")
cleanup() { if [ "$keep" = 0 ]; then rm -rf "$work"; else echo "clean copy kept at $work"; fi; }
trap cleanup EXIT
# A clean copy: the committed files only, plus the cargo build cache so the
# build step does not start from zero.
git -C "$repo" archive HEAD | tar -x -C "$work"
if [ -d "$repo/target" ]; then ln -s "$repo/target" "$work/target"; fi
cd "$work"
export CFG=$cfg

declare -a names seconds
run_step() {
  local name=$1 script=$2
  local start end
  start=$(date +%s.%N)
  echo "== $name: scripts/$script" >&2
  if ! bash "scripts/$script" > "log/step_$script.out" 2> "log/step_$script.err"; then
    cat "log/step_$script.out" >&2
    tail -n 20 "log/step_$script.err" >&2
    echo "FAILED: $name (scripts/$script)" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  names+=("$name")
  seconds+=("$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')")
}
accuracy() { # file -> "top1 topk"
  tail -n 1 "$1" | sed -E 's/^[0-9]+: top 1: ([0-9.]+), top [0-9]+: ([0-9.]+).*/\1 \2/'
}

mkdir -p log
run_step "build" 01_build.sh
run_step "data set-up" 02_data.sh
run_step "environment check (shipped weights)" 03_check.sh
run_step "FP32 training" 04_train.sh
run_step "FP32 validation" 05_valid.sh
run_step "QAT fine-tuning" 06_qat.sh
run_step "FP32 validation after QAT" 07_valid_qat_fp32.sh
run_step "INT8 validation" 08_valid_int8.sh

read -r check1 check2 < <(accuracy log/step_03_check.sh.out)
read -r fp1 fp2 < <(accuracy log/step_05_valid.sh.out)
read -r qfp1 qfp2 < <(accuracy log/step_07_valid_qat_fp32.sh.out)
read -r int1 int2 < <(accuracy log/step_08_valid_int8.sh.out)

echo
echo "cfg: $cfg"
echo "| result | top-1 | top-2 |"
echo "|---|---|---|"
echo "| shipped weights (environment check) | $check1 | $check2 |"
echo "| FP32 after training | $fp1 | $fp2 |"
echo "| FP32 after QAT | $qfp1 | $qfp2 |"
echo "| INT8 (integer-only) | $int1 | $int2 |"
echo
echo "| step | seconds |"
echo "|---|---|"
for i in "${!names[@]}"; do
  printf '| %s | %s |\n' "${names[$i]}" "${seconds[$i]}"
done
