// Headless Debian Chromium inside a client namespace, driven by playwright-core.
//
// Playwright talks to Chromium over a pipe (fds 3/4); `ip netns exec` keeps those fds, so a
// two-line wrapper script used as `executablePath` is enough to put the browser in a namespace.
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import type { ClientName, Topology } from './netns.ts';

export const CHROMIUM = '/usr/bin/chromium';

const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Real host candidates instead of mDNS names: nothing to resolve, fewer stray packets.
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--allow-loopback-in-peer-connection',
];

// ---- The few browser APIs the page code uses. The project's tsconfig has no DOM lib (on purpose:
// src/ must not see browser globals), so they are declared here, module-local.
interface Desc {
  type: string;
  sdp: string;
}
interface Channel {
  readyState: string;
  onopen: (() => void) | null;
  onmessage: ((m: { data: unknown }) => void) | null;
  send(data: string): void;
}
interface Pc {
  connectionState: string;
  iceConnectionState: string;
  localDescription: Desc | null;
  onconnectionstatechange: (() => void) | null;
  ondatachannel: ((ev: { channel: Channel }) => void) | null;
  createDataChannel(label: string): Channel;
  createOffer(): Promise<Desc>;
  createAnswer(): Promise<Desc>;
  setLocalDescription(d: Desc): Promise<void>;
  setRemoteDescription(d: Desc): Promise<void>;
  addTransceiver(track: unknown, init: { direction: string; streams: unknown[] }): unknown;
  getStats(): Promise<Map<string, Record<string, unknown>>>;
  close(): void;
}
interface Canvas {
  width: number;
  height: number;
  getContext(kind: '2d'): {
    fillStyle: string;
    fillRect(x: number, y: number, w: number, h: number): void;
    fillText(t: string, x: number, y: number): void;
  } | null;
  captureStream(fps: number): { getVideoTracks(): unknown[] };
}
/** Per-session state kept in the page. Times in ms from `t0` (reset when the answer is applied). */
interface Rec {
  pc: Pc;
  dc?: Channel;
  t0: number;
  connectedAt: number;
  echo: string;
  echoAt: number;
  loop?: { timer: number; sent: number; echoed: number; lastEcho: number; maxGap: number };
}
declare const window: { pcs?: Record<string, Rec> };
declare const document: { createElement(tag: 'canvas'): Canvas; body: { appendChild(n: unknown): void } };
declare const RTCPeerConnection: new () => Pc;
declare function setInterval(f: () => void, ms: number): number;
declare function clearInterval(id: number): void;

export interface PcStats {
  connectionState: string;
  iceConnectionState: string;
  framesDecoded: number;
  framesSent: number;
  bytesReceived: number;
  remoteCandidate?: string;
}

export class ChromiumClient {
  readonly browser: Browser;
  readonly page: Page;
  private constructor(browser: Browser, page: Page) {
    this.browser = browser;
    this.page = page;
  }

