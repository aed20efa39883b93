// End-to-end (issue 15, item 2): a connection that cannot be made says why, within a
// second, in real Chromium against real server processes: nothing listening
// (`unreachable`), a wrong path on a real server (`not-found`, same origin and cross
// origin), a refused token (`auth-failed` with the server's code, no retry), and a
// server that accepts TCP but never answers (`timeout` at `connectTimeoutMs`).
import { expect, test, type Page } from '@playwright/test';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';

declare global {
  interface Window {
    holdfast: typeof import('../src/index');
    events: { type: string; [k: string]: unknown }[];
    ready: boolean;
    connectedAt: number;
  }
}

interface Failure {
  type: 'connection-failed';
  reason: string;
  code: string | null;
  message: string;
  attempt: number;
  at: number;
  willRetry: boolean;
  nextAttemptAt: number | null;
  /** When the page's handler got it (Date.now()). */
  receivedAt: number;
}

const BACKOFF_MAX = 1_000;

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** Opens the facade test page and connects to `url`; every event is recorded with the
 *  time the app's handler got it. */
async function connectTo(page: Page, url: string, token: string, extra: Record<string, number> = {}): Promise<void> {
  await page.goto('/tests/pages/facade.html');
  await page.waitForFunction(() => window.ready);
  await page.evaluate(async ([url, token, extra]) => {
    window.connectedAt = Date.now();
    const client = await window.holdfast.connect({ url, token, backoffBaseMs: 200, backoffMaxMs: 1000, ...extra });
    client.on('*', (e) => window.events.push({ ...e, receivedAt: Date.now() } as never));
  }, [url, token, extra] as const);
}

async function failures(page: Page, count = 1): Promise<Failure[]> {
  await page.waitForFunction((n) => window.events.filter((e) => e.type === 'connection-failed').length >= n, count);
  return page.evaluate(() => window.events.filter((e) => e.type === 'connection-failed')) as Promise<Failure[]>;
}

async function snapshotFailure(page: Page): Promise<Omit<Failure, 'type' | 'receivedAt'> | null> {
  return page.evaluate(() => window.holdfast.getClient()!.getSnapshot().lastFailure) as never;
}

/** The snapshot's `lastFailure` is the last `connection-failed` event (read together). */
async function expectSnapshotHoldsTheLastFailure(page: Page): Promise<void> {
  const { snap, last } = await page.evaluate(() => {
    const all = window.events.filter((e) => e.type === 'connection-failed');
    const { type: _t, receivedAt: _r, ...last } = all[all.length - 1] as Record<string, unknown>;
    return { snap: window.holdfast.getClient()!.getSnapshot().lastFailure, last };
  });
  expect(snap).toEqual(last);
}

/** Reported within a second of the attempt failing, and the attempt failed at once. */
function promptly(f: Failure, connectedAt: number): void {
  expect(f.receivedAt - f.at, `reported ${f.receivedAt - f.at} ms after the failure`).toBeLessThanOrEqual(1_000);
  expect(f.at - connectedAt, 'the first attempt failed at once').toBeLessThan(1_000);
}

/** A server with JWT auth (no `--dev`) on a free port. */
async function jwtServer(): Promise<{ port: number; stop: () => Promise<void> }> {
  return ownServer(await freePort(), ['--jwt-secret', 'e2e-secret-of-at-least-32-bytes-long']);
}

function retries(f: Failure): void {
  expect(f.willRetry).toBe(true);
  expect(f.nextAttemptAt).not.toBeNull();
  expect(f.nextAttemptAt!).toBeGreaterThan(f.at);
  expect(f.nextAttemptAt!).toBeLessThanOrEqual(f.at + BACKOFF_MAX);
}

/** A holdfast-server process of this test's own on `port`, serving no pages. */
async function ownServer(port: number, auth: string[]): Promise<{ port: number; stop: () => Promise<void> }> {
  const root = path.dirname(test.info().config.configFile ?? path.resolve('playwright.config.ts'));
  const proc: ChildProcess = spawn(path.join(root, '../target/debug/holdfast-server'), [
    ...auth, '--listen', `127.0.0.1:${port}`,
  ], { stdio: 'ignore' });
  await expect.poll(async () => {
    try {
      return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
    } catch {
      return false;
    }
  }, { timeout: 10_000, message: 'own server up' }).toBe(true);
  return {
    port,
    stop: async () => {
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await gone;
    },
  };
}

