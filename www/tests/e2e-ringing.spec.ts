// End-to-end: ringing calls never get stuck (see playwright.config.ts: ring timeout 6 s,
// a vanished caller's call is withdrawn after 1.5 s).
import { expect, test } from '@playwright/test';
import { closeAll, dial, person } from './e2e-helpers';

test('10a. the caller\'s page closes while ringing: the incoming call is withdrawn', async ({ browser }) => {
  const alice = await person(browser, 'Alice');
  const bob = await person(browser, 'Bob');
  await dial(alice.page, bob);
  const incoming = bob.page.getByTestId('incoming');
  await expect(incoming).toContainText(`${alice.name} is calling`);
  await expect(incoming).toContainText(/rings for \d+ s/);

  await alice.page.close();
  await expect(incoming).toHaveCount(0, { timeout: 5000 });
  await expect(bob.page.getByTestId('toast').filter({ hasText: `Missed call from ${alice.name} (cancelled)` })).toBeVisible();
  expect(await bob.page.evaluate(() => window.holdfastDemo.getClient()!.getSnapshot().calls.length)).toBe(0);
  await closeAll(alice, bob);
});

test('10b. nobody answers: the ring timeout ends the call with no-answer on both sides', async ({ browser }) => {
  const alice = await person(browser, 'Alice');
  const bob = await person(browser, 'Bob');
  await dial(alice.page, bob);
  await expect(alice.page.getByTestId('call-ringing')).toContainText(`Calling ${bob.name}…`);
  await expect(bob.page.getByTestId('incoming')).toBeVisible();

  const ended = alice.page.getByTestId('call-ended');
  await expect(ended).toHaveAttribute('data-reason', 'no-answer', { timeout: 10_000 });
  await expect(ended).toContainText('No answer');
  await expect(bob.page.getByTestId('incoming')).toHaveCount(0);
  await expect(bob.page.getByTestId('toast').filter({ hasText: `Missed call from ${alice.name} (no-answer)` })).toBeVisible();
  await closeAll(alice, bob);
});
