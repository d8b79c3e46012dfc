#!/usr/bin/env bash
# Step 5: FP32 validation of the trained weights.
source "$(dirname "$0")/common.sh"
./darknet classifier valid "$DATA" "$CFG" "$BACKUP/$BASE.weights"
