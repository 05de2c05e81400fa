#!/usr/bin/env bash
# Builds the images the real node runs, with no container registry: a Debian base image from
# Debian's own packages (mmdebstrap), a tiny pause image for containerd's pod sandboxes, and the
# operator image from the repository's Dockerfile (buildah, chroot isolation). Each result is an
# OCI archive cached under ~/.cache/mysql-backup-operator/images, keyed by a hash of its inputs,
# so a warm run rebuilds nothing. Prints "<name> <archive>" per image on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache_root=${MBO_CACHE:-$HOME/.cache/mysql-backup-operator}
out="$cache_root/images"
mkdir -p "$out"
# Several stacks (worktrees) may start at once and share this cache: one build at a time, so two
# never write the same archive or constraints file; the second then finds the first one's result.
exec 9>"$out/.build.lock"
flock 9
# Our own buildah storage, so nothing else on the machine sees or prunes our layers.
bah=(buildah --root "$out/storage" --runroot "$out/run" --storage-driver overlay)

log() { printf '[build-image] %s\n' "$*" >&2; }

# The names the Dockerfile and containerd's config use.
BASE_NAME=docker.io/library/debian:bookworm-slim
PAUSE_NAME=localhost/mbo/pause:1
# The operator image's tag is the hash of its inputs (below): changed code, new tag, new pods.
IMAGE_REPO=${MBO_IMAGE_REPO:-docker.io/local/mysql-backup-operator}

# ---------------------------------------------------------------- base: debian:bookworm-slim
base_key=$( { echo v1; mmdebstrap --version; cat /etc/apt/sources.list.d/debian.sources 2>/dev/null || true; } | sha256sum | cut -c1-16)
base_tar="$out/debian-bookworm-slim-$base_key.tar"
if [ ! -s "$base_tar" ]; then
  log "mmdebstrap bookworm (minbase, docs stripped) -> $base_tar"
  # The mirror is Debian's; docs and man pages are left out as in Debian's own slim images.
  mmdebstrap --variant=minbase --mode=root --format=tar \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --aptopt='APT::Install-Recommends "false"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$base_tar.tmp" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" >&2
  mv "$base_tar.tmp" "$base_tar"
fi
if [ "$("${bah[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "dev.mysqlbackup.base-key"}}' "$BASE_NAME" 2>/dev/null || true)" != "$base_key" ]; then
  log "importing $BASE_NAME"
  ctr=$("${bah[@]}" from scratch)
  "${bah[@]}" add "$ctr" "$base_tar" / >/dev/null
  "${bah[@]}" config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --label "dev.mysqlbackup.base-key=$base_key" "$ctr"
  "${bah[@]}" commit --quiet "$ctr" "$BASE_NAME" >/dev/null
  "${bah[@]}" rm "$ctr" >/dev/null
fi

# ---------------------------------------------------------------- pause
pause_src="$here/pause"
pause_key=$( { echo v1; go version; cat "$pause_src"/*; } | sha256sum | cut -c1-16)
pause_tar="$out/pause-$pause_key.tar"
if [ ! -s "$pause_tar" ]; then
  log "building the pause image"
  work=$(mktemp -d)
  (cd "$pause_src" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$work/pause" .)
  ctr=$("${bah[@]}" from scratch)
  "${bah[@]}" copy --chmod 0755 "$ctr" "$work/pause" /pause >/dev/null
  "${bah[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  "${bah[@]}" commit --quiet "$ctr" "$PAUSE_NAME" >/dev/null
  "${bah[@]}" rm "$ctr" >/dev/null
  rm -rf "$work"
  "${bah[@]}" push --quiet "$PAUSE_NAME" "oci-archive:$pause_tar.tmp:$PAUSE_NAME" >&2
  mv "$pause_tar.tmp" "$pause_tar"
fi

# ---------------------------------------------------------------- the operator image
# The image gets the dependency versions the tests run with: the project virtualenv's, if any.
constraints="$out/constraints.txt"
if [ -x "$repo/.venv/bin/pip" ]; then
  "$repo/.venv/bin/pip" freeze --exclude-editable 2>/dev/null | grep -v '^-e ' > "$constraints.tmp" || true
  mv "$constraints.tmp" "$constraints"
else
  : > "$constraints"
fi
# Inputs: everything the Dockerfile copies, the base it starts from, the pinned versions.
image_key=$( { echo v1; echo "$base_key"; cat "$constraints"; cd "$repo" && git ls-files -z -- Dockerfile pyproject.toml README.md operator \
  | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)
image_tar="$out/mysql-backup-operator-$image_key.tar"
IMAGE_NAME="$IMAGE_REPO:$image_key"
if [ ! -s "$image_tar" ]; then
  log "building $IMAGE_NAME from the Dockerfile (buildah, chroot isolation)"
  ctx=$(mktemp -d)
  # Build from exactly the tracked files, so an untracked scratch file never lands in the image.
  (cd "$repo" && git ls-files -z -- Dockerfile pyproject.toml README.md operator | xargs -0 cp --parents -t "$ctx")
  # pip must trust what this machine trusts (a proxy here re-signs TLS with its own CA): the host's
  # bundle is mounted for the build only and never lands in the image.
  ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
  "${bah[@]}" build --quiet --isolation chroot --layers --pull=never \
    --volume "$ca:/run/mbo-build-ca.crt:ro" --build-arg PIP_CERT=/run/mbo-build-ca.crt \
    --volume "$constraints:/run/mbo-constraints.txt:ro" --build-arg PIP_CONSTRAINT=/run/mbo-constraints.txt \
    -f "$ctx/Dockerfile" -t "$IMAGE_NAME" "$ctx" >&2
  rm -rf "$ctx"
  "${bah[@]}" push --quiet "$IMAGE_NAME" "oci-archive:$image_tar.tmp:$IMAGE_NAME" >&2
  mv "$image_tar.tmp" "$image_tar"
fi

echo "$PAUSE_NAME $pause_tar"
echo "$IMAGE_NAME $image_tar"
