// Shared steps of the end-to-end tests: people are browser contexts driving the demo
// page (www/index.html) the way a person would; media is checked with getStats().
import { expect, type Browser, type BrowserContext, type Page, type APIRequestContext } from '@playwright/test';

export interface Person {
  name: string;
  id: string;
  ctx: BrowserContext;
  page: Page;
}

declare global {
  interface Window {
    holdfastDemo: {
      getClient: typeof import('../src/index').getClient;
      getMedia: typeof import('../src/index').getMedia;
      /** The demo's state; `logs` is each call's activity log, newest first. */
      app: { logs: Map<string, { t: number; text: string }[]> };
    };
  }
}

let counter = 0;
/** A display name unique to this run, and the id the demo derives from it. */
export function uniqueName(first: string): { name: string; id: string } {
  const n = `${Math.floor(Math.random() * 9000) + 1000}${counter++}`;
  const name = `${first} ${n}`;
  return { name, id: `${first.toLowerCase()}-${n}` };
}

export interface PersonOptions {
  /** Another origin for the page (e.g. a proxy in front of the server). */
  baseURL?: string;
  /** Where the page starts, e.g. `/?kind=long` to place calls of that kind. */
  path?: string;
  /** Runs on the new browser context before the page opens. */
  setup?: (ctx: BrowserContext) => Promise<void>;
}

/** A person with their own browser profile, signed in on the demo page. */
export async function person(browser: Browser, first: string, opts: PersonOptions = {}): Promise<Person> {
  const { name, id } = uniqueName(first);
  const ctx = await browser.newContext(opts.baseURL ? { baseURL: opts.baseURL } : {});
  watchMediaErrors(ctx);
  await opts.setup?.(ctx);
  const page = await ctx.newPage();
  await page.goto(opts.path ?? '/');
  await page.getByPlaceholder(/your name/i).fill(name);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByTestId('conn-badge')).toHaveText('Connected');
  return { name, id, ctx, page };
}

/** Opens another tab of the same person (same browser profile: storage and locks). */
export async function newTab(p: Person, path = '/#/contacts'): Promise<Page> {
  const page = await p.ctx.newPage();
  await page.goto(path);
  await expect(page.getByTestId('conn-badge')).toHaveText('Connected');
  return page;
}

export function contact(page: Page, who: Person) {
  return page.locator(`[data-testid=contact][data-user="${who.id}"]`);
}

/** The caller clicks "Call" on the callee's row and waits for the ringing view. */
export async function dial(caller: Page, callee: Person): Promise<void> {
  await caller.evaluate(() => (location.hash = '#/contacts'));
  await contact(caller, callee).getByRole('button').click();
  await expect(caller.getByTestId('call-view')).toBeVisible();
}

