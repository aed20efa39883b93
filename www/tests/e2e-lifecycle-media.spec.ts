// End-to-end (issue 14, item 6): perfect negotiation is perfect. A call, resumes of
// both links, ICE restarts asked for by either side, and a rejoin from a reloaded page
// go through without one failed negotiation step on either page (every scenario's
// closeAll checks the same).
import { expect, test } from '@playwright/test';
import {
  callAndAccept, callIdOf, closeAll, expectMediaBothWays, mediaErrorsOf, newTab, person, type Person,
} from './e2e-helpers';

async function expectNoMediaErrors(...people: Person[]): Promise<void> {
  for (const p of people) expect(await mediaErrorsOf(p), `media errors on ${p.name}'s pages`).toEqual([]);
}

test('6. call, resumes, ICE restarts from both sides and a rejoin: no media error anywhere', async ({ browser }) => {
  const alice = await person(browser, 'Alice', { path: '/?kind=long' });
  const bob = await person(browser, 'Bob');
  const call = await callAndAccept(alice, bob);
  await expectMediaBothWays(alice.page, bob.page, call);
  // Let any late answer or candidate of the first negotiation land.
  await alice.page.waitForTimeout(1500);
  await expectNoMediaErrors(alice, bob);

  // Both links drop and resume: each side restarts ICE.
  for (const p of [alice, bob]) {
    expect((await alice.page.request.post(`/test/drop?user=${p.id}`)).ok()).toBe(true);
  }
  for (const p of [alice, bob]) {
    await expect(p.page.getByTestId('activity')).toContainText('Media reconnecting (signaling-resumed)');
    await expect(p.page.getByTestId('media-state')).toHaveText('Media connected', { timeout: 15_000 });
  }
  await expectMediaBothWays(alice.page, bob.page, call);
  await alice.page.waitForTimeout(1500);
  await expectNoMediaErrors(alice, bob);

  // "Reconnect media" on each side in turn (one is the polite peer, one is not).
  for (const p of [alice, bob]) {
    await p.page.getByTestId('reconnect-media').click();
    await expect(p.page.getByTestId('activity')).toContainText('Media reconnecting (manual)');
    await expect(p.page.getByTestId('media-state')).toHaveText('Media connected', { timeout: 15_000 });
    await expectMediaBothWays(alice.page, bob.page, call);
  }
  await alice.page.waitForTimeout(1500);
  await expectNoMediaErrors(alice, bob);

  // Bob's page goes away and a new one rejoins: a fresh negotiation.
  await bob.page.close();
  await expect(alice.page.getByTestId('waiting-text')).toContainText(`${bob.name} disconnected — waiting`);
  const again = await newTab(bob, '/');
  await again.getByTestId('rejoin').getByRole('button', { name: 'Rejoin call' }).click();
  await expect(again.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  expect(await callIdOf(again)).toBe(call);
  await expectMediaBothWays(alice.page, again, call);
  await alice.page.waitForTimeout(1500);
  await expectNoMediaErrors(alice, bob);
  await closeAll(alice, bob);
});
