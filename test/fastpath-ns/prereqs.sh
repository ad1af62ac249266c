#!/bin/sh
# Installs what the fast-path suite (test/fastpath-ns) needs, only when missing (`--bench`: and what
# bench/fastpath.ts needs): nftables for the nftables path; clang and libbpf-dev to build the eBPF
# path's object (npm run build:bpf), bpftool to look at its maps. Called by .ci/run before
# `npm run build:bpf` and `npm run test:fastpath-ns`. Needs root (apt, ip netns, nft, bpf).
set -eu

if [ "$(id -u)" -ne 0 ]; then
  echo "prereqs.sh: must run as root (apt-get, ip netns, nft)" >&2
  exit 1
fi

need=""
check() {
  if ! command -v "$1" >/dev/null 2>&1; then need="$need $2"; fi
}
check nft nftables
check ip iproute2
check ethtool ethtool
check sysctl procps
check conntrack conntrack
check clang clang
check bpftool bpftool
# libbpf-dev: the BPF headers the program includes (bpf_helpers.h) and libbpf.so.1 it is loaded with.
[ -e /usr/include/bpf/bpf_helpers.h ] || need="$need libbpf-dev"
# `prereqs.sh --bench`: also what bench/fastpath.ts needs: nginx (stream UDP, the comparison),
# a C compiler for bench/udpbench.c, taskset.
if [ "${1:-}" = "--bench" ]; then
  check nginx nginx-light
  [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need="$need libnginx-mod-stream"
  check cc gcc
  check taskset util-linux
fi

if [ -n "$need" ]; then
  echo "prereqs.sh: installing:$need"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $need
fi
# Debian starts nginx as a host service on install; the bench runs its own inside a namespace.
for c in nft ip ethtool sysctl conntrack clang bpftool; do
  command -v "$c" >/dev/null 2>&1 || { echo "prereqs.sh: $c still missing" >&2; exit 1; }
done
echo "prereqs.sh: ok"
