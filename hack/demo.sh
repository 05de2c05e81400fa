#!/usr/bin/env bash
# `make demo`: the whole product on the local stack, end to end.
#  1. bring up (or reuse) the stack: control plane, the node (kubelet, containerd, the image
#     built from this tree), MariaDB, MinIO
#  2. install the CRDs and start the operator
#  3. load a sample database, create a bucket, a BackupPolicy, a manual Backup
#  4. damage the data and Restore it (a pre-restore safety backup runs first)
# The stack is left running; `make stack-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY hack/stack.py up >/dev/null
sd=${MBO_STACK_DIR:-$PWD/.stack}
source "$sd/env.sh"
k() { kubectl "$@"; }

echo "== nodes and pods"
k get nodes -o wide
k get pods -A

exec $PY hack/demo.py
