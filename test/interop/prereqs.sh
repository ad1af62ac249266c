#!/bin/sh
# Installs what the interop suite (test/interop) needs, only when missing.
# Called by .ci/run before `npm run test:interop`. Needs root (apt, ip netns).
set -eu

if [ "$(id -u)" -ne 0 ]; then
  echo "prereqs.sh: must run as root (apt-get, ip netns)" >&2
  exit 1
fi

# command -> Debian package
need=""
check() {
  if ! command -v "$1" >/dev/null 2>&1; then need="$need $2"; fi
}
check chromium chromium
check janus janus
check nft nftables
check ip iproute2
check curl curl

if [ -n "$need" ]; then
  echo "prereqs.sh: installing:$need"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $need
fi

# Janus from Debian installs a systemd unit; the suite starts its own instances inside
# network namespaces, so a host instance is not wanted (and systemd may not exist here).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet janus 2>/dev/null; then
  systemctl stop janus || true
fi

for c in chromium janus nft ip; do
  command -v "$c" >/dev/null 2>&1 || { echo "prereqs.sh: $c still missing" >&2; exit 1; }
done
echo "prereqs.sh: ok"
