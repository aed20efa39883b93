// End-to-end: a closed tab is not a hang-up. The other side waits with a countdown; a
// new page of the same person (same browser profile) is offered the same call.
import { expect, test, type Page } from '@playwright/test';
import {
  callAndAccept, callIdOf, closeAll, expectCountingDown, expectMediaBothWays, metric, newTab, person,
} from './e2e-helpers';

/** The page is connected and has settled (the welcome and its snapshot were handled). */
async function settled(page: Page): Promise<void> {
  await expect(page.getByTestId('conn-badge')).toHaveText('Connected');
  await expect(page.getByTestId('contacts')).not.toContainText('Connecting…');
  await page.waitForTimeout(1500);
}

test('4. page closed mid-call: waiting countdown, rejoin prompt, same call, media again', async ({ browser }, testInfo) => {
  // `long` calls have a 20 s window (see playwright.config.ts): room for a slow machine.
  const alice = await person(browser, 'Alice', { path: '/?kind=long' });
  const bob = await person(browser, 'Bob');
  const call = await callAndAccept(alice, bob);
  await expectMediaBothWays(alice.page, bob.page, call);
  const created = await metric(alice.page.request, 'holdfast_calls_created_total');
  const rejoins = await metric(alice.page.request, 'holdfast_rejoins_total');

  await bob.page.close();
  const waiting = alice.page.getByTestId('waiting-text');
  await expect(waiting).toContainText(`${bob.name} disconnected — waiting`);
  await expect(alice.page.getByTestId('toast').filter({ hasText: `${bob.name} disconnected — waiting` })).toBeVisible();
  await expectCountingDown(waiting);
  await expect(alice.page.getByTestId('call-status')).toHaveText(`${bob.name} is reconnecting`);

  // Bob opens the demo again: it offers the call, with a live countdown.
  const again = await newTab(bob, '/');
  const prompt = again.getByTestId('rejoin');
  await expect(prompt).toContainText(`You were in a call with ${alice.name}`);
  await expectCountingDown(prompt.getByTestId('rejoin-countdown'));
  await expect(prompt.getByRole('button', { name: 'Rejoin call' })).toBeVisible();
  await expect(prompt.getByRole('button', { name: 'No thanks' })).toBeVisible();
  await again.screenshot({ path: testInfo.outputPath('rejoin-prompt.png') });

  await prompt.getByRole('button', { name: 'Rejoin call' }).click();
  await expect(prompt).toHaveCount(0);
  await expect(again.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  expect(await callIdOf(again)).toBe(call);
  await expect(again.locator('[data-testid=remote-tile] .label')).toHaveText(alice.name);
  await expect(alice.page.getByTestId('peer-waiting')).toBeHidden();
  await expect(alice.page.getByTestId('toast').filter({ hasText: `${bob.name} is back` })).toBeVisible();
  expect(await callIdOf(alice.page)).toBe(call);

  // A fresh negotiation: media flows both ways again.
  await expectMediaBothWays(alice.page, again, call);
  await expect(again.getByTestId('media-state')).toHaveText('Media connected');
  await expect(alice.page.getByTestId('media-state')).toHaveText('Media connected');
  expect(await metric(alice.page.request, 'holdfast_calls_created_total')).toBe(created);
  expect(await metric(alice.page.request, 'holdfast_rejoins_total')).toBe(rejoins + 1);
  await closeAll(alice, bob);
});

test('5. page closed and the window passes: reconnect-failed, no prompt on a new page', async ({ browser }) => {
  // `quick` calls have a 3 s window.
  const alice = await person(browser, 'Alice', { path: '/?kind=quick' });
  const bob = await person(browser, 'Bob');
  const call = await callAndAccept(alice, bob);
  await expectMediaBothWays(alice.page, bob.page, call);

  await bob.page.close();
  const waiting = alice.page.getByTestId('waiting-text');
  await expect(waiting).toContainText(`${bob.name} disconnected — waiting`);
  await expectCountingDown(waiting);

  const ended = alice.page.getByTestId('call-ended');
  await expect(ended).toBeVisible({ timeout: 10_000 });
  await expect(ended).toHaveAttribute('data-reason', 'reconnect-failed');
  await expect(ended).toContainText(`${bob.name} didn't reconnect in time`);
  await expect(alice.page.getByTestId('ended-reason')).toHaveText('reconnect-failed');
  expect(await callIdOf(alice.page)).toBe(call);

  const again = await newTab(bob, '/');
  await settled(again);
  await expect(again.getByTestId('rejoin')).toHaveCount(0);
  await expect(again.getByTestId('contacts-view')).toBeVisible();
  await closeAll(alice, bob);
});

test('6. the other person hangs up during the window: no prompt on a new page', async ({ browser }) => {
  const alice = await person(browser, 'Alice', { path: '/?kind=long' });
  const bob = await person(browser, 'Bob');
  const call = await callAndAccept(alice, bob);

  await bob.page.close();
  await expect(alice.page.getByTestId('waiting-text')).toContainText(`${bob.name} disconnected — waiting`);
  await alice.page.getByTestId('hangup').click();
  await expect(alice.page.getByTestId('call-ended')).toContainText('You hung up');
  expect(await callIdOf(alice.page)).toBe(call);

  const again = await newTab(bob, '/');
  await settled(again);
  await expect(again.getByTestId('rejoin')).toHaveCount(0);
  await expect(again.getByTestId('call-view')).toHaveCount(0);
  await closeAll(alice, bob);
});

test('8. two tabs of one person: no offer while live; an explicit move takes the call', async ({ browser }) => {
  const alice = await person(browser, 'Alice', { path: '/?kind=long' });
  const bob = await person(browser, 'Bob');
  const call = await callAndAccept(alice, bob);
  await expectMediaBothWays(alice.page, bob.page, call);

  // A second tab of Bob: the call is live in the first, so no rejoin prompt.
  const second = await newTab(bob, '/');
  await settled(second);
  await expect(second.getByTestId('rejoin')).toHaveCount(0);
  const banner = second.getByTestId('held-elsewhere');
  await expect(banner).toContainText(`You are in a call with ${alice.name} in another tab`);
  await expect(bob.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');

  // Bob moves the call to the second tab on purpose.
  await banner.getByRole('button', { name: 'Move call here' }).click();
  await expect(second.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  expect(await callIdOf(second)).toBe(call);
  const moved = bob.page.getByTestId('call-ended');
  await expect(moved).toHaveAttribute('data-reason', 'call-moved');
  await expect(moved).toContainText('This call moved to another tab or device');
  await expect(bob.page.getByTestId('toast').filter({ hasText: 'The call moved to another tab' })).toBeVisible();

  // The call goes on between Alice and Bob's second tab, with fresh media; the first
  // tab does not take it back by itself.
  await expectMediaBothWays(alice.page, second, call);
  await bob.page.waitForTimeout(1500);
  await expect(bob.page.getByTestId('call-ended')).toBeVisible();
  await expect(bob.page.getByTestId('rejoin')).toHaveCount(0);
  expect(await callIdOf(alice.page)).toBe(call);
  await expect(alice.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  await closeAll(alice, bob);
});
