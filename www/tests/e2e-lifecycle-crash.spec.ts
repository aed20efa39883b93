// End-to-end (issue 14, item 5): the server process crashes mid-call and comes back
// with an empty in-memory store. Neither person cancelled anything: both are told the
// server lost the call, and can call again.
import { expect, test } from '@playwright/test';
import { callAndAccept, closeAll, person } from './e2e-helpers';
import { OwnServer, recordWhatIsShown, toastsSeen } from './e2e-lifecycle-helpers';

test('L5. the server crashes mid-call (memory store): both ends say the server lost the call, not "cancelled"', async ({ browser }) => {
  const server = await OwnServer.start();
  try {
    const alice = await person(browser, 'Alice', { baseURL: server.url, setup: recordWhatIsShown });
    const bob = await person(browser, 'Bob', { baseURL: server.url, setup: recordWhatIsShown });
    await callAndAccept(alice, bob);

    await server.crash();
    for (const p of [alice, bob]) await expect(p.page.getByTestId('conn-badge')).toHaveText('Reconnecting…');
    await server.restart();

    for (const p of [alice, bob]) {
      await expect(p.page.getByTestId('conn-badge')).toHaveText('Connected', { timeout: 15_000 });
      const ended = p.page.getByTestId('call-ended');
      await expect(ended).toHaveAttribute('data-reason', 'server-lost');
      await expect(p.page.getByTestId('ended-text')).toHaveText('The server lost the call (it restarted)');
      const toasts = await toastsSeen(p.page);
      expect(toasts.filter((t) => /cancel/i.test(t))).toEqual([]);
      expect(toasts.filter((t) => t.includes('The server lost the call'))).toHaveLength(1);
      await expect(p.page.getByTestId('rejoin')).toHaveCount(0);
    }
    await closeAll(alice, bob);
  } finally {
    await server.stop();
  }
});
