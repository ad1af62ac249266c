import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { KubeConfig, type V1EndpointSlice } from '@kubernetes/client-node';

/**
 * A small Kubernetes API server for EndpointSlices, on real HTTP on 127.0.0.1, speaking the
 * list+watch protocol the way kube-apiserver does, so that the *real* informer of
 * @kubernetes/client-node can be tested against it:
 * - `GET /apis/discovery.k8s.io/v1/namespaces/NS/endpointslices?labelSelector=k=v` → an
 *   EndpointSliceList with `metadata.resourceVersion`;
 * - the same with `watch=true&resourceVersion=N` → 200 and a chunked stream of NDJSON watch events
 *   (ADDED / MODIFIED / DELETED / BOOKMARK) newer than N, kept open; if N is older than the
 *   compacted history, an ERROR event carrying a 410 `Expired` Status, then the stream ends
 *   (kube-apiserver's "too old resource version"); or, with `watchGoneAsHttp`, an HTTP 410;
 * - injected failures: HTTP 500 for the next lists or watches, watches dropped abruptly or ended
 *   cleanly, the whole server gone (connections reset, port closed) and back on the same port.
 * The store survives stop()/start(), as etcd would.
 */

interface WatchEvent {
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
  readonly object: V1EndpointSlice;
  readonly rv: number;
}

interface Watcher {
  readonly res: ServerResponse;
  readonly namespace: string;
  readonly selector: Record<string, string>;
}

export class FakeApiServer {
  readonly token = 'fake-token';
  /** Every request as "METHOD path?query", oldest first. */
  readonly requests: string[] = [];
  /** Answer a watch from a compacted resourceVersion with HTTP 410 instead of an ERROR event. */
  watchGoneAsHttp = false;
  #server: Server | undefined;
  #port = 0;
  #rv = 100;
  /** Watch history older than this is compacted: watching from before it gets 410. */
  #oldestRv = 100;
  #objects = new Map<string, V1EndpointSlice>();
  #history: WatchEvent[] = [];
  #watchers = new Set<Watcher>();
  #sockets = new Set<Socket>();
  #failLists: number[] = [];
  #failWatches: number[] = [];
  #holdWatch = false;
  #heldWatch: (() => void) | undefined;

