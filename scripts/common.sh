# Shared settings of the step scripts; sourced, not run.
# CFG and DATA can be overridden from the environment, e.g.
#   CFG=cfg/mnist_fc4_smoke.cfg scripts/04_train.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=${DATA:-cfg/mnist.data}
CFG=${CFG:-cfg/mnist_fc4.cfg}
BASE=$(basename "$CFG" .cfg)
BACKUP=${BACKUP:-backup}
