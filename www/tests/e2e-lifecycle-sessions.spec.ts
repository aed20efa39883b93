// End-to-end (issue 14, item 8): a page that goes away (reload, closed tab) releases
// its session at once instead of leaving a ghost for the whole resume window; a
// reload's new session supersedes the tab's old one. Twenty reloads in a row never
// meet the per-identity session limit, and the others see a closed tab go offline.
import { expect, test } from '@playwright/test';
import { callAndAccept, callIdOf, closeAll, contact, metric, person } from './e2e-helpers';

test('8. reloads and a closed tab leave no ghost sessions', async ({ browser, request }) => {
  const alice = await person(browser, 'Alice', { path: '/?kind=long' });
  const bob = await person(browser, 'Bob');
  const call = await callAndAccept(alice, bob);

  // (a) Bob reloads and rejoins: the old page's session is gone at once (sessions of
  // earlier scenarios only ever expire, so the count can only fall meanwhile).
  const detached = await metric(request, 'holdfast_sessions_detached');
  const sessions = await metric(request, 'holdfast_sessions');
  await bob.page.reload();
  await bob.page.getByTestId('rejoin').getByRole('button', { name: 'Rejoin call' }).click();
  await expect(bob.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  expect(await callIdOf(bob.page)).toBe(call);
  await expect.poll(() => metric(request, 'holdfast_sessions_detached'), { timeout: 3000 }).toBeLessThanOrEqual(detached);
  await expect.poll(() => metric(request, 'holdfast_sessions'), { timeout: 3000 }).toBeLessThanOrEqual(sessions);

  // (b) The call ends; twenty reloads in a row: each page signs in (never
  // `too-many-sessions`), and Bob holds one session at the end, not the limit's eight.
  await bob.page.getByTestId('hangup').click();
  await expect(alice.page.getByTestId('call-ended')).toBeVisible();
  const refused = await metric(request, 'holdfast_errors_total{code="too-many-sessions"}').catch(() => 0);
  for (let i = 0; i < 20; i++) {
    await bob.page.reload();
    await expect(bob.page.getByTestId('conn-badge')).toHaveText('Connected');
  }
  await expect.poll(() => metric(request, 'holdfast_sessions'), { timeout: 3000 }).toBeLessThanOrEqual(sessions);
  expect(await metric(request, 'holdfast_errors_total{code="too-many-sessions"}').catch(() => 0)).toBe(refused);

  // (c) Bob closes his tab: Alice's contacts show him gone within seconds, not after
  // the resume window (20 s here).
  await alice.page.locator('#nav').getByRole('link', { name: 'Contacts' }).click();
  await expect(contact(alice.page, bob)).toHaveCount(1);
  await bob.page.close();
  await expect(contact(alice.page, bob)).toHaveCount(0, { timeout: 5000 });
  await closeAll(alice, bob);
});
