// End-to-end (issue 14, item 9): a call page that goes into the back/forward cache, or
// is frozen (Page Lifecycle), lets go of its socket itself and keeps its session; back
// (or resume) returns to the same call, with no rejoin prompt and nothing in the
// console.
import { expect, test, type Page } from '@playwright/test';
import config from '../playwright.config';
import { callAndAccept, callIdOf, closeAll, expectMediaBothWays, person, watchConsole } from './e2e-helpers';

// Playwright turns the back/forward cache off by default; these tests need it.
test.use({
  launchOptions: { ...config.use!.launchOptions, ignoreDefaultArgs: ['--disable-back-forward-cache'] },
});

declare global {
  interface Window {
    /** What happened to this document's sockets and lifecycle, in order. */
    __lifecycle: string[];
    /** Set once, before the page first leaves: survives only a bfcache restore. */
    __marker?: string;
  }
}

/** Records page lifecycle events and who closed which socket. */
async function recordLifecycle(page: Page): Promise<void> {
  await page.addInitScript(() => {
    window.__lifecycle = [];
    const log = (s: string) => window.__lifecycle.push(s);
    addEventListener('pagehide', (e) => log(`pagehide persisted=${e.persisted}`), { capture: true });
    addEventListener('pageshow', (e) => log(`pageshow persisted=${e.persisted}`), { capture: true });
    document.addEventListener('freeze', () => log('freeze'), { capture: true });
    document.addEventListener('resume', () => log('resume'), { capture: true });
    const close = WebSocket.prototype.close;
    WebSocket.prototype.close = function (this: WebSocket, ...args: Parameters<WebSocket['close']>) {
      log('socket closed by the page');
      return close.apply(this, args);
    };
    const Native = WebSocket;
    window.WebSocket = class extends Native {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols);
        log('socket opened');
      }
    };
  });
}

const session = (page: Page) => page.evaluate(() => window.holdfastDemo.getClient()!.getSnapshot().session);

interface FacadeWindow {
  holdfast: typeof import('../src/index');
  events: { type: string; [k: string]: unknown }[];
  ready: boolean;
}

/** A person on the bare test page: the client with no media (an app that relays its
 *  own data, or runs its media elsewhere). A page with live camera tracks and a peer
 *  connection is refused by Chromium's cache for those alone (`mediastream`, `rtc`). */
async function bare(browser: import('@playwright/test').Browser, user: string) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await recordLifecycle(page);
  await page.goto('/tests/pages/facade.html');
  await page.waitForFunction(() => (window as unknown as FacadeWindow).ready);
  await page.evaluate(async (token) => {
    const w = window as unknown as FacadeWindow;
    const client = await w.holdfast.connect({ token });
    client.on('*', (e) => w.events.push(e as never));
  }, user);
  await expect.poll(() => state(page)).toBe('connected');
  return { ctx, page, user };
}

const snap = (page: Page) => page.evaluate(() => {
  const s = (window as unknown as FacadeWindow).holdfast.getClient()!.getSnapshot();
  return { state: s.state, session: s.session, calls: s.calls.map((c) => `${c.id}:${c.phase}:${c.peerLink}`), rejoins: s.pendingRejoins.length };
});
const state = async (page: Page) => (await snap(page)).state;
const eventTypes = (page: Page) => page.evaluate(() => (window as unknown as FacadeWindow).events.map((e) => e.type));