/** `a` calls `b`, `b` accepts; both are in the call view. Returns the call id. */
export async function callAndAccept(a: Person, b: Person): Promise<string> {
  await dial(a.page, b);
  const incoming = b.page.getByTestId('incoming');
  await expect(incoming).toContainText(`${a.name} is calling`);
  await incoming.getByRole('button', { name: 'Accept' }).click();
  for (const p of [a.page, b.page]) {
    await expect(p.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  }
  const id = await callIdOf(a.page);
  expect(await callIdOf(b.page)).toBe(id);
  return id;
}

/** The call id in the page's call view. */
export async function callIdOf(page: Page): Promise<string> {
  const id = await page.getByTestId('call-view').getAttribute('data-call');
  if (!id) throw new Error('no call view');
  return id;
}

export interface Inbound {
  bytes: number;
  frames: number;
  ice: string;
}

/** inbound-rtp bytesReceived (summed) and video frames decoded of the call's peer connection. */
export async function inbound(page: Page, call: string): Promise<Inbound> {
  return page.evaluate(async (id) => {
    const m = window.holdfastDemo.getMedia(id);
    const pc = m?.peerConnection;
    if (!pc) return { bytes: -1, frames: -1, ice: 'none' };
    let bytes = 0;
    let frames = 0;
    (await pc.getStats()).forEach((s: Record<string, unknown>) => {
      if (s.type === 'inbound-rtp') {
        bytes += Number(s.bytesReceived ?? 0);
        if (s.kind === 'video') frames += Number(s.framesDecoded ?? 0);
      }
    });
    return { bytes, frames, ice: pc.iceConnectionState };
  }, call);
}

/** Media flows into `page`: bytesReceived grows by `min` bytes and video frames decode,
 *  and the remote <video> shows a picture. */
export async function expectMediaFlowing(page: Page, call: string, min = 20_000, timeout = 15_000): Promise<void> {
  const before = await inbound(page, call);
  await expect
    .poll(async () => {
      const now = await inbound(page, call);
      // A fresh peer connection restarts the counters: measure from whatever is less.
      const base = now.bytes < before.bytes ? 0 : Math.max(0, before.bytes);
      return now.bytes - base >= min && now.frames > Math.max(0, before.frames < now.frames ? before.frames : 0);
    }, { timeout, message: `media flowing into ${page.url()}` })
    .toBe(true);
  await expect
    .poll(() => page.getByTestId('remote-video').evaluate((v: HTMLVideoElement) => v.videoWidth > 0 && !v.paused), { timeout })
    .toBe(true);
}

/** Media flows both ways. */
export async function expectMediaBothWays(a: Page, b: Page, call: string): Promise<void> {
  await Promise.all([expectMediaFlowing(a, call), expectMediaFlowing(b, call)]);
}

export async function metric(request: APIRequestContext, name: string): Promise<number> {
  const body = await (await request.get('/metrics')).text();
  const line = body.split('\n').find((l) => l.startsWith(name + ' '));
  if (!line) throw new Error(`metric ${name} missing`);
  return Number(line.split(' ')[1]);
}

/** Seconds shown in a live countdown text such as "Bob disconnected — waiting 7 s". */
export async function secondsIn(locator: ReturnType<Page['locator']>): Promise<number> {
  const text = (await locator.textContent()) ?? '';
  const m = text.match(/(\d+)\s*s\b/);
  if (!m) throw new Error(`no countdown in "${text}"`);
  return Number(m[1]);
}

/** The countdown text counts down (two readings over ~2 s, the second lower). */
export async function expectCountingDown(locator: ReturnType<Page['locator']>): Promise<number> {
  const first = await secondsIn(locator);
  expect(first).toBeGreaterThan(0);
  await expect.poll(() => secondsIn(locator), { timeout: 4000 }).toBeLessThan(first);
  return first;
}

/** Ends a scenario: every person's browser closes, and no page of theirs met a media
 *  error on the way (in its activity log or its console): perfect negotiation has no
 *  failed step in any scenario. */
export async function closeAll(...people: Person[]): Promise<void> {
  const errors = await Promise.all(people.map(async (p) => ({ who: p.name, errors: await mediaErrorsOf(p) })));
  await Promise.all(people.map((p) => p.ctx.close().catch(() => {})));
  for (const { who, errors: e } of errors) expect(e, `media errors on ${who}'s pages`).toEqual([]);
}

// ------------------------------------------------------------------ media errors

/** A console line about a failed step of the peer connection. */
const MEDIA_CONSOLE = /RTCPeerConnection|setRemoteDescription|setLocalDescription|addIceCandidate|createOffer|createAnswer/;
const consoleMediaErrors = new WeakMap<BrowserContext, string[]>();

/** Records every console error or warning about media on every page of `ctx`. */
function watchMediaErrors(ctx: BrowserContext): void {
  const found: string[] = [];
  consoleMediaErrors.set(ctx, found);
  ctx.on('console', (m) => {
    if ((m.type() === 'error' || m.type() === 'warning') && MEDIA_CONSOLE.test(m.text())) found.push(`console: ${m.text()}`);
  });
  ctx.on('weberror', (e) => {
    if (MEDIA_CONSOLE.test(e.error().message)) found.push(`uncaught: ${e.error().message}`);
  });
}

/** Media errors `p` met so far: the demo's activity log ("Media error: …", from the
 *  library's `media-error` events) on each open page, and the console of every page. */
export async function mediaErrorsOf(p: Person): Promise<string[]> {
  const logged: string[] = [];
  for (const page of p.ctx.pages()) {
    const lines = await page.evaluate(() => [...(window.holdfastDemo?.app?.logs?.values() ?? [])]
      .flat().map((l) => l.text).filter((t) => t.startsWith('Media error'))).catch(() => [] as string[]);
    logged.push(...lines.map((l) => `activity: ${l}`));
  }
  return [...logged, ...(consoleMediaErrors.get(p.ctx) ?? [])];
}

// ------------------------------------------------------------------ proxies

/** A TCP proxy in front of the server that the test can cut: pages loaded through it
 *  lose their signaling link (every socket is reset, new ones are refused) until
 *  `restore()`. Peer-to-peer media does not go through it. */
export class TcpProxy {
  private sockets = new Set<import('node:net').Socket>();
  private blocked = false;
  private constructor(private server: import('node:net').Server, readonly port: number) {}

  static async start(target: number): Promise<TcpProxy> {
    const net = await import('node:net');
    let proxy!: TcpProxy;
    const server = net.createServer((down) => {
      if (proxy.blocked) {
        down.resetAndDestroy();
        return;
      }
      const up = net.connect(target, '127.0.0.1');
      for (const s of [down, up]) {
        proxy.sockets.add(s);
        s.on('close', () => proxy.sockets.delete(s));
        s.on('error', () => {
          down.destroy();
          up.destroy();
        });
      }
      down.pipe(up);
      up.pipe(down);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as import('node:net').AddressInfo).port;
    proxy = new TcpProxy(server, port);
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Resets every connection and refuses new ones. */
  cut(): void {
    this.blocked = true;
    for (const s of this.sockets) s.resetAndDestroy();
  }

  restore(): void {
    this.blocked = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((r) => this.server.close(r));
  }
}

/** A UDP relay the media of a call is forced through (see `forceMediaThrough`), so the
 *  test can break the media path and give it back as a *new* path: after `restore()`
 *  the old relay ports stay dead, so only an ICE restart (new candidates, mapped to
 *  new ports) brings media back, the way a network switch does. Loopback only. */
export class UdpProxy {
  private live = new Map<string, UdpMapping>();
  private all: UdpMapping[] = [];
  broken = false;

  /** The relay port that stands for `ip:port` (a candidate of one peer). */
  async portFor(ip: string, port: number): Promise<number> {
    const key = `${ip}:${port}`;
    const have = this.live.get(key);
    if (have) return have.port;
    const m = await UdpMapping.create(ip, port, this);
    this.live.set(key, m);
    this.all.push(m);
    return m.port;
  }

  /** Drops every packet from now on. */
  break(): void {
    this.broken = true;
  }

  /** Forwards again, on new ports only: the old paths stay broken. */
  restore(): void {
    for (const m of this.all) m.close();
    this.all = [];
    this.live.clear();
    this.broken = false;
  }

  close(): void {
    this.restore();
  }
}

class UdpMapping {
  private backs = new Map<string, import('node:dgram').Socket>();
  private dead = false;
  private constructor(
    private front: import('node:dgram').Socket,
    readonly port: number,
    private target: { ip: string; port: number },
    private proxy: UdpProxy,
  ) {}

  static async create(ip: string, port: number, proxy: UdpProxy): Promise<UdpMapping> {
    const dgram = await import('node:dgram');
    const front = dgram.createSocket('udp4');
    await new Promise<void>((r) => front.bind(0, '127.0.0.1', r));
    const m = new UdpMapping(front, front.address().port, { ip, port }, proxy);
    front.on('message', (msg, from) => void m.forward(msg, from));
    front.on('error', () => m.close());
    return m;
  }

  private async forward(msg: Uint8Array, from: { address: string; port: number }): Promise<void> {
    if (this.dead || this.proxy.broken) return;
    const key = `${from.address}:${from.port}`;
    let back = this.backs.get(key);
    if (!back) {
      const dgram = await import('node:dgram');
      const sock = dgram.createSocket('udp4');
      back = sock;
      this.backs.set(key, sock);
      await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
      sock.on('message', (reply) => {
        if (!this.dead && !this.proxy.broken) this.front.send(reply, from.port, from.address);
      });
      sock.on('error', () => {});
    }
    if (!this.dead) back.send(msg, this.target.port, this.target.ip);
  }

  close(): void {
    if (this.dead) return;
    this.dead = true;
    for (const s of [this.front, ...this.backs.values()]) {
      try {
        s.close();
      } catch {
        /* closed */
      }
    }
  }
}

/** Makes every peer connection in `ctx` reach its peer only through `proxy`: remote
 *  UDP candidates on 127.0.0.1 are rewritten to relay ports, all others dropped. */
export async function forceMediaThrough(ctx: BrowserContext, proxy: UdpProxy): Promise<void> {
  await ctx.exposeFunction('__relayPort', (ip: string, port: number) => proxy.portFor(ip, port));
  await ctx.addInitScript(() => {
    const w = window as unknown as { __relayPort: (ip: string, port: number) => Promise<number> };
    const proto = RTCPeerConnection.prototype;
    const addIceCandidate = proto.addIceCandidate as (this: RTCPeerConnection, c?: RTCIceCandidateInit) => Promise<void>;
    const setRemoteDescription = proto.setRemoteDescription as (this: RTCPeerConnection, d: RTCSessionDescriptionInit) => Promise<void>;
    proto.addIceCandidate = async function (this: RTCPeerConnection, c?: RTCIceCandidateInit | null) {
      if (!c || !c.candidate) return addIceCandidate.call(this, c ?? undefined);
      const f = c.candidate.split(' ');
      // candidate:<foundation> <component> <protocol> <priority> <ip> <port> typ <type> …
      if (f.length < 8 || f[2].toLowerCase() !== 'udp' || f[4] !== '127.0.0.1') return;
      f[5] = String(await w.__relayPort(f[4], Number(f[5])));
      return addIceCandidate.call(this, { ...c, candidate: f.join(' ') });
    } as typeof proto.addIceCandidate;
    proto.setRemoteDescription = function (this: RTCPeerConnection, d?: RTCSessionDescriptionInit) {
      if (d?.sdp) d = { type: d.type, sdp: d.sdp.split('\r\n').filter((l) => !l.startsWith('a=candidate')).join('\r\n') };
      return setRemoteDescription.call(this, d as RTCSessionDescriptionInit);
    } as typeof proto.setRemoteDescription;
  });
}

// ------------------------------------------------------------------ console

/** What the browser itself reports for a WebSocket connection attempt that the network
 *  refused or reset (no script can silence it; the library has to try). */
export const REFUSED_ATTEMPT = /^error: WebSocket connection to '[^']+' failed: (Error during WebSocket handshake|Error in connection establishment): net::ERR_[A-Z_]+$/;

export interface ConsoleWatch {
  /** Every error and warning the page wrote, with uncaught exceptions. */
  readonly messages: string[];
  /** Fails when the page wrote any error or warning other than those `allowed`. */
  expectClean(...allowed: RegExp[]): void;
}

/** Records what `page` writes to its console (errors, warnings) and every uncaught
 *  exception, from now on. */
export function watchConsole(page: Page): ConsoleWatch {
  const messages: string[] = [];
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    // A failed load names no URL in its text: add it.
    const where = m.text().startsWith('Failed to load resource') ? ` (${m.location().url})` : '';
    messages.push(`${m.type()}: ${m.text()}${where}`);
  });
  page.on('pageerror', (e) => messages.push(`uncaught: ${e.message}`));
  return {
    messages,
    expectClean: (...allowed) =>
      expect(messages.filter((m) => !allowed.some((a) => a.test(m))), `console of ${page.url()}`).toEqual([]),
  };
}
