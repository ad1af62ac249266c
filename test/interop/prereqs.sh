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
check sysctl procps
check dpkg-query dpkg

if [ -n "$need" ]; then
  echo "prereqs.sh: installing:$need"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $need
fi

# A host Janus service (if the package started one) does not disturb the suite: the suite's Janus
# runs in its own network namespace with its own config folder.
for c in chromium janus nft ip sysctl; do
  command -v "$c" >/dev/null 2>&1 || { echo "prereqs.sh: $c still missing" >&2; exit 1; }
done
echo "prereqs.sh: ok"
