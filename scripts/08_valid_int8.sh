#!/usr/bin/env bash
# Step 8: integer-only INT8 validation, in the workshop's form.
source "$(dirname "$0")/common.sh"
./darknet classifier qat_int8 "$DATA" "$CFG" "$BACKUP/$BASE.qat.int8.qweights" "$BACKUP/$BASE.qat.int8.qparams"
