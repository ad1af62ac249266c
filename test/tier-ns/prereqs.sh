#!/bin/sh
# Installs what the tier suite (test/tier-ns) and bench/tier.ts need, only when missing: what the
# interop suite needs (chromium for the real-stack scenario, nftables for the balancer and the NAT)
# and the fast-path suite needs (conntrack: kube-proxy's clean-up, the NAT rebinding), plus gcc and
# taskset (bench/flooder.c, the forged traffic; pinning in the bench).
# Called by .ci/run before `npm run test:tier`. Needs root (apt, ip netns).
set -eu
here=$(dirname "$0")
sh "$here/../interop/prereqs.sh"
sh "$here/../fastpath-ns/prereqs.sh"
if ! command -v cc >/dev/null 2>&1 || ! command -v taskset >/dev/null 2>&1; then
  echo "prereqs.sh: installing: gcc util-linux"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc util-linux
fi
echo "prereqs.sh: ok"
