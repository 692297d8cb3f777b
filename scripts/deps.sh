#!/usr/bin/env bash
# Installs the Debian packages shoal's build and tests need, and only those
# that are missing, so running it again is cheap. Extra package names may be
# passed as arguments (the benchmarks pass theirs).
set -euo pipefail

need=(
  cmake              # pingora's build (HTTP mode)
  protobuf-compiler  # etcd-client's build (netd)
  pkg-config
  iproute2           # network namespaces for the overlay and cluster tests
  procps             # kill/pgrep used by test guards
  haproxy            # the PROXY protocol peer in the lb tests
  curl               # the TLS/ALPN client in the lb tests
  openssl            # test certificates
  etcd-server        # the cluster store in the netd tests
  wireguard-go       # the stock peer of the encrypted-overlay interop test
  wireguard-tools    # wg, to configure that peer
  tcpdump            # proves no clear VXLAN crosses the underlay
  python3            # the replicas of the netd examples and tests (http.server)
  busybox            # httpd: the 1000 small replicas of the netd scale scenario
  "$@"
)

missing=()
for p in "${need[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "deps: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