test('9a. back/forward cache: the socket is let go on pagehide and resumed on pageshow; back is the same call', async ({ browser }) => {
  const n = Math.floor(Math.random() * 1e9);
  const alice = await bare(browser, `alice-${n}`);
  const bob = await bare(browser, `bob-${n}`);
  const consoles = [watchConsole(alice.page), watchConsole(bob.page)];
  await alice.page.evaluate((peer) => (window as unknown as FacadeWindow).holdfast.getClient()!.call(peer), bob.user);
  await expect.poll(async () => (await snap(bob.page)).calls.length).toBe(1);
  await bob.page.evaluate(() => {
    const c = (window as unknown as FacadeWindow).holdfast.getClient()!;
    c.accept(c.getSnapshot().calls[0].id);
  });
  await expect.poll(async () => (await snap(alice.page)).calls[0]).toMatch(/:active:connected$/);
  const before = await snap(alice.page);
  await alice.page.evaluate(() => {
    window.__marker = 'same document';
    window.__lifecycle.length = 0;
  });

  // Alice follows a link away from the call page (to a page of the same site)…
  await alice.page.goto('/');
  await expect(alice.page.getByTestId('signin')).toBeVisible();
  // …and Bob's page learns at once that her link is gone: the call waits for her.
  await expect.poll(async () => (await snap(bob.page)).calls[0]).toMatch(/:active:reconnecting$/);
  await alice.page.goBack({ waitUntil: 'commit' });
  await alice.page.waitForFunction(() => window.__lifecycle?.some((l) => l.startsWith('pageshow')));

  // Restored from the cache: the same document, the same session and call, no prompt.
  expect(await alice.page.evaluate(() => window.__marker)).toBe('same document');
  await expect.poll(() => state(alice.page)).toBe('connected');
  const after = await snap(alice.page);
  expect(after.session).toBe(before.session);
  expect(after.calls).toEqual(before.calls);
  expect(after.rejoins).toBe(0);
  expect(await eventTypes(alice.page)).not.toContain('rejoin-available');
  await expect.poll(async () => (await snap(bob.page)).calls[0]).toMatch(/:active:connected$/);
  expect(await eventTypes(bob.page)).toContain('participant-reconnected');
  // The library closed its socket while the page was being hidden, before it froze,
  // and opened a new one when it came back (Chromium fires `resume` before `pageshow`).
  const life = await alice.page.evaluate(() => window.__lifecycle);
  expect(life.slice(0, 3)).toEqual(['pagehide persisted=true', 'socket closed by the page', 'freeze']);
  expect(life.slice(3)).toEqual(['resume', 'socket opened', 'pageshow persisted=true']);
  // Chromium kills a socket left open in a cached page, and says so in red.
  for (const c of consoles) c.expectClean();
  await alice.ctx.close();
  await bob.ctx.close();
});

test('9b. Page Lifecycle freeze and resume: the socket is let go and taken back, same session', async ({ browser }) => {
  const alice = await person(browser, 'Alice');
  await recordLifecycle(alice.page);
  await alice.page.reload();
  await expect(alice.page.getByTestId('conn-badge')).toHaveText('Connected');
  const bob = await person(browser, 'Bob');
  const call = await callAndAccept(alice, bob);
  await expectMediaBothWays(alice.page, bob.page, call);
  const consoles = [watchConsole(alice.page), watchConsole(bob.page)];
  const before = await session(alice.page);
  await alice.page.evaluate(() => (window.__lifecycle.length = 0));

  // Headless Chromium cannot be made to freeze a visible page (CDP
  // Page.setWebLifecycleState has no effect there), so the test fires the events the
  // browser fires around a freeze. A frozen page runs nothing, yet the browser answers
  // the server's pings for it: the library must let go of the socket itself, or Bob
  // would go on seeing Alice "connected" while nothing reaches her.
  await alice.page.evaluate(() => document.dispatchEvent(new Event('freeze')));
  await expect(bob.page.getByTestId('call-status')).toHaveText(`${alice.name} is reconnecting`);
  // No attempt while frozen.
  await alice.page.waitForTimeout(1000);
  expect(await alice.page.evaluate(() => window.__lifecycle)).toEqual(['freeze', 'socket closed by the page']);
  await alice.page.evaluate(() => document.dispatchEvent(new Event('resume')));

  await expect(alice.page.getByTestId('conn-badge')).toHaveText('Connected');
  expect(await alice.page.evaluate(() => window.__lifecycle)).toEqual(['freeze', 'socket closed by the page', 'resume', 'socket opened']);
  expect(await session(alice.page)).toBe(before);
  await expect(alice.page.getByTestId('rejoin')).toHaveCount(0);
  await expect(alice.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  expect(await callIdOf(alice.page)).toBe(call);
  await expect(bob.page.getByTestId('call-status')).toHaveText('Connected');
  await expectMediaBothWays(alice.page, bob.page, call);
  for (const c of consoles) c.expectClean();
  await closeAll(alice, bob);
});
