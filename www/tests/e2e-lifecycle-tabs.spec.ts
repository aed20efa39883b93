// End-to-end: two tabs of one person. Issue 14, item 7: they press Rejoin at the same
// instant; one gets the call, the other is told the call continues in another tab and can
// move it here. Issue 15, item 8: a tab sees the calls held in another tab through the
// public API (`snapshot.elsewhere`) and takes one with `moveHere()`.
import { expect, test, type Page } from '@playwright/test';
import { callIdOf, callAndAccept, closeAll, expectMediaBothWays, newTab, person } from './e2e-helpers';
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

/** The page's `snapshot.elsewhere`, as the public API gives it. */
function elsewhereOf(page: Page): Promise<{ call: string; peer: { id: string; name: string }; kind: string | null }[]> {
  return page.evaluate(() => {
    const snap = window.holdfastDemo.getClient()!.getSnapshot();
    return snap.elsewhere.map((e) => ({ call: e.call, peer: { id: e.peer.id, name: e.peer.name }, kind: e.kind }));
  });
}

test('L8. a tab open before the call sees it held in the other tab (snapshot.elsewhere), moves it here with moveHere(), and the first tab then sees it elsewhere', async ({ browser }) => {
  const alice = await person(browser, 'Alice', { path: '/?kind=long' });
  const bob = await person(browser, 'Bob');
  // Bob's second tab is open before the call exists: it learns of the call live.
  const second = await newTab(bob, '/');
  expect(await elsewhereOf(second)).toEqual([]);
  const call = await callAndAccept(alice, bob);

  await expect.poll(() => elsewhereOf(second)).toEqual([{ call, peer: { id: alice.id, name: alice.name }, kind: 'long' }]);
  const banner = second.getByTestId('held-elsewhere');
  await expect(banner).toContainText(`You are in a call with ${alice.name} in another tab`);
  expect(await elsewhereOf(bob.page)).toEqual([]); // the tab holding it does not list it
  await expect(second.getByTestId('rejoin')).toHaveCount(0);

  // moveHere() through the public API: the second tab has the call, the first is told
  // call-moved, and lists the call as held elsewhere now.
  await second.evaluate((id) => window.holdfastDemo.getClient()!.moveHere(id), call);
  await expect(second.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  expect(await callIdOf(second)).toBe(call);
  await expect(bob.page.getByTestId('call-ended')).toHaveAttribute('data-reason', 'call-moved');
  await expect.poll(() => elsewhereOf(second)).toEqual([]);
  await expect.poll(() => elsewhereOf(bob.page)).toEqual([{ call, peer: { id: alice.id, name: alice.name }, kind: 'long' }]);
  await expectMediaBothWays(alice.page, second, call);

  // Closing the tab that holds it lets its lock go: the call is no longer listed.
  await second.close();
  await expect.poll(() => elsewhereOf(bob.page)).toEqual([]);
  await expect(alice.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  expect(await callIdOf(alice.page)).toBe(call);
  await closeAll(alice, bob);
});
