// The hand-over histogram can show what it measures: the eBPF path's hand-overs take well under a
// millisecond, the nftables path's milliseconds to seconds (docs/fast-path.md).
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createHandoverHistogram } from '../../src/admin/metrics.ts';

describe('ice_ingress_fastpath_handover_seconds', () => {
  it('has buckets from 0.25 ms to 2.5 s: a 0.1 ms and a 0.7 ms hand-over land in different ones', async () => {
    const h = createHandoverHistogram();
    const registry = new Registry();
    registry.registerMetric(h);
    h.observe(0.0001);
    h.observe(0.0007);
    h.observe(1.2);
    const text = await registry.metrics();
    const bucket = (le: string): number =>
      Number(
        new RegExp(
          `^ice_ingress_fastpath_handover_seconds_bucket\\{le="${le.replace('+', '\\+')}"\\} (\\d+)$`,
          'm',
        ).exec(text)?.[1],
      );
    expect(bucket('0.00025')).toBe(1);
    expect(bucket('0.0005')).toBe(1);
    expect(bucket('0.001')).toBe(2);
    expect(bucket('0.005')).toBe(2);
    expect(bucket('1')).toBe(2);
    expect(bucket('2.5')).toBe(3);
    expect(bucket('+Inf')).toBe(3);
  });
});
