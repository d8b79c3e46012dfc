#!/usr/bin/env bash
# Step 6: QAT fine-tuning; writes .qat.int8.weights, .qat.int8.qweights, .qat.int8.qparams.
source "$(dirname "$0")/common.sh"
./darknet classifier qat_int8 "$DATA" "$CFG" "$BACKUP/$BASE.weights" "$@"