test('a server that is down: unreachable, with the next attempt, and again for each attempt', async ({ page }) => {
  const port = await freePort();
  await connectTo(page, `ws://127.0.0.1:${port}/ws`, 'alice');
  const connectedAt = await page.evaluate(() => window.connectedAt);
  const [first, second] = await failures(page, 2);
  expect(first).toMatchObject({ reason: 'unreachable', code: null, attempt: 1 });
  promptly(first, connectedAt);
  retries(first);
  // The second attempt went when the first report said, and failed the same way.
  expect(second).toMatchObject({ reason: 'unreachable', attempt: 2 });
  expect(second.at).toBeGreaterThanOrEqual(first.nextAttemptAt! - 5);
  expect(second.receivedAt - second.at).toBeLessThanOrEqual(1_000);
  expect(await page.evaluate(() => window.holdfast.getClient()!.getSnapshot().state)).toBe('connecting');
  await expectSnapshotHoldsTheLastFailure(page);
});

test('a wrong path on a real server: not-found, same origin and cross origin', async ({ page, baseURL }) => {
  const here = new URL(baseURL!);
  await connectTo(page, `ws://${here.host}/nope`, 'alice');
  const connectedAt = await page.evaluate(() => window.connectedAt);
  const [f] = await failures(page);
  expect(f.reason, f.message).toBe('not-found');
  expect(f.message).toContain('404');
  promptly(f, connectedAt);
  retries(f);
  await expectSnapshotHoldsTheLastFailure(page);

  // Another origin's server without Holdfast at that path sends no CORS headers: the
  // probe still tells an answer from none.
  const other = await jwtServer();
  try {
    const page2 = await page.context().browser()!.newPage();
    await connectTo(page2, `ws://127.0.0.1:${other.port}/nope`, 'alice');
    const [g] = await failures(page2);
    expect(g.reason, g.message).toBe('not-found');
    promptly(g, await page2.evaluate(() => window.connectedAt));
    retries(g);
    await page2.close();
  } finally {
    await other.stop();
  }
});

test('a refused token: auth-failed with the server\'s code, and no retry', async ({ page }) => {
  const server = await jwtServer();
  try {
    // A page of another origin (the test server's) connects to the JWT server.
    await connectTo(page, `ws://127.0.0.1:${server.port}/ws`, 'alice');
    const connectedAt = await page.evaluate(() => window.connectedAt);
    const [f] = await failures(page);
    expect(f).toMatchObject({ reason: 'auth-failed', code: 'auth-failed', willRetry: false, nextAttemptAt: null });
    promptly(f, connectedAt);
    const snap = await page.evaluate(() => window.holdfast.getClient()!.getSnapshot());
    expect(snap.state).toBe('auth-failed');
    expect(snap.lastFailure).toMatchObject({ reason: 'auth-failed', code: 'auth-failed' });
    // Nothing more is attempted.
    await page.waitForTimeout(1_500);
    expect(await page.evaluate(() => window.events.filter((e) => e.type === 'connecting').length)).toBe(0);
    expect(await failures(page)).toHaveLength(1);
    expect(await page.evaluate(() => window.holdfast.getClient()!.getSnapshot().state)).toBe('auth-failed');
  } finally {
    await server.stop();
  }
});

test('a server that never answers: timeout at connectTimeoutMs', async ({ page }) => {
  // Accepts TCP connections and says nothing.
  const held: net.Socket[] = [];
  const silent = net.createServer((s) => held.push(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  const port = (silent.address() as net.AddressInfo).port;
  try {
    await connectTo(page, `ws://127.0.0.1:${port}/ws`, 'alice', { connectTimeoutMs: 1_500 });
    const connectedAt = await page.evaluate(() => window.connectedAt);
    const [f] = await failures(page);
    expect(f.reason, f.message).toBe('timeout');
    expect(f.at - connectedAt).toBeGreaterThanOrEqual(1_400);
    expect(f.at - connectedAt).toBeLessThan(2_500);
    expect(f.receivedAt - f.at).toBeLessThanOrEqual(1_000);
    retries(f);
  } finally {
    for (const s of held) s.destroy();
    await new Promise((r) => silent.close(r));
  }
});

test('when the server comes up, the client connects and lastFailure is cleared', async ({ page }) => {
  const port = await freePort();
  await connectTo(page, `ws://127.0.0.1:${port}/ws`, 'alice');
  await failures(page);
  expect((await snapshotFailure(page))?.reason).toBe('unreachable');
  const server = await ownServer(port, ['--dev']);
  try {
    await page.waitForFunction(() => window.events.some((e) => e.type === 'connected'), null, { timeout: 5_000 });
    expect(await page.evaluate(() => window.holdfast.getClient()!.getSnapshot().state)).toBe('connected');
    expect(await snapshotFailure(page)).toBeNull();
  } finally {
    await server.stop();
  }
});
