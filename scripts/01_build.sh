#!/usr/bin/env bash
# Step 1: build the release binary and place it at ./darknet.
source "$(dirname "$0")/common.sh"
make
./darknet --version
