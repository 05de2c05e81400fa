#!/usr/bin/env bash
# Builds (or reuses from cache) the control-plane and node binaries (kubelet, kube-proxy), etcd,
# kubectl, helm, MinIO and fake-gcs-server, all from the Go module proxy, and Azurite from npm. Prints the bin directory on the last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"

cache_root=${MBO_CACHE:-$HOME/.cache/mysql-backup-operator}
bin="$cache_root/k8s-$K8S_VERSION/bin"
work="$cache_root/k8s-$K8S_VERSION/build"
mkdir -p "$bin" "$work"
# Several stacks, worktrees or unit-test runs (tests/unit/test_packaging.py calls this script) may
# start at once and share this cache: one build at a time; the second then finds the first's result.
exec 9>"$cache_root/.build-binaries.lock"
flock 9
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0

log() { printf '[build-binaries] %s\n' "$*" >&2; }

need() { [ ! -x "$bin/$1" ]; }

k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
missing=()
for b in "${k8s_bins[@]}"; do need "$b" && missing+=("$b"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "building ${missing[*]} from k8s.io/kubernetes@$K8S_VERSION"
  mod="$work/kubernetes"
  mkdir -p "$mod"
  # k8s.io/kubernetes replaces every staging module with ./staging/...; a module that depends on it
  # must pin those to the published v0.x tags. Derive the list from the real go.mod, not a guess.
  gomod=$(cd "$mod" && GOFLAGS= go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  staging_ver="v0.${K8S_VERSION#v1.}"
  {
    echo "module mysqlbackup.dev/hack/kubernetes-build"
    echo
    echo "go 1.25"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$staging_ver" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$mod/go.mod"
  log "pinned $(grep -c ' => ' "$mod/go.mod") staging modules to $staging_ver"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  pkgs=()
  for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  (cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$bin/" "${pkgs[@]}")
fi

if need etcd; then
  log "building etcd $ETCD_VERSION"
  mod="$work/etcd"
  mkdir -p "$mod"
  cat > "$mod/main.go" <<'GO'
// Command etcd is the upstream etcd server, built through a wrapper module because the
// server module's own go.mod uses local replace directives that `go install` refuses.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  printf 'module mysqlbackup.dev/hack/etcd-build\n\ngo 1.25\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$mod/go.mod"
  (cd "$mod" && go mod tidy >/dev/null 2>&1 || true; go build -trimpath -ldflags "-s -w" -o "$bin/etcd" .)
fi

if need helm; then
  log "building helm $HELM_VERSION"
  GOBIN="$bin" GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

if need minio; then
  log "building minio $MINIO_VERSION"
  GOBIN="$bin" GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" "github.com/minio/minio@$MINIO_VERSION"
fi

if need fake-gcs-server; then
  log "building fake-gcs-server $FAKE_GCS_VERSION"
  GOBIN="$bin" GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" "github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION"
fi

# Azurite (the Azure Storage emulator) is a Node.js program: installed from npm once per version
# into the cache, and linked into the bin directory like the Go binaries.
azurite_dir="$cache_root/azurite-$AZURITE_VERSION"
if [ ! -x "$azurite_dir/node_modules/.bin/azurite-blob" ]; then
  log "installing azurite $AZURITE_VERSION from npm"
  mkdir -p "$azurite_dir"
  npm install --no-audit --no-fund --loglevel=error --prefix "$azurite_dir" "azurite@$AZURITE_VERSION" >&2
fi
ln -sfn "$azurite_dir/node_modules/.bin/azurite-blob" "$bin/azurite-blob"

echo "$bin"
