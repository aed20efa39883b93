// The TypeScript facade in a real browser against the real server: typed events,
// a referentially stable getSnapshot, working unsubscribers, one socket per page.
import { expect, test, type Page } from '@playwright/test';

declare global {
  interface Window {
    holdfast: typeof import('../src/index');
    events: { type: string; [k: string]: unknown }[];
    ready: boolean;
  }
}

const unique = (name: string) => `${name}-${Math.floor(Math.random() * 1e9)}`;

async function open(page: Page, user: string) {
  await page.goto('/tests/pages/facade.html');
  await page.waitForFunction(() => window.ready);
  await page.evaluate(async (token) => {
    const client = await window.holdfast.connect({ token, backoffBaseMs: 50, backoffMaxMs: 300 });
    client.on('*', (e) => window.events.push(e as never));
  }, user);
  await waitEvent(page, 'connected');
}

async function waitEvent(page: Page, type: string) {
  await page.waitForFunction((t) => window.events.some((e) => e.type === t), type);
  return page.evaluate((t) => window.events.find((e) => e.type === t)!, type);
}

async function metric(page: Page, name: string): Promise<number> {
  const body = await (await page.request.get('/metrics')).text();
  const line = body.split('\n').find((l) => l.startsWith(name + ' '));
  if (!line) throw new Error(`metric ${name} missing`);
  return Number(line.split(' ')[1]);
}

test('connect is a page singleton: many connects, one client, one socket', async ({ page }) => {
  const me = unique('solo');
  const opened = await metric(page, 'holdfast_connections_opened_total');
  await open(page, me);
  const same = await page.evaluate(async (token) => {
    const a = await window.holdfast.connect({ token });
    const b = await window.holdfast.connect({ token });
    return a === b && a === window.holdfast.getClient();
  }, me);
  expect(same).toBe(true);
  const err = await page.evaluate(async () => {
    try {
      await window.holdfast.connect({ token: 'someone-else' });
      return null;
    } catch (e) {
      return { name: (e as Error).name, code: (e as { code: string }).code, isError: e instanceof window.holdfast.HoldfastError };
    }
  });
  expect(err).toEqual({ name: 'HoldfastError', code: 'already-connected', isError: true });
  await page.waitForTimeout(200);
  expect(await metric(page, 'holdfast_connections_opened_total')).toBe(opened + 1);
});

test('typed events arrive and calls resolve with the call', async ({ browser }) => {
  const [alice, bob] = [unique('alice'), unique('bob')];
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  await open(a, alice);
  await open(b, bob);

  const outgoing = await a.evaluate(async (peer) => {
    const call = await window.holdfast.getClient()!.call(peer, { kind: 'support', metadata: { topic: 'billing' } });
    return call;
  }, bob);
  expect(outgoing.phase).toBe('outgoing');
  expect(outgoing.peer.id).toBe(bob);
  expect(outgoing.kind).toBe('support');

  const incoming = (await waitEvent(b, 'incoming-call')) as unknown as { call: { id: string; peer: { id: string }; metadata: unknown } };
  expect(incoming.call.id).toBe(outgoing.id);
  expect(incoming.call.peer.id).toBe(alice);
  expect(incoming.call.metadata).toEqual({ topic: 'billing' });

  await b.evaluate((id) => window.holdfast.getClient()!.accept(id), outgoing.id);
  const started = (await waitEvent(a, 'call-started')) as unknown as { call: { id: string; phase: string }; rejoined: boolean };
  expect(started.call.id).toBe(outgoing.id);
  expect(started.call.phase).toBe('active');
  expect(started.rejoined).toBe(false);

  await a.evaluate((id) => window.holdfast.getClient()!.send(id, { sdp: 'hello' }), outgoing.id);
  const signal = (await waitEvent(b, 'signal')) as unknown as { payload: unknown; from: string };
  expect(signal.payload).toEqual({ sdp: 'hello' });
  expect(signal.from).toBe(alice);

  // Errors are typed: a local refusal throws, a server refusal rejects the promise.
  const local = await a.evaluate((peer) => {
    try {
      window.holdfast.getClient()!.call(peer);
      return null;
    } catch (e) {
      return (e as { code: string }).code;
    }
  }, bob);
  expect(local).toBe('already-in-call');
  const remote = await a.evaluate(async () => {
    try {
      await window.holdfast.getClient()!.call('nobody-is-here');
      return null;
    } catch (e) {
      return (e as { code: string }).code;
    }
  });
  expect(remote).toBe('peer-offline');

  await a.evaluate((id) => window.holdfast.getClient()!.hangup(id), outgoing.id);
  const ended = (await waitEvent(b, 'call-ended')) as unknown as { reason: string };
  expect(ended.reason).toBe('hangup');
  await ctxA.close();
  await ctxB.close();
});

