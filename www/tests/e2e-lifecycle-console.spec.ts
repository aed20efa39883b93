// End-to-end (issue 14, item 10): links drop and come back while two people are in a
// call and their pages relay data; the library writes nothing to either console.
import { expect, test } from '@playwright/test';
import {
  callAndAccept, closeAll, expectMediaBothWays, person, REFUSED_ATTEMPT, TcpProxy, watchConsole,
} from './e2e-helpers';

const serverPort = () => Number(new URL(test.info().project.use.baseURL!).port);

test('10. drops and resumes while data is relayed leave both consoles clean', async ({ browser }) => {
  const proxy = await TcpProxy.start(serverPort());
  try {
    const alice = await person(browser, 'Alice', { baseURL: proxy.url });
    const bob = await person(browser, 'Bob', { baseURL: proxy.url });
    const consoles = [watchConsole(alice.page), watchConsole(bob.page)];
    const call = await callAndAccept(alice, bob);
    await expectMediaBothWays(alice.page, bob.page, call);
    // Both apps relay a small message every 40 ms (as ICE candidates and app data do),
    // so frames are on their way whenever a link goes down.
    for (const p of [alice, bob]) {
      await p.page.evaluate((id) => {
        const c = window.holdfastDemo.getClient()!;
        setInterval(() => c.send(id, { chatter: Date.now() }), 40);
      }, call);
    }

    for (let round = 0; round < 6; round++) {
      // The server drops both sockets (test hook): both resume.
      for (const p of [alice, bob]) {
        expect((await alice.page.request.post(`/test/drop?user=${p.id}`)).ok()).toBe(true);
      }
      for (const p of [alice, bob]) {
        await expect(p.page.getByTestId('toast').filter({ hasText: 'Reconnected — session resumed' }).last()).toBeVisible();
        await expect(p.page.getByTestId('conn-badge')).toHaveText('Connected');
      }
    }
    for (let round = 0; round < 2; round++) {
      // The path to the server is reset, and stays cut past the dead-link timeout.
      proxy.cut();
      for (const p of [alice, bob]) await expect(p.page.getByTestId('conn-badge')).toHaveText('Reconnecting…');
      await alice.page.waitForTimeout(2000);
      proxy.restore();
      for (const p of [alice, bob]) {
        await expect(p.page.getByTestId('conn-badge')).toHaveText('Connected', { timeout: 15_000 });
        await expect(p.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
      }
    }
    await expectMediaBothWays(alice.page, bob.page, call);
    // The browser reports each attempt refused while the path was cut; nothing else.
    for (const c of consoles) c.expectClean(REFUSED_ATTEMPT);
    await closeAll(alice, bob);
  } finally {
    await proxy.close();
  }
});
