// Fails loudly (never skips) when the tier suite cannot run here: root, and the Debian packages
// test/tier-ns/prereqs.sh installs.
import { requirePrereqs } from '../interop/prereqs.ts';

export function checkPrereqs(): void {
  requirePrereqs(
    'tier suite',
    [
      ['nft', 'nftables'],
      ['ip', 'iproute2'],
      ['conntrack', 'conntrack'],
      ['sysctl', 'procps'],
      ['cc', 'gcc'],
      ['/usr/bin/chromium', 'chromium'],
    ],
    'test/tier-ns/prereqs.sh',
  );
}
