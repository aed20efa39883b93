// End-to-end (issue 10): two server processes on one Redis serve as one. Two browsers
// in a call, each page on a different process (each through a balancer that prefers
// its own process); the process of one is killed. That page reconnects through its
// balancer to the other process and resumes the same session and call, with no rejoin
// prompt, and the media goes on.
import { expect, test } from '@playwright/test';
import { callAndAccept, callIdOf, closeAll, expectMediaBothWays, person } from './e2e-helpers';
import { Balancer, OwnServer, recordWhatIsShown, ThrowawayRedis, toastsSeen } from './e2e-lifecycle-helpers';

/** The sockets a process holds (its `holdfast_connections` gauge). */
async function connectionsOn(server: OwnServer): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('holdfast_connections '));
  return Number(line?.split(' ')[1] ?? NaN);
}

test('C1. a call across two processes: the process of one page is killed, the page resumes on the other, media goes on', async ({ browser }) => {
  const redis = await ThrowawayRedis.start();
  const cluster = ['--cluster', '--lease-ttl', '1s'];
  const a = await OwnServer.start({ store: redis.url, extra: cluster });
  const b = await OwnServer.start({ store: redis.url, extra: cluster });
  const toA = await Balancer.start([a.port, b.port]);
  const toB = await Balancer.start([b.port, a.port]);
  try {
    const alice = await person(browser, 'Alice', { baseURL: toA.url, setup: recordWhatIsShown });
    const bob = await person(browser, 'Bob', { baseURL: toB.url, setup: recordWhatIsShown });
    await expect.poll(() => connectionsOn(a)).toBe(1);
    await expect.poll(() => connectionsOn(b)).toBe(1);
    const call = await callAndAccept(alice, bob);
    await expectMediaBothWays(alice.page, bob.page, call);

    // Alice's process dies; her balancer sends the new socket to Bob's.
    await a.crash();
    await expect(alice.page.getByTestId('conn-badge')).toHaveText('Connected', { timeout: 15_000 });
    await expect
      .poll(async () => (await toastsSeen(alice.page)).filter((t) => t.includes('Reconnected — session resumed')).length)
      .toBe(1);
    expect((await toastsSeen(alice.page)).filter((t) => /new session|server lost|cancel/i.test(t))).toEqual([]);
    await expect.poll(() => connectionsOn(b)).toBe(2);
    for (const p of [alice, bob]) {
      await expect(p.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
      expect(await callIdOf(p.page)).toBe(call);
      await expect(p.page.getByTestId('rejoin')).toHaveCount(0);
      await expect(p.page.getByTestId('call-ended')).toBeHidden();
    }
    await expect(alice.page.getByTestId('media-state')).toHaveText('Media connected');
    await expectMediaBothWays(alice.page, bob.page, call);

    // Still one live call, on one process now: Bob hangs up, Alice is told at once.
    await bob.page.getByTestId('hangup').click();
    await expect(alice.page.getByTestId('call-ended')).toHaveAttribute('data-reason', 'hangup');
    await closeAll(alice, bob);
  } finally {
    await toA.stop();
    await toB.stop();
    await a.stop();
    await b.stop();
    await redis.stop();
  }
});
