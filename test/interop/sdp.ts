// SDP helpers shared by the pod agents and the runner.

/**
 * Makes `ip:port` the only ICE candidate of every media section, as JVB's static mapping
 * (`JVB_ADVERTISE_IPS`, `ice4j.harvest.mapping.static-mappings`) makes the proxy's public address
 * the only address a client ever sees.
 */
export function advertiseOnly(sdp: string, ip: string, port: number): string {
  const eol = sdp.includes('\r\n') ? '\r\n' : '\n';
  const lines = sdp.split(/\r?\n/).filter((l) => l !== '');
  const out: string[] = [];
  let inMedia = false;
  const closeSection = (): void => {
    if (!inMedia) return;
    out.push(`a=candidate:1 1 udp 2130706431 ${ip} ${port} typ host`);
    out.push('a=end-of-candidates');
  };
  for (const line of lines) {
    if (line.startsWith('m=')) {
      closeSection();
      inMedia = true;
      const parts = line.split(' ');
      parts[1] = String(port);
      out.push(parts.join(' '));
      continue;
    }
    if (line.startsWith('a=candidate:') || line === 'a=end-of-candidates') continue;
    if (inMedia && line.startsWith('c=IN IP4 ')) {
      out.push(`c=IN IP4 ${ip}`);
      continue;
    }
    out.push(line);
  }
  closeSection();
  return out.join(eol) + eol;
}

/** The first `a=ice-ufrag` of an SDP, or undefined. */
export function iceUfrag(sdp: string): string | undefined {
  return /^a=ice-ufrag:(\S+)/m.exec(sdp)?.[1];
}

/** `ip port` of every candidate line, for assertions about what a peer was told. */
export function candidateAddresses(sdp: string): string[] {
  const out: string[] = [];
  for (const m of sdp.matchAll(/^a=candidate:\S+ \d+ \S+ \d+ (\S+) (\d+) typ/gm)) out.push(`${m[1]}:${m[2]}`);
  return out;
}