test('getSnapshot is stable between changes, frozen, and new after a change', async ({ page }) => {
  await open(page, unique('snap'));
  const result = await page.evaluate(async () => {
    const c = window.holdfast.getClient()!;
    const s1 = c.getSnapshot();
    const s2 = c.getSnapshot();
    let notified = 0;
    const unsub = c.subscribe(() => notified++);
    c.setStatus('busy');
    // Wait for the server's acknowledgement to flow through as events.
    await new Promise((r) => setTimeout(r, 300));
    const s3 = c.getSnapshot();
    const s4 = c.getSnapshot();
    unsub();
    return {
      stable: s1 === s2,
      frozen: Object.isFrozen(s1) && Object.isFrozen(s1.calls),
      state: s1.state,
      user: s1.user?.id,
      // No event, no change: status is not part of the snapshot, acks are not events.
      unchangedWithoutEvents: s3 === s4,
      notified,
    };
  });
  expect(result.stable).toBe(true);
  expect(result.frozen).toBe(true);
  expect(result.state).toBe('connected');
  expect(result.user).toMatch(/^snap-/);
  expect(result.unchangedWithoutEvents).toBe(true);

  // A change (a drop and resume) gives a new snapshot and notifies subscribers.
  const me = await page.evaluate(() => window.holdfast.getClient()!.getSnapshot().user!.id);
  await page.evaluate(() => {
    const c = window.holdfast.getClient()!;
    (window as unknown as { before: unknown }).before = c.getSnapshot();
    (window as unknown as { notified: number }).notified = 0;
    c.subscribe(() => (window as unknown as { notified: number }).notified++);
  });
  await page.request.post(`/test/drop?user=${me}`);
  await waitEvent(page, 'resumed');
  const after = await page.evaluate(() => {
    const c = window.holdfast.getClient()!;
    const w = window as unknown as { before: unknown; notified: number };
    return { changed: c.getSnapshot() !== w.before, notified: w.notified, state: c.getSnapshot().state };
  });
  expect(after.changed).toBe(true);
  expect(after.notified).toBeGreaterThan(0);
  expect(after.state).toBe('connected');
});

test('unsubscribe removes handlers and listeners', async ({ page }) => {
  const me = unique('unsub');
  await open(page, me);
  const counts = await page.evaluate(() => {
    const c = window.holdfast.getClient()!;
    const base = c.listenerCount();
    const hits = { on: 0, sub: 0 };
    const offs = [
      c.on('resumed', () => hits.on++),
      c.on('disconnected', () => hits.on++),
      c.subscribe(() => hits.sub++),
    ];
    const during = c.listenerCount();
    offs.forEach((off) => off());
    (window as unknown as { hits: typeof hits }).hits = hits;
    return { base, during, after: c.listenerCount() };
  });
  expect(counts.during).toBe(counts.base + 3);
  expect(counts.after).toBe(counts.base);
  // Events keep flowing to the remaining handler, and not to the removed ones.
  await page.request.post(`/test/drop?user=${me}`);
  await page.waitForFunction(() => window.events.filter((e) => e.type === 'resumed').length >= 1);
  const hits = await page.evaluate(() => (window as unknown as { hits: { on: number; sub: number } }).hits);
  expect(hits).toEqual({ on: 0, sub: 0 });
});

test('every failure is a HoldfastError; an oversized request is refused at once', async ({ browser }) => {
  const [alice, bob] = [unique('alice'), unique('bob')];
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  await open(a, alice);
  await open(b, bob);
  const failures = await a.evaluate(async (peer) => {
    const h = window.holdfast;
    const client = h.getClient()!;
    const seen = (e: unknown) => ({ code: (e as { code: string }).code, real: e instanceof h.HoldfastError, name: (e as Error).name });
    const out: Record<string, unknown> = {};
    try {
      h.attachMedia(client, 'no-such-call', null);
    } catch (e) {
      out.attachMedia = seen(e);
    }
    // Over the frame limit the welcome announced (16 KiB): thrown at once (before
    // call() returns), not a promise the server would never settle.
    try {
      void client.call(peer, { metadata: { notes: 'x'.repeat(20_000) } });
      out.tooLarge = 'returned a promise';
    } catch (e) {
      out.tooLarge = seen(e);
    }
    try {
      await client.call('nobody-is-here');
    } catch (e) {
      out.server = seen(e);
    }
    // A pending invite settles when the page logs out.
    const pending = client.call(peer).then(() => null, (e) => seen(e));
    client.logout();
    out.logout = await pending;
    return out;
  }, bob);
  expect(failures.attachMedia).toEqual({ code: 'unknown-call', real: true, name: 'HoldfastError' });
  expect(failures.tooLarge).toEqual({ code: 'frame-too-large', real: true, name: 'HoldfastError' });
  expect(failures.server).toEqual({ code: 'peer-offline', real: true, name: 'HoldfastError' });
  expect(failures.logout).toEqual({ code: 'logged-out', real: true, name: 'HoldfastError' });
  await ctxA.close();
  await ctxB.close();
});
