#!/usr/bin/env bash
# Step 2: the workshop's data set-up: log/, unzip data/mnist.zip, make the lists.
source "$(dirname "$0")/common.sh"
mkdir -p log
cd data
rm -rf mnist
unzip -q mnist.zip
cd mnist
find "$(pwd)"/train -name \*.jpg > train.list
find "$(pwd)"/test -name \*.jpg > test.list
echo "train.list: $(wc -l < train.list) images, test.list: $(wc -l < test.list) images"
