#!/usr/bin/env bash
# Installs the Debian packages the local stack needs, only when something is missing.
set -euo pipefail
need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb-dump >/dev/null 2>&1 || need+=(mariadb-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
# The agent compresses through the zstd CLI (its own process, bounded memory); without it, it
# falls back to in-process zstandard (slower, more memory).
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v go >/dev/null 2>&1 || need+=(golang-go)
# The standard age tool: the tests prove that users can decrypt an encrypted backup without us.
command -v age >/dev/null 2>&1 || need+=(age)
# Headless Chromium and its WebDriver for the web console's browser tests (tests/e2e/test_console.py).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# The node: container runtime, CNI plugins, iptables, image building.
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# ip netns / veth for the node's network namespace; nsenter is util-linux (above).
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "[install-deps] installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
