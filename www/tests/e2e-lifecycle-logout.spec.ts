// End-to-end (issue 14, item 1): signing out during a call ends the call at both ends
// at once with `hangup`, before the page goes away, even when the server cannot hear
// the page's socket any more; signing in again starts clean.
import { expect, test, type Page } from '@playwright/test';
import { callAndAccept, closeAll, contact, dial, person, type Person } from './e2e-helpers';
import { recordWhatIsShown, settled, signInAgain, toastsSeen } from './e2e-lifecycle-helpers';

/** Alice clicks "Sign out" (`justBefore` runs once the button can be clicked);
 *  resolves with the moment her page logged out. */
async function signOut(alice: Person, justBefore: () => void = () => {}): Promise<number> {
  const loggedOut = new Promise<number>((resolve) => {
    alice.page.on('console', (m) => {
      if (m.text() === 'test: logged out') resolve(Date.now());
    });
  });
  await alice.page.evaluate(() => {
    window.holdfastDemo.getClient()!.on('logged-out', () => console.log('test: logged out'));
  });
  const button = alice.page.getByRole('button', { name: 'Sign out' });
  await button.click({ trial: true });
  justBefore();
  await button.click();
  return loggedOut;
}

/** Bob's page learns at once that Alice hung up: well inside the call's 20 s window,
 *  and without ever showing that she was merely disconnected. */
async function endedByHangupAtOnce(bob: Person, alice: Person, since: number): Promise<void> {
  const ended = bob.page.getByTestId('call-ended');
  await expect(ended).toHaveAttribute('data-reason', 'hangup', { timeout: 4000 });
  expect(Date.now() - since).toBeLessThan(4000);
  await expect(bob.page.getByTestId('ended-text')).toHaveText(`${alice.name} hung up`);
  expect((await toastsSeen(bob.page)).filter((t) => t.includes('disconnected — waiting'))).toEqual([]);
}

/** Alice signs in again on the reloaded page: no rejoin offer, nobody busy, and a new
 *  call to Bob rings (instead of "This call is not on this page"). */
async function startsClean(alice: Person, bob: Person, page: Page): Promise<void> {
  await expect(page.getByTestId('signin')).toBeVisible();
  await signInAgain(alice, page);
  await settled(page);
  await expect(page.getByTestId('rejoin')).toHaveCount(0);
  await expect(page.getByTestId('held-elsewhere')).toBeHidden();
  await expect(contact(page, bob)).toContainText('available');
  await bob.page.evaluate(() => (location.hash = '#/contacts'));
  await expect(contact(bob.page, alice)).toContainText('available');
  expect(await page.evaluate(() => window.holdfastDemo.getClient()!.getSnapshot().calls.length)).toBe(0);

  await dial(page, bob);
  await expect(page.getByTestId('call-view')).toHaveAttribute('data-phase', 'outgoing');
  await expect(page.getByTestId('call-unknown')).toBeHidden();
  const incoming = bob.page.getByTestId('incoming');
  await expect(incoming).toContainText(`${alice.name} is calling`);
  await incoming.getByRole('button', { name: 'Accept' }).click();
  for (const p of [page, bob.page]) {
    await expect(p.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  }
}

test('L1a. signing out during a call: the other side sees "hung up" at once; signing in again starts clean', async ({ browser }) => {
  // `long` calls have a 20 s window: a sign-out that is not delivered shows as a wait.
  const alice = await person(browser, 'Alice', { path: '/?kind=long' });
  const bob = await person(browser, 'Bob', { setup: recordWhatIsShown });
  await callAndAccept(alice, bob);

  await endedByHangupAtOnce(bob, alice, await signOut(alice));
  await startsClean(alice, bob, alice.page);
  await closeAll(alice, bob);
});

test('L1b. signing out while the server no longer hears the socket: a keepalive request still ends the call at once', async ({ browser }) => {
  const alice = await person(browser, 'Alice', {
    path: '/?kind=long',
    // Alice's signaling socket goes through the test: once `deaf` is set, nothing she
    // sends reaches the server (a link that died one way), so her goodbye on the
    // socket is lost and only the page's fallback request can deliver it.
    setup: async (ctx) => {
      await ctx.routeWebSocket(/\/ws$/, (ws) => {
        const server = ws.connectToServer();
        ws.onMessage((m) => {
          if (!(globalThis as { deaf?: boolean }).deaf) server.send(m);
        });
      });
    },
  });
  const bob = await person(browser, 'Bob', { setup: recordWhatIsShown });
  await callAndAccept(alice, bob);

  try {
    const since = await signOut(alice, () => ((globalThis as { deaf?: boolean }).deaf = true));
    await endedByHangupAtOnce(bob, alice, since);
  } finally {
    (globalThis as { deaf?: boolean }).deaf = false;
  }
  await startsClean(alice, bob, alice.page);
  await closeAll(alice, bob);
});
