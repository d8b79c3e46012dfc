#!/usr/bin/env bash
# Step 4: FP32 training; writes $BACKUP/<cfg base>.weights.
source "$(dirname "$0")/common.sh"
./darknet classifier train_randseq "$DATA" "$CFG" "$@"
