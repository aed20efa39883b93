// End-to-end (issue 14, item 11, the demo): while the other person is away, the page
// shows one countdown, from one source, everywhere it shows one; every status on the
// page tells the same story; notices cover nothing.
import { expect, test, type Locator, type Page } from '@playwright/test';
import { callAndAccept, closeAll, expectMediaFlowing, person, TcpProxy } from './e2e-helpers';

const serverPort = () => Number(new URL(test.info().project.use.baseURL!).port);

/** Every countdown number on the page, the seconds left by the client's own deadline
 *  for the call (the one source), all read in one go. */
function readCountdowns(page: Page, call: string) {
  return page.evaluate((id) => {
    const shown = [...document.querySelectorAll('.secs')]
      .filter((el) => (el as HTMLElement).offsetParent !== null)
      .map((el) => Number(el.textContent));
    const c = window.holdfastDemo.getClient()!.getSnapshot().calls.find((x) => x.id === id);
    const left = c?.peerDeadline ? Math.max(0, Math.ceil((c.peerDeadline - Date.now()) / 1000)) : null;
    return { shown, left };
  }, call);
}

function overlaps(a: { x: number; y: number; width: number; height: number }, b: typeof a): boolean {
  return a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
}

async function box(l: Locator) {
  const b = await l.boundingBox();
  if (!b) throw new Error('not on screen');
  return b;
}

test('11. the other side drops: one countdown everywhere, statuses agree, notices cover nothing', async ({ browser }, testInfo) => {
  const proxy = await TcpProxy.start(serverPort());
  try {
    // `long` calls have a 20 s window.
    const alice = await person(browser, 'Alice', { path: '/?kind=long' });
    const bob = await person(browser, 'Bob', { baseURL: proxy.url });
    const call = await callAndAccept(alice, bob);
    await expect(alice.page.getByTestId('media-state')).toHaveText('Media connected');

    // Bob's path to the server breaks; his media still reaches Alice peer to peer.
    proxy.cut();
    const page = alice.page;
    await expect(page.getByTestId('waiting-text')).toContainText(`${bob.name} disconnected — waiting`);
    await expect(page.getByTestId('call-status')).toHaveText(`${bob.name} is reconnecting`);
    await page.screenshot({ path: testInfo.outputPath('peer-away.png') });

    // One countdown: every number on the page is the same, at every reading, and it is
    // the client's deadline for the call (within the display's quarter-second tick).
    let readings = 0;
    for (let i = 0; i < 12; i++) {
      const { shown, left } = await readCountdowns(page, call);
      expect(shown.length, 'countdowns on the page').toBeGreaterThanOrEqual(1);
      expect(new Set(shown).size, `countdowns ${shown.join(', ')}`).toBe(1);
      expect(left).not.toBeNull();
      expect(shown[0] - left!, `shown ${shown[0]} s, the deadline says ${left} s`).toBeGreaterThanOrEqual(0);
      expect(shown[0] - left!, `shown ${shown[0]} s, the deadline says ${left} s`).toBeLessThanOrEqual(1);
      readings++;
      await page.waitForTimeout(230);
    }
    expect(readings).toBe(12);

    // Nothing covers the Connection card, the call's status or the tiles.
    const covered = [
      page.locator('.card', { has: page.getByRole('heading', { name: 'Connection' }) }),
      page.locator('.card', { has: page.getByRole('heading', { name: 'Activity' }) }),
      page.getByTestId('call-status'),
      page.getByTestId('media-state'),
      page.getByTestId('remote-tile'),
    ];
    const toasts = page.getByTestId('toast');
    expect(await toasts.count()).toBeGreaterThan(0);
    for (const t of await toasts.all()) {
      for (const c of covered) {
        expect(overlaps(await box(t), await box(c)), `toast "${await t.textContent()}" covers ${c}`).toBe(false);
      }
    }

    // Statuses agree: the header's media pill and the Connection card say the same
    // thing about the media, and media does flow (Bob's link to the server is what is
    // down, not the peer-to-peer path).
    await expectMediaFlowing(page, call);
    const fact = (name: string) => page.locator(`[data-fact="${name}"]`);
    await expect(fact('Media')).toHaveText(/^connected/);
    await expect(page.getByTestId('media-state')).toHaveText('Media connected');
    await expect(fact('Other side')).toContainText('reconnecting — window closes in');
    await expect(fact('Signaling')).toHaveText('connected');
    await expect(page.getByTestId('conn-badge')).toHaveText('Connected');

    proxy.restore();
    await expect(page.getByTestId('call-status')).toHaveText('Connected', { timeout: 15_000 });
    await expect(page.getByTestId('peer-waiting')).toBeHidden();
    await expect(fact('Other side')).toHaveText('connected');
    expect((await readCountdowns(page, call)).shown).toEqual([]);
    await closeAll(alice, bob);
  } finally {
    await proxy.close();
  }
});