  static async launch<R extends string = ClientName>(topo: Topology<R>, role: R): Promise<ChromiumClient> {
    const wrapper = join(topo.logDir, `chromium-${role}.sh`);
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${topo.ns(role)} ${CHROMIUM} "$@"\n`);
    chmodSync(wrapper, 0o755);
    const browser = await chromium.launch({
      executablePath: wrapper,
      args: ARGS,
      headless: true,
      timeout: 30_000,
    });
    const page = await browser.newPage();
    await page.evaluate(() => {
      window.pcs = {};
    });
    return new ChromiumClient(browser, page);
  }

  version(): string {
    return this.browser.version();
  }

  /**
   * Answers a pod's data-channel offer; when the pod's channel opens, sends `ping:<session>` and
   * keeps the reply. Returns the answer after ~1 s of gathering (Chromium may stay "gathering" for
   * long; the pod learns the client as peer-reflexive anyway).
   */
  answerDataOffer(session: string, offer: string): Promise<string> {
    return this.page.evaluate(
      async ({ session, offer }) => {
        const pc = new RTCPeerConnection();
        const rec: Rec = { pc, t0: performance.now(), connectedAt: -1, echo: '', echoAt: -1 };
        window.pcs![session] = rec;
        pc.onconnectionstatechange = () => {
          if (pc.connectionState === 'connected' && rec.connectedAt < 0)
            rec.connectedAt = performance.now() - rec.t0;
        };
        pc.ondatachannel = (ev) => {
          const dc = ev.channel;
          rec.dc = dc;
          dc.onmessage = (m) => {
            rec.echo = String(m.data);
            rec.echoAt = performance.now() - rec.t0;
          };
          const send = (): void => dc.send(`ping:${session}`);
          if (dc.readyState === 'open') send();
          else dc.onopen = send;
        };
        await pc.setRemoteDescription({ type: 'offer', sdp: offer });
        await pc.setLocalDescription(await pc.createAnswer());
        await new Promise((r) => setTimeout(r, 1000));
        return pc.localDescription!.sdp;
      },
      { session, offer },
    );
  }

  /** Offers a data channel (the client offers; used for timing). Same result as `answerDataOffer`. */
  offerData(session: string): Promise<string> {
    return this.page.evaluate(async (session) => {
      const pc = new RTCPeerConnection();
      const rec: Rec = { pc, t0: performance.now(), connectedAt: -1, echo: '', echoAt: -1 };
      window.pcs![session] = rec;
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === 'connected' && rec.connectedAt < 0)
          rec.connectedAt = performance.now() - rec.t0;
      };
      const dc = pc.createDataChannel('test');
      rec.dc = dc;
      dc.onopen = () => dc.send(`ping:${session}`);
      dc.onmessage = (m) => {
        rec.echo = String(m.data);
        rec.echoAt = performance.now() - rec.t0;
      };
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((r) => setTimeout(r, 1000));
      return pc.localDescription!.sdp;
    }, session);
  }

  /** Sends one more data-channel message; `dataResult` then shows its echo. */
  async sendData(session: string, msg: string): Promise<void> {
    await this.page.evaluate(
      ({ session, msg }) => {
        const dc = window.pcs![session]?.dc;
        if (dc?.readyState !== 'open') throw new Error(`data channel of ${session} is not open`);
        dc.send(msg);
      },
      { session, msg },
    );
  }

  /** Data-channel result of `answerDataOffer`/`offerData` (the latest echo), or undefined before one arrived. */
  dataResult(
    session: string,
  ): Promise<{ echo: string; connectedAtMs: number; echoAtMs: number } | undefined> {
    return this.page.evaluate((session) => {
      const r = window.pcs![session];
      return r?.echo ? { echo: r.echo, connectedAtMs: r.connectedAt, echoAtMs: r.echoAt } : undefined;
    }, session);
  }

  /** Offers one canvas-captured video track, sendrecv (Janus echotest sends it back). */
  offerCanvasVideo(session: string): Promise<string> {
    return this.page.evaluate(async (session) => {
      const canvas = document.createElement('canvas');
      canvas.width = 320;
      canvas.height = 240;
      document.body.appendChild(canvas);
      const ctx = canvas.getContext('2d')!;
      let n = 0;
      // Content changes every frame, so the encoder keeps producing frames.
      setInterval(() => {
        n++;
        ctx.fillStyle = `hsl(${(n * 7) % 360} 80% 50%)`;
        ctx.fillRect(0, 0, 320, 240);
        ctx.fillStyle = '#fff';
        ctx.fillText(String(n), 10 + (n % 280), 120);
      }, 33);
      const stream = canvas.captureStream(30);
      const pc = new RTCPeerConnection();
      const rec: Rec = { pc, t0: performance.now(), connectedAt: -1, echo: '', echoAt: -1 };
      window.pcs![session] = rec;
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === 'connected' && rec.connectedAt < 0)
          rec.connectedAt = performance.now() - rec.t0;
      };
      for (const track of stream.getVideoTracks())
        pc.addTransceiver(track, { direction: 'sendrecv', streams: [stream] });
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((r) => setTimeout(r, 1000));
      return pc.localDescription!.sdp;
    }, session);
  }

  async setAnswer(session: string, answer: string): Promise<void> {
    await this.page.evaluate(
      async ({ session, answer }) => {
        const r = window.pcs![session]!;
        // Times (connectedAt, echoAt) count from here: both sides now know each other.
        r.t0 = performance.now();
        await r.pc.setRemoteDescription({ type: 'answer', sdp: answer });
      },
      { session, answer },
    );
  }

  stats(session: string): Promise<PcStats> {
    return this.page.evaluate(async (session) => {
      const pc = window.pcs![session]!.pc;
      const out: PcStats = {
        connectionState: pc.connectionState,
        iceConnectionState: pc.iceConnectionState,
        framesDecoded: 0,
        framesSent: 0,
        bytesReceived: 0,
      };
      const report = await pc.getStats();
      let pairId = '';
      report.forEach((s) => {
        if (s['type'] === 'inbound-rtp' && s['kind'] === 'video') {
          out.framesDecoded += Number(s['framesDecoded'] ?? 0);
          out.bytesReceived += Number(s['bytesReceived'] ?? 0);
        }
        if (s['type'] === 'outbound-rtp' && s['kind'] === 'video')
          out.framesSent += Number(s['framesSent'] ?? 0);
        if (s['type'] === 'transport' && s['selectedCandidatePairId'])
          pairId = String(s['selectedCandidatePairId']);
      });
      const pair = pairId ? report.get(pairId) : undefined;
      const rc = pair ? report.get(String(pair['remoteCandidateId'])) : undefined;
      if (rc) out.remoteCandidate = `${String(rc['address'])}:${String(rc['port'])}`;
      return out;
    }, session);
  }

  /**
   * A message every `intervalMs` on the session's data channel; echoes (any reply that contains the
   * message) are counted in the page, with the longest time between two: see `pingStats`.
   */
  async startPingLoop(session: string, intervalMs: number): Promise<void> {
    await this.page.evaluate(
      ({ session, intervalMs }) => {
        const r = window.pcs![session]!;
        const dc = r.dc;
        if (dc?.readyState !== 'open') throw new Error(`data channel of ${session} is not open`);
        const loop = { timer: 0, sent: 0, echoed: 0, lastEcho: performance.now(), maxGap: 0 };
        const other = dc.onmessage;
        dc.onmessage = (m) => {
          if (!String(m.data).includes(':loop:')) return other?.(m);
          const now = performance.now();
          loop.echoed++;
          loop.maxGap = Math.max(loop.maxGap, now - loop.lastEcho);
          loop.lastEcho = now;
        };
        loop.timer = setInterval(() => {
          if (dc.readyState === 'open') dc.send(`:loop:${loop.sent++}`);
        }, intervalMs);
        r.loop = loop;
      },
      { session, intervalMs },
    );
  }

  /** The ping loop's figures so far (`stop`: and end it). */
  pingStats(
    session: string,
    stop = false,
  ): Promise<{ sent: number; echoed: number; maxGapMs: number; sinceLastEchoMs: number; state: string }> {
    return this.page.evaluate(
      ({ session, stop }) => {
        const r = window.pcs![session]!;
        const loop = r.loop;
        if (loop === undefined) throw new Error(`no ping loop on ${session}`);
        if (stop) clearInterval(loop.timer);
        const now = performance.now();
        return {
          sent: loop.sent,
          echoed: loop.echoed,
          maxGapMs: Math.max(loop.maxGap, now - loop.lastEcho),
          sinceLastEchoMs: now - loop.lastEcho,
          state: r.pc.connectionState,
        };
      },
      { session, stop },
    );
  }

  async closeSession(session: string): Promise<void> {
    await this.page.evaluate((session) => {
      window.pcs![session]?.pc.close();
    }, session);
  }

  async close(): Promise<void> {
    await this.browser.close().catch(() => {});
  }
}
