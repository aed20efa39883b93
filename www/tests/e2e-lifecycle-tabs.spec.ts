// End-to-end (issue 14, item 7): two tabs of one person press Rejoin at the same
// instant. One gets the call; the other is told the call continues in another tab and
// can move it here.
import { expect, test, type Page } from '@playwright/test';
import { callIdOf, callAndAccept, closeAll, newTab, person } from './e2e-helpers';
import { crash } from './e2e-lifecycle-helpers';

test('L7. two tabs press Rejoin at the same instant: the other tab is told the call continues here and can move it', async ({ browser }) => {
  const alice = await person(browser, 'Alice', { path: '/?kind=long' });
  const bob = await person(browser, 'Bob');
  const call = await callAndAccept(alice, bob);

  await crash(bob.page);
  await expect(alice.page.getByTestId('waiting-text')).toContainText(`${bob.name} disconnected — waiting`);
  const tabs = [await newTab(bob, '/'), await newTab(bob, '/')];
  for (const t of tabs) await expect(t.getByTestId('rejoin')).toContainText(`You were in a call with ${alice.name}`);
  await Promise.all(tabs.map((t) => t.getByTestId('rejoin').getByRole('button', { name: 'Rejoin call' }).click()));

  // One tab has the call...
  const activeIn = (t: Page) => t.locator('[data-testid=call-view][data-phase=active]').count();
  await expect.poll(async () => (await activeIn(tabs[0])) + (await activeIn(tabs[1]))).toBe(1);
  const [winner, loser] = (await activeIn(tabs[0])) === 1 ? tabs : [tabs[1], tabs[0]];
  expect(await callIdOf(winner)).toBe(call);

  // ...and the other says so, with a way to move it here.
  const prompt = loser.getByTestId('rejoin');
  await expect(prompt).toContainText(`Your call with ${alice.name} continues in another tab`);
  await loser.waitForTimeout(1000);
  await expect(prompt).toBeVisible();
  await prompt.getByRole('button', { name: 'Move call here' }).click();
  await expect(loser.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  expect(await callIdOf(loser)).toBe(call);
  await expect(winner.getByTestId('call-ended')).toHaveAttribute('data-reason', 'call-moved');
  await expect(alice.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  expect(await callIdOf(alice.page)).toBe(call);
  await closeAll(alice, bob);
});
