// End-to-end: the signaling link and the media path break and come back; the call
// never ends and never doubles.
import { expect, test } from '@playwright/test';
import {
  callAndAccept, callIdOf, closeAll, expectMediaBothWays, expectMediaFlowing, forceMediaThrough, inbound,
  metric, person, TcpProxy, UdpProxy,
} from './e2e-helpers';

const serverPort = () => Number(new URL(test.info().project.use.baseURL!).port);

test('3. signaling dropped on both sides: reconnecting, resumed, same call, media goes on', async ({ browser }) => {
  const proxy = await TcpProxy.start(serverPort());
  try {
    const alice = await person(browser, 'Alice', { baseURL: proxy.url });
    const bob = await person(browser, 'Bob', { baseURL: proxy.url });
    const call = await callAndAccept(alice, bob);
    await expectMediaBothWays(alice.page, bob.page, call);
    const created = await metric(alice.page.request, 'holdfast_calls_created_total');
    const resumes = await metric(alice.page.request, 'holdfast_resumes_total');

    // (a) The server drops both sockets (test hook): both resume at once.
    for (const p of [alice, bob]) {
      expect((await alice.page.request.post(`/test/drop?user=${p.id}`)).ok()).toBe(true);
    }
    for (const p of [alice, bob]) {
      await expect(p.page.getByTestId('toast').filter({ hasText: 'Reconnected — session resumed' }).last()).toBeVisible();
      await expect(p.page.getByTestId('conn-badge')).toHaveText('Connected');
    }

    // (b) The network path to the server is cut for a few seconds (TCP proxy): both
    // people see "Reconnecting…" while peer-to-peer media keeps flowing.
    proxy.cut();
    for (const p of [alice, bob]) {
      await expect(p.page.getByTestId('conn-badge')).toHaveText('Reconnecting…');
      await expect(p.page.getByTestId('toast').filter({ hasText: 'Connection lost — reconnecting…' }).last()).toBeVisible();
    }
    await expectMediaBothWays(alice.page, bob.page, call);
    await expect(alice.page.getByTestId('call-status')).toHaveText('You are reconnecting…');
    await alice.page.waitForTimeout(2500); // past the server's dead-link timeout (1.5 s)
    await expect(alice.page.getByTestId('conn-badge')).toHaveText('Reconnecting…');
    proxy.restore();

    for (const p of [alice, bob]) {
      await expect(p.page.getByTestId('conn-badge')).toHaveText('Connected', { timeout: 15_000 });
      await expect(p.page.getByTestId('toast').filter({ hasText: 'Reconnected — session resumed' }).last()).toBeVisible();
      // Same call, still active, no second call and no incoming-call dialog.
      await expect(p.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
      expect(await callIdOf(p.page)).toBe(call);
      await expect(p.page.getByTestId('incoming')).toHaveCount(0);
      const calls = await p.page.evaluate(() => window.holdfastDemo.getClient()!.getSnapshot().calls.map((c) => c.id));
      expect(calls).toEqual([call]);
      // Every resume restarts ICE; media comes back connected.
      await expect(p.page.getByTestId('activity')).toContainText('Media reconnecting (signaling-resumed)');
      await expect(p.page.getByTestId('media-state')).toHaveText('Media connected');
    }
    await expectMediaBothWays(alice.page, bob.page, call);
    expect(await metric(alice.page.request, 'holdfast_calls_created_total')).toBe(created);
    expect(await metric(alice.page.request, 'holdfast_resumes_total')).toBeGreaterThanOrEqual(resumes + 4);
    await closeAll(alice, bob);
  } finally {
    await proxy.close();
  }
});

test('9. media path broken and restored on a new path: ICE restarts, the call goes on', async ({ browser }) => {
  const relay = new UdpProxy();
  try {
    const setup = (ctx: import('@playwright/test').BrowserContext) => forceMediaThrough(ctx, relay);
    const alice = await person(browser, 'Alice', { setup });
    const bob = await person(browser, 'Bob', { setup });
    const call = await callAndAccept(alice, bob);
    await expectMediaBothWays(alice.page, bob.page, call);
    const created = await metric(alice.page.request, 'holdfast_calls_created_total');

    // The path breaks: no more bytes; both sides restart ICE (with backoff) and show it.
    relay.break();
    for (const p of [alice, bob]) {
      await expect(p.page.getByTestId('media-state')).toHaveText('Media reconnecting…', { timeout: 15_000 });
      await expect(p.page.getByTestId('media-overlay')).toContainText('Reconnecting media…');
    }
    const stalled = await inbound(bob.page, call);
    await bob.page.waitForTimeout(1500);
    expect((await inbound(bob.page, call)).bytes).toBe(stalled.bytes);
    // Signaling is fine and the call is not ended.
    for (const p of [alice, bob]) {
      await expect(p.page.getByTestId('conn-badge')).toHaveText('Connected');
      await expect(p.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
    }

    // A new path appears (the old one stays dead): only a new ICE restart finds it.
    relay.restore();
    for (const p of [alice, bob]) {
      await expect(p.page.getByTestId('media-state')).toHaveText('Media connected', { timeout: 20_000 });
      await expect(p.page.getByTestId('activity')).toContainText('Media restored after');
      expect(await callIdOf(p.page)).toBe(call);
    }
    await expectMediaBothWays(alice.page, bob.page, call);
    // Both saw media reconnecting; whichever noticed the stall first ("stalled" or
    // "failed") asked the other for the restart ("peer-request").
    for (const p of [alice, bob]) {
      await expect(p.page.getByTestId('activity')).toContainText('Media reconnecting (');
    }
    const logs = (await alice.page.getByTestId('activity').innerText()) + (await bob.page.getByTestId('activity').innerText());
    expect(logs).toMatch(/Media reconnecting \((stalled|failed)\)/);

    // "Reconnect media" by hand: an ICE restart while media flows; it keeps flowing.
    await alice.page.getByTestId('reconnect-media').click();
    await expect(alice.page.getByTestId('activity')).toContainText('Media reconnecting (manual)');
    await expect.poll(async () => (await alice.page.getByTestId('activity').textContent())!.match(/Media restored/g)?.length ?? 0)
      .toBeGreaterThanOrEqual(2);
    await expectMediaFlowing(bob.page, call);
    expect(await metric(alice.page.request, 'holdfast_calls_created_total')).toBe(created);
    await closeAll(alice, bob);
  } finally {
    relay.close();
  }
});
