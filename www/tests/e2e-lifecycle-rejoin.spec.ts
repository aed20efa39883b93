// End-to-end (issue 14, items 2, 3, 4 and 7): the rejoin prompt after a closed or
// crashed tab is offered only for a call the server confirmed, with the server's
// countdown, whatever the page's clock says; two tabs racing for it both end well.
import { expect, test, type Page } from '@playwright/test';
import {
  callAndAccept, callIdOf, closeAll, expectCountingDown, newTab, person, secondsIn, type Person,
} from './e2e-helpers';
import {
  countdownSeen, crash, promptsSeen, recordWhatIsShown, settled, skewClock, storedRecord, toastsSeen,
} from './e2e-lifecycle-helpers';

const TEN_MINUTES = 10 * 60_000;

/** Bob's new page offers the call with Alice, counting down from at most the call's
 *  20 s window, and rejoining puts both back into the same call. */
async function offeredAndRejoined(page: Page, alice: Person, call: string): Promise<void> {
  const prompt = page.getByTestId('rejoin');
  await expect(prompt).toContainText(`You were in a call with ${alice.name}`);
  const first = await expectCountingDown(prompt.getByTestId('rejoin-countdown'));
  expect(first).toBeLessThanOrEqual(20);
  await prompt.getByRole('button', { name: 'Rejoin call' }).click();
  await expect(page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  expect(await callIdOf(page)).toBe(call);
  await expect(alice.page.getByTestId('peer-waiting')).toBeHidden();
  expect(await callIdOf(alice.page)).toBe(call);
}

test('L2a. the clock jumps 10 minutes ahead while the tab is closed: the new page still offers the rejoin', async ({ browser }) => {
  const alice = await person(browser, 'Alice', { path: '/?kind=long' });
  const bob = await person(browser, 'Bob');
  const call = await callAndAccept(alice, bob);

  await bob.page.close();
  await expect(alice.page.getByTestId('waiting-text')).toContainText(`${bob.name} disconnected — waiting`);
  await skewClock(bob.ctx, TEN_MINUTES);
  const again = await newTab(bob, '/');
  expect(await again.evaluate(() => Date.now() - performance.timeOrigin - performance.now())).toBeGreaterThan(TEN_MINUTES - 5000);
  await offeredAndRejoined(again, alice, call);
  await closeAll(alice, bob);
});

test('L2b. a browser whose clock was always 10 minutes ahead: the prompt counts the server\'s window', async ({ browser }) => {
  const alice = await person(browser, 'Alice', { path: '/?kind=long' });
  const bob = await person(browser, 'Bob', { setup: (ctx) => skewClock(ctx, TEN_MINUTES) });
  const call = await callAndAccept(alice, bob);

  await bob.page.close();
  await expect(alice.page.getByTestId('waiting-text')).toContainText(`${bob.name} disconnected — waiting`);
  const again = await newTab(bob, '/');
  await offeredAndRejoined(again, alice, call);
  await closeAll(alice, bob);
});

test('L3a. a call that ended while the tab was closed: no prompt flashes, one notice names the person and the reason', async ({ browser }) => {
  const alice = await person(browser, 'Alice', { path: '/?kind=long' });
  const bob = await person(browser, 'Bob', { setup: recordWhatIsShown });
  await callAndAccept(alice, bob);

  await bob.page.close();
  await expect(alice.page.getByTestId('waiting-text')).toContainText(`${bob.name} disconnected — waiting`);
  await alice.page.getByTestId('hangup').click();
  await expect(alice.page.getByTestId('call-ended')).toContainText('You hung up');

  const again = await newTab(bob, '/');
  await settled(again);
  expect(await promptsSeen(again)).toEqual([]);
  const toasts = await toastsSeen(again);
  expect(toasts.filter((t) => t.includes('The other person'))).toEqual([]);
  const aboutTheCall = toasts.filter((t) => t.includes(alice.name) || /call/i.test(t));
  expect(aboutTheCall).toHaveLength(1);
  expect(aboutTheCall[0]).toContain(`${alice.name} hung up`);
  await closeAll(alice, bob);
});

test('L3b. a record of a call the server does not know: no prompt flashes, no nameless notice', async ({ browser }) => {
  const alice = await person(browser, 'Alice');
  const bob = await person(browser, 'Bob', { setup: recordWhatIsShown });
  // A record as a page leaves it, for a call this server never had (another server's,
  // or one from before a restart), still inside its window by the page's clock.
  const fake = 'c0ffee'.repeat(4);
  await bob.page.evaluate(([call, me, peer, name]) => {
    localStorage.setItem(`holdfast:v1:rejoin:${call}:${me}`, JSON.stringify({
      v: 1, call, user: me, token: 'ab'.repeat(32), peer: { id: peer, name }, kind: null,
      grace_ms: 20000, deadline: Date.now() + 15000,
    }));
  }, [fake, bob.id, alice.id, alice.name]);

  const again = await newTab(bob, '/');
  await settled(again);
  expect(await promptsSeen(again)).toEqual([]);
  expect((await toastsSeen(again)).filter((t) => t.includes('The other person'))).toEqual([]);
  expect(await again.evaluate((k) => localStorage.getItem(k), `holdfast:v1:rejoin:${fake}:${bob.id}`)).toBeNull();
  await closeAll(alice, bob);
});

test('L4. after a crash the rejoin countdown starts from the server\'s deadline and never goes up', async ({ browser }) => {
  const alice = await person(browser, 'Alice', { path: '/?kind=long' });
  const bob = await person(browser, 'Bob', { setup: recordWhatIsShown });
  const call = await callAndAccept(alice, bob);

  // The page rewrites its record's deadline every few seconds; crash it just before the
  // next rewrite, so the stored estimate is as old as it gets.
  const first = (await storedRecord(bob.page, call, bob))!.deadline;
  await expect.poll(async () => (await storedRecord(bob.page, call, bob))!.deadline, { timeout: 10_000 }).not.toBe(first);
  await bob.page.waitForTimeout(4000);
  await crash(bob.page);
  const waiting = alice.page.getByTestId('peer-waiting');
  await expect(waiting).toHaveAttribute('data-deadline', /\d+/);
  const serverDeadline = Number(await waiting.getAttribute('data-deadline'));

  const again = await newTab(bob, '/');
  const prompt = again.getByTestId('rejoin');
  await expect(prompt).toContainText(`You were in a call with ${alice.name}`);
  await again.waitForTimeout(3000);
  const shown = await countdownSeen(again);
  expect(shown.length).toBeGreaterThan(1);
  // The first figure is the server's (Alice's waiting countdown runs to the same
  // instant), not the crashed page's estimate...
  const [t0, s0] = shown[0];
  expect(Math.abs(s0 - Math.ceil((serverDeadline - t0) / 1000))).toBeLessThanOrEqual(1);
  // ...and the countdown only ever goes down.
  for (let i = 1; i < shown.length; i++) expect(shown[i][1], JSON.stringify(shown)).toBeLessThanOrEqual(shown[i - 1][1]);
  expect(Math.abs((await secondsIn(prompt.getByTestId('rejoin-countdown'))) - (await secondsIn(alice.page.getByTestId('waiting-text'))))).toBeLessThanOrEqual(1);
  await closeAll(alice, bob);
});
