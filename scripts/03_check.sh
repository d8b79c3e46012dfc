#!/usr/bin/env bash
# Step 3: environment check, FP32 validation of the shipped weights.
source "$(dirname "$0")/common.sh"
./darknet classifier valid cfg/mnist.data cfg/mnist_fc4.cfg backup/mnist_fc4.weights
