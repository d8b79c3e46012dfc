#!/usr/bin/env bash
# Prints the Python of the anchors' venv, making it first when it does not
# exist: $ANCHORS_VENV, by default /tmp/darknet-anchors-venv, with the packages
# of requirements.txt from PyPI. Progress goes to stderr.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${ANCHORS_VENV:-/tmp/darknet-anchors-venv}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import numpy, threadpoolctl, onnx, onnxruntime' 2> /dev/null; then
    echo "making $VENV and installing $HERE/requirements.txt..." >&2
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet -r "$HERE/requirements.txt" >&2
fi
echo "$VENV/bin/python"
