#!/usr/bin/env bash
# Regenerates what is derived from the chart: the chart's copy of the CRDs and the plain-YAML
# install in manifests/install.yaml. tests/unit/test_packaging.py fails when they drift.
set -euo pipefail
cd "$(dirname "$0")/.."
helm=${HELM:-$(bash hack/build-binaries.sh | tail -1)/helm}
cp crds/*.yaml helm/mysql-backup-operator/crds/
{
  echo "# Plain-YAML install of mysql-backup-operator, rendered from helm/mysql-backup-operator"
  echo "# by hack/render-manifests.sh. Do not edit; change the chart and re-render."
  echo "# Replace REGISTRY/mysql-backup-operator with the image you built and pushed (docs/install.md),"
  echo "# then: kubectl apply --server-side -f manifests/install.yaml"
  echo "---"
  echo "apiVersion: v1"
  echo "kind: Namespace"
  echo "metadata:"
  echo "  name: mysql-backup-system"
  echo "  labels:"
  echo "    pod-security.kubernetes.io/enforce: restricted"
  "$helm" template mysql-backup-operator helm/mysql-backup-operator \
    --namespace mysql-backup-system --include-crds --kube-version 1.35.4 \
    --set image.repository=REGISTRY/mysql-backup-operator
} > manifests/install.yaml
echo "rendered manifests/install.yaml"
