// End-to-end (issue 9): with the state in Redis, a server restart does not end a call.
// Two browsers in a call with media; the server is stopped (SIGTERM, a deploy) and then
// killed (SIGKILL, a crash), each time followed by a new process on the same port. Both
// pages resume the same session and call, with no rejoin prompt and no ended call, and
// the media goes on.
import { expect, test } from '@playwright/test';
import { callAndAccept, callIdOf, closeAll, expectMediaBothWays, person, type Person } from './e2e-helpers';
import { OwnServer, recordWhatIsShown, ThrowawayRedis, toastsSeen } from './e2e-lifecycle-helpers';

const resumedToasts = async (p: Person) =>
  (await toastsSeen(p.page)).filter((t) => t.includes('Reconnected — session resumed')).length;

async function expectSameCallResumed(p: Person, call: string, resumedBefore: number): Promise<void> {
  await expect(p.page.getByTestId('conn-badge')).toHaveText('Connected', { timeout: 15_000 });
  await expect.poll(() => resumedToasts(p)).toBe(resumedBefore + 1);
  expect((await toastsSeen(p.page)).filter((t) => /new session|server lost|cancel/i.test(t))).toEqual([]);
  await expect(p.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  expect(await callIdOf(p.page)).toBe(call);
  await expect(p.page.getByTestId('rejoin')).toHaveCount(0);
  await expect(p.page.getByTestId('call-ended')).toBeHidden();
  await expect(p.page.getByTestId('incoming')).toHaveCount(0);
  const calls = await p.page.evaluate(() => window.holdfastDemo.getClient()!.getSnapshot().calls.map((c) => c.id));
  expect(calls).toEqual([call]);
  await expect(p.page.getByTestId('media-state')).toHaveText('Media connected');
}

test('R1. the server restarts on Redis (SIGTERM, then SIGKILL): both pages resume the same call, no prompt, media goes on', async ({ browser }) => {
  const redis = await ThrowawayRedis.start();
  const server = await OwnServer.start({ store: redis.url });
  try {
    const alice = await person(browser, 'Alice', { baseURL: server.url, setup: recordWhatIsShown });
    const bob = await person(browser, 'Bob', { baseURL: server.url, setup: recordWhatIsShown });
    const call = await callAndAccept(alice, bob);
    await expectMediaBothWays(alice.page, bob.page, call);

    // A deploy: SIGTERM tells every page to come back at once; a new process loads
    // the sessions and calls from Redis.
    await server.terminate();
    await server.restart();
    for (const p of [alice, bob]) await expectSameCallResumed(p, call, 0);
    await expectMediaBothWays(alice.page, bob.page, call);

    // A crash: SIGKILL, nothing flushed at exit; what was acknowledged is in Redis.
    await server.crash();
    for (const p of [alice, bob]) await expect(p.page.getByTestId('conn-badge')).toHaveText('Reconnecting…');
    await expectMediaBothWays(alice.page, bob.page, call); // peer-to-peer media does not need us
    await server.restart();
    for (const p of [alice, bob]) await expectSameCallResumed(p, call, 1);
    await expectMediaBothWays(alice.page, bob.page, call);

    // Still one live call that both can end: Alice hangs up, Bob is told at once.
    await alice.page.getByTestId('hangup').click();
    await expect(bob.page.getByTestId('call-ended')).toHaveAttribute('data-reason', 'hangup');
    await closeAll(alice, bob);
  } finally {
    await server.stop();
    await redis.stop();
  }
});
