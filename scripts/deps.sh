#!/usr/bin/env bash
# Installs the Debian packages shoal's build, demo and tests need, and only those that are
# missing, so running it again is cheap. Extra package names may be passed as arguments (the
# benchmarks pass theirs). `scripts/deps.sh --list` prints the packages, one per line, and
# installs nothing. ARCHITECTURE.md ("System packages") says why each one is here.
set -euo pipefail

need=(
  cmake              # pingora-core builds zlib-ng (libz-ng-sys) with it (HTTP mode)
  iproute2           # ip: network namespaces for the overlay and cluster tests and the demo
  procps             # kill/pgrep used by test guards
  haproxy            # the PROXY protocol peer in the lb tests
  curl               # the TLS/ALPN client in the lb tests
  openssl            # test certificates
  etcd-server        # the cluster store in the netd tests and the demo
  wireguard-go       # the stock peer of the encrypted-overlay interop test
  wireguard-tools    # wg, to configure that peer
  tcpdump            # proves no clear VXLAN crosses the underlay
  python3            # the replicas of the netd examples, tests and demo (http.server)
  busybox            # httpd: the 1000 small replicas of the netd scale scenario
)

if [ "${1:-}" = --list ]; then
  printf '%s\n' "${need[@]}"
  exit 0
fi
need+=("$@")

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
