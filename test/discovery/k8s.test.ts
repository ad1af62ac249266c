import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BackendSpec } from '../../src/defs/interfaces.ts';
import { K8sDiscovery } from '../../src/discovery/k8s.ts';
import { FakeApiServer, kubeConfigFor, slice } from './fake-apiserver.ts';

// The real @kubernetes/client-node informer (ListWatch + Watch over undici) against a local
// list+watch server on real HTTP: no part of the client library is mocked.

const log = pino({ level: 'silent' });

/** Polls `cond` until true; fails after `ms` with `what` (every wait in this file is bounded). */
async function waitFor(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const brief = (s: readonly BackendSpec[] | undefined) =>
  (s ?? []).map((b) => `${b.name}=${b.address}:${b.port}/${b.state}`);

describe('K8sDiscovery against a list+watch API server', () => {
  let api: FakeApiServer;
  let disco: K8sDiscovery;
  let snapshots: (readonly BackendSpec[])[];
  const last = () => brief(snapshots.at(-1));

  beforeEach(async () => {
    api = new FakeApiServer();
    await api.start();
    snapshots = [];
    disco = new K8sDiscovery({
      service: 'jvb',
      namespace: 'jitsi',
      kubeConfig: kubeConfigFor(api),
      log,
      backoff: { initialMs: 20, maxMs: 200 },
    });
  });

  afterEach(async () => {
    await disco.stop();
    await api.stop();
  });

  it('lists, then follows endpoints that appear, start terminating and disappear', async () => {
    api.upsert(slice('jvb-abc', 'jvb', []));
    // Another Service's slice and another namespace's slice must be ignored.
    api.upsert(slice('web-x', 'web', [{ pod: 'web-0', ip: '10.0.9.9' }]));
    api.upsert(slice('jvb-other-ns', 'jvb', [{ pod: 'jvb-9', ip: '10.0.9.8' }], { namespace: 'other' }));
    disco.start((s) => snapshots.push(s));

    await waitFor('first snapshot', () => snapshots.length === 1);
    expect(snapshots[0]).toEqual([]);
    expect(disco.state.connected).toBe(true);
    expect(disco.state.lastSyncAt).toBeTypeOf('number');
    await waitFor('watch open', () => api.openWatches === 1);
    expect(api.requests[0]).toContain('labelSelector=kubernetes.io%2Fservice-name%3Djvb');

    api.upsert(
      slice('jvb-abc', 'jvb', [
        { pod: 'jvb-0', ip: '10.0.0.10' },
        { pod: 'jvb-1', ip: '10.0.0.11' },
      ]),
    );
    await waitFor('two ready', () => last().length === 2);
    expect(last()).toEqual(['jvb-0=10.0.0.10:10000/ready', 'jvb-1=10.0.0.11:10000/ready']);

    // A second slice of the same Service is merged in.
    api.upsert(slice('jvb-def', 'jvb', [{ pod: 'jvb-2', ip: '10.0.0.12', ready: false }]));
    await waitFor('merged slices', () => last().length === 3);
    expect(last()[2]).toBe('jvb-2=10.0.0.12:10000/unready');

    // jvb-1 is told to shut down: not ready, still serving, terminating.
    api.upsert(
      slice('jvb-abc', 'jvb', [
        { pod: 'jvb-0', ip: '10.0.0.10' },
        { pod: 'jvb-1', ip: '10.0.0.11', ready: false, serving: true, terminating: true },
      ]),
    );
    await waitFor('jvb-1 terminating', () => last()[1] === 'jvb-1=10.0.0.11:10000/terminating');

    // The pod is gone.
    api.upsert(slice('jvb-abc', 'jvb', [{ pod: 'jvb-0', ip: '10.0.0.10' }]));
    await waitFor('jvb-1 gone', () => last().length === 2);
    api.delete('jvb-def');
    await waitFor('slice deleted', () => last().length === 1);
    expect(last()).toEqual(['jvb-0=10.0.0.10:10000/ready']);
    // Only changes are emitted: one snapshot per step above, no duplicates from informer echoes.
    expect(snapshots.length).toBe(6);
    expect(disco.state.restarts).toBe(0);
    expect(api.count('list')).toBe(1);
  });

  it('relists after a 410 Gone on the watch stream and sees what changed meanwhile', async () => {
    api.upsert(slice('jvb-abc', 'jvb', [{ pod: 'jvb-0', ip: '10.0.0.10' }]));
    disco.start((s) => snapshots.push(s));
    await waitFor('watch open', () => api.openWatches === 1);
    // Changes the watch never reports (history compacted), then the watch is expired.
    api.upsert(slice('jvb-abc', 'jvb', [{ pod: 'jvb-5', ip: '10.0.0.15' }]), { silent: true });
    api.expireWatches();
    await waitFor('relisted snapshot', () => last()[0] === 'jvb-5=10.0.0.15:10000/ready');
    expect(api.count('list')).toBe(2);
    // The informer relisted by itself: no restart through our backoff.
    expect(disco.state.restarts).toBe(0);
    await waitFor('new watch', () => api.openWatches === 1);
  });

  it('relists when a re-watch is answered with HTTP 410', async () => {
    api.watchGoneAsHttp = true;
    api.upsert(slice('jvb-abc', 'jvb', [{ pod: 'jvb-0', ip: '10.0.0.10' }]));
    disco.start((s) => snapshots.push(s));
    await waitFor('watch open', () => api.openWatches === 1);
    api.delete('jvb-abc', { silent: true });
    api.compact();
    api.endWatches(); // the informer re-watches from its old version → 410 → list
    await waitFor('empty after relist', () => snapshots.length === 2 && last().length === 0);
    expect(api.count('list')).toBe(2);
  });

  it('keeps the last snapshot while the API server is gone, then picks up what changed', async () => {
    api.upsert(
      slice('jvb-abc', 'jvb', [
        { pod: 'jvb-0', ip: '10.0.0.10' },
        { pod: 'jvb-1', ip: '10.0.0.11' },
      ]),
    );
    disco.start((s) => snapshots.push(s));
    await waitFor('watch open', () => api.openWatches === 1);
    const syncedAt = disco.state.lastSyncAt;
    await api.stop();
    await waitFor('disconnected', () => !disco.state.connected);
    await waitFor('a few restarts', () => disco.state.restarts >= 2);
    // Nothing was emitted: the data path keeps routing with the last good set.
    expect(snapshots.length).toBe(1);
    expect(disco.state.lastSyncAt).toBe(syncedAt);

    // While it was away: jvb-0 went away, jvb-2 came.
    api.upsert(
      slice('jvb-abc', 'jvb', [
        { pod: 'jvb-1', ip: '10.0.0.11' },
        { pod: 'jvb-2', ip: '10.0.0.12' },
      ]),
      {
        silent: true,
      },
    );
    api.compact();
    await api.start();
    await waitFor('reconnected', () => disco.state.connected, 5000);
    await waitFor(
      'changes picked up',
      () => last().join() === 'jvb-1=10.0.0.11:10000/ready,jvb-2=10.0.0.12:10000/ready',
    );
    expect(snapshots.length).toBe(2);
    // And the watch works again.
    await waitFor('watch open', () => api.openWatches === 1);
    api.upsert(slice('jvb-abc', 'jvb', [{ pod: 'jvb-2', ip: '10.0.0.12' }]));
    await waitFor('watch event after return', () => last().length === 1);
  });

  it('restarts with backoff after 500s on list and on watch, and when the watch is reset', async () => {
    api.failNextLists(2);
    api.upsert(slice('jvb-abc', 'jvb', [{ pod: 'jvb-0', ip: '10.0.0.10' }]));
    disco.start((s) => snapshots.push(s));
    await waitFor('first snapshot after list errors', () => snapshots.length === 1);
    expect(disco.state.restarts).toBe(2);

    await waitFor('watch open', () => api.openWatches === 1);
    api.failNextWatches(1);
    api.dropWatches();
    await waitFor('watch back', () => api.openWatches === 1);
    api.upsert(slice('jvb-abc', 'jvb', [{ pod: 'jvb-0', ip: '10.0.0.10', ready: false }]));
    await waitFor('event after watch reset', () => last()[0] === 'jvb-0=10.0.0.10:10000/unready');
    expect(disco.state.connected).toBe(true);
  });

  it('stop() leaves nothing open', async () => {
    disco.start((s) => snapshots.push(s));
    await waitFor('watch open', () => api.openWatches === 1);
    await disco.stop();
    await waitFor('watch closed', () => api.openWatches === 0);
    const before = api.requests.length;
    api.upsert(slice('jvb-abc', 'jvb', [{ pod: 'jvb-0', ip: '10.0.0.10' }]));
    await new Promise((r) => setTimeout(r, 100));
    expect(api.requests.length).toBe(before);
    expect(snapshots.length).toBe(1);
  });

  it('stop() while a watch waits for its response headers: the stream is closed once they come', async () => {
    // client-node's informer keeps a watch's abort handle only once the headers are in, so its
    // stop() before then aborts nothing (npm test once caught the stream left open, 1 run in ~10).
    api.holdNextWatch();
    disco.start((s) => snapshots.push(s));
    await waitFor('watch request held', () => api.watchHeld);
    await disco.stop();
    api.releaseWatch();
    expect(api.openWatches).toBe(1); // the headers went out: the server holds the stream now
    await waitFor('watch closed', () => api.openWatches === 0);
  });
});