  get port(): number {
    return this.#port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  /**
   * The next watch request waits for {@link releaseWatch} before its response headers go out: the
   * client sits inside its watch call (a stop() meanwhile has nothing to abort yet).
   */
  holdNextWatch(): void {
    this.#holdWatch = true;
  }

  /** Whether a held watch request arrived. */
  get watchHeld(): boolean {
    return this.#heldWatch !== undefined;
  }

  /** Lets the held watch request go on: its headers and events go out now. */
  releaseWatch(): void {
    const go = this.#heldWatch;
    this.#heldWatch = undefined;
    go?.();
  }

  get openWatches(): number {
    return this.#watchers.size;
  }

  count(kind: 'list' | 'watch'): number {
    return this.requests.filter(
      (r) => r.includes('/endpointslices') && r.includes('watch=true') === (kind === 'watch'),
    ).length;
  }

  /** Listens on 127.0.0.1; port 0 = any (first start), or the previous port again after stop(). */
  async start(port = this.#port): Promise<void> {
    const server = createServer((req, res) => this.#handle(req, res));
    server.on('connection', (s) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    this.#server = server;
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new Error('no address');
    this.#port = addr.port;
  }

  /** Gone: the port closes and every open connection (watches too) is reset. */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    this.#watchers.clear();
    for (const s of this.#sockets) s.destroy();
    if (server) {
      server.close();
      await once(server, 'close');
    }
  }

  failNextLists(n: number, status = 500): void {
    for (let i = 0; i < n; i++) this.#failLists.push(status);
  }

  failNextWatches(n: number, status = 500): void {
    for (let i = 0; i < n; i++) this.#failWatches.push(status);
  }

  /** Creates or replaces a slice; `silent` changes the store without a watch event (seen on relist only). */
  upsert(slice: V1EndpointSlice, opts: { silent?: boolean } = {}): void {
    const name = slice.metadata?.name ?? '';
    const existed = this.#objects.has(name);
    const rv = ++this.#rv;
    const obj: V1EndpointSlice = structuredClone({
      ...slice,
      metadata: { ...slice.metadata, resourceVersion: String(rv) },
    });
    this.#objects.set(name, obj);
    if (!opts.silent) this.#publish({ type: existed ? 'MODIFIED' : 'ADDED', object: obj, rv });
  }

  delete(name: string, opts: { silent?: boolean } = {}): void {
    const obj = this.#objects.get(name);
    if (!obj) return;
    this.#objects.delete(name);
    const rv = ++this.#rv;
    const gone = structuredClone({ ...obj, metadata: { ...obj.metadata, resourceVersion: String(rv) } });
    if (!opts.silent) this.#publish({ type: 'DELETED', object: gone, rv });
  }

  /** Compacts the history: any watch from an older resourceVersion now gets 410. */
  compact(): void {
    this.#oldestRv = this.#rv;
    this.#history = [];
  }

  /** Tells every open watch its version expired (ERROR 410) and ends it, as after a compaction. */
  expireWatches(): void {
    this.compact();
    for (const w of this.#watchers) {
      this.#send(w.res, { type: 'ERROR', object: goneStatus() });
      w.res.end();
    }
    this.#watchers.clear();
  }

  /** Ends every open watch cleanly (kube-apiserver does so after its request timeout). */
  endWatches(): void {
    for (const w of this.#watchers) w.res.end();
    this.#watchers.clear();
  }

  /** Resets every open watch connection mid-stream. */
  dropWatches(): void {
    for (const w of this.#watchers) w.res.socket?.destroy();
    this.#watchers.clear();
  }

  bookmark(): void {
    for (const w of this.#watchers) {
      this.#send(w.res, {
        type: 'BOOKMARK',
        object: {
          kind: 'EndpointSlice',
          apiVersion: 'discovery.k8s.io/v1',
          metadata: { resourceVersion: String(this.#rv) },
        },
      });
    }
  }

  #publish(ev: WatchEvent): void {
    this.#history.push(ev);
    for (const w of this.#watchers) {
      if (matches(ev.object, w.namespace, w.selector))
        this.#send(w.res, { type: ev.type, object: ev.object });
    }
  }

  #send(res: ServerResponse, ev: unknown): void {
    res.write(`${JSON.stringify(ev)}\n`);
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    this.requests.push(`${req.method} ${req.url}`);
    const url = new URL(req.url ?? '/', 'http://x');
    const m = /^\/apis\/discovery\.k8s\.io\/v1\/namespaces\/([^/]+)\/endpointslices$/.exec(url.pathname);
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      json(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    if (req.method !== 'GET' || !m) {
      json(res, 404, status(404, 'NotFound', 'the server could not find it'));
      return;
    }
    const namespace = decodeURIComponent(m[1]!);
    const selector = parseSelector(url.searchParams.get('labelSelector'));
    if (url.searchParams.get('watch') === 'true') {
      const fail = this.#failWatches.shift();
      if (fail !== undefined) {
        json(res, fail, status(fail, 'InternalError', 'injected failure'));
        return;
      }
      const rv = url.searchParams.get('resourceVersion') ?? '';
      if (this.#holdWatch) {
        this.#holdWatch = false;
        this.#heldWatch = () => this.#watch(res, namespace, selector, rv);
        return;
      }
      this.#watch(res, namespace, selector, rv);
      return;
    }
    const fail = this.#failLists.shift();
    if (fail !== undefined) {
      json(res, fail, status(fail, 'InternalError', 'injected failure'));
      return;
    }
    json(res, 200, {
      kind: 'EndpointSliceList',
      apiVersion: 'discovery.k8s.io/v1',
      metadata: { resourceVersion: String(this.#rv) },
      items: [...this.#objects.values()].filter((o) => matches(o, namespace, selector)),
    });
  }

  #watch(res: ServerResponse, namespace: string, selector: Record<string, string>, rvText: string): void {
    // An empty resourceVersion would mean "start at the most recent" with a synthetic ADDED for
    // everything; the informer always passes the list's version, so only numbers are supported.
    const from = Number(rvText);
    if (!Number.isInteger(from)) {
      json(res, 400, status(400, 'BadRequest', `bad resourceVersion "${rvText}"`));
      return;
    }
    if (from < this.#oldestRv) {
      if (this.watchGoneAsHttp) {
        json(res, 410, goneStatus());
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.flushHeaders();
      this.#send(res, { type: 'ERROR', object: goneStatus() });
      res.end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // The informer awaits the response headers before it reads events: send them now.
    res.flushHeaders();
    const w: Watcher = { res, namespace, selector };
    this.#watchers.add(w);
    res.on('close', () => this.#watchers.delete(w));
    for (const ev of this.#history) {
      if (ev.rv > from && matches(ev.object, namespace, selector))
        this.#send(res, { type: ev.type, object: ev.object });
    }
  }
}

function matches(o: V1EndpointSlice, namespace: string, selector: Record<string, string>): boolean {
  if ((o.metadata?.namespace ?? 'default') !== namespace) return false;
  const labels = o.metadata?.labels ?? {};
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** Equality-based selectors only (`a=b,c==d`), which is all the informer sends here. */
function parseSelector(text: string | null): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (text ?? '').split(',')) {
    if (!part) continue;
    const [k, v] = part.split(/==?/);
    if (k !== undefined && v !== undefined) out[k] = v;
  }
  return out;
}

function status(code: number, reason: string, message: string) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

function goneStatus() {
  return status(410, 'Expired', 'too old resource version');
}

function json(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** One EndpointSlice of Service `service`, as the EndpointSlice controller writes it. */
export function slice(
  name: string,
  service: string,
  endpoints: Array<{
    pod: string;
    ip: string;
    ready?: boolean;
    serving?: boolean;
    terminating?: boolean;
  }>,
  opts: { namespace?: string; addressType?: 'IPv4' | 'IPv6'; port?: number; portName?: string } = {},
): V1EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      namespace: opts.namespace ?? 'jitsi',
      labels: {
        'kubernetes.io/service-name': service,
        'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
      },
    },
    addressType: opts.addressType ?? 'IPv4',
    ports: [{ name: opts.portName ?? 'media', port: opts.port ?? 10000, protocol: 'UDP' }],
    endpoints: endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: {
        ready: e.ready ?? true,
        serving: e.serving ?? e.ready ?? true,
        terminating: e.terminating ?? false,
      },
      targetRef: { kind: 'Pod', namespace: opts.namespace ?? 'jitsi', name: e.pod },
    })),
  };
}

/** A KubeConfig for the real client pointed at `api` (context namespace "jitsi"). */
export function kubeConfigFor(api: FakeApiServer): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: api.url, skipTLSVerify: true }],
    users: [{ name: 'u', token: api.token }],
    contexts: [{ name: 'c', cluster: 'fake', user: 'u', namespace: 'jitsi' }],
    currentContext: 'c',
  });
  return kc;
}
