#!/usr/bin/env bash
# Step 7: FP32 validation of the weights after QAT (no fake quantization).
source "$(dirname "$0")/common.sh"
./darknet classifier valid "$DATA" "$CFG" "$BACKUP/$BASE.qat.int8.weights"
