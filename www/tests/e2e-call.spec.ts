// End-to-end: two people (two browser contexts with fake camera and microphone) on the
// demo page against the real server with short windows (see playwright.config.ts).
import { expect, test } from '@playwright/test';
import {
  callAndAccept, callIdOf, closeAll, contact, expectMediaBothWays, expectMediaFlowing, metric, person,
} from './e2e-helpers';

test('1. call, accept, media flows both ways', async ({ browser }, testInfo) => {
  const alice = await person(browser, 'Alice');
  const bob = await person(browser, 'Bob');
  const created = await metric(alice.page.request, 'holdfast_calls_created_total');

  const call = await callAndAccept(alice, bob);
  await expectMediaBothWays(alice.page, bob.page, call);
  for (const [p, other] of [[alice, bob], [bob, alice]] as const) {
    await expect(p.page.getByTestId('media-state')).toHaveText('Media connected');
    await expect(p.page.locator('[data-testid=remote-tile] .label')).toHaveText(other.name);
    await expect(p.page.getByTestId('call-status')).toHaveText('Connected');
  }
  expect(await metric(alice.page.request, 'holdfast_calls_created_total')).toBe(created + 1);
  await alice.page.screenshot({ path: testInfo.outputPath('in-call.png') });

  // Hanging up ends the call at both ends.
  await alice.page.getByTestId('hangup').click();
  await expect(alice.page.getByTestId('call-ended')).toContainText('You hung up');
  await expect(bob.page.getByTestId('call-ended')).toContainText(`${alice.name} hung up`);
  await expect(bob.page.getByTestId('ended-reason')).toHaveText('hangup');
  await closeAll(alice, bob);
});

test('2. route changes during a call keep one connection, the call and its media', async ({ browser }) => {
  const alice = await person(browser, 'Alice');
  const bob = await person(browser, 'Bob');
  const call = await callAndAccept(alice, bob);
  await expectMediaBothWays(alice.page, bob.page, call);
  const opened = await metric(alice.page.request, 'holdfast_connections_opened_total');
  const sessions = await metric(alice.page.request, 'holdfast_sessions_created_total');

  for (let i = 0; i < 3; i++) {
    await alice.page.getByRole('link', { name: 'Contacts' }).click();
    await expect(alice.page.getByTestId('contacts-view')).toBeVisible();
    await expect(alice.page.getByRole('link', { name: `In call · ${bob.name}` })).toBeVisible();
    // Away from the call page, media keeps flowing.
    await expectMediaFlowing(bob.page, call, 10_000);
    await alice.page.getByRole('link', { name: `In call · ${bob.name}` }).click();
    await expect(alice.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
    await expect(alice.page).toHaveURL(new RegExp(`#/call/${call}$`));
  }
  await expectMediaBothWays(alice.page, bob.page, call);
  // Browser back and forward are route changes too.
  await alice.page.goBack();
  await expect(alice.page.getByTestId('contacts-view')).toBeVisible();
  await alice.page.goForward();
  await expect(alice.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  await expect(alice.page.getByTestId('media-state')).toHaveText('Media connected');

  expect(await metric(alice.page.request, 'holdfast_connections_opened_total')).toBe(opened);
  expect(await metric(alice.page.request, 'holdfast_sessions_created_total')).toBe(sessions);
  await expect(alice.page.getByTestId('conn-badge')).toHaveText('Connected');
  await closeAll(alice, bob);
});

test('7. calling twice quickly, and calling each other at once: exactly one call', async ({ browser }) => {
  // (a) A double click on "Call" rings once.
  const alice = await person(browser, 'Alice');
  const bob = await person(browser, 'Bob');
  const created = await metric(alice.page.request, 'holdfast_calls_created_total');
  await contact(alice.page, bob).getByRole('button', { name: 'Call' }).dblclick();
  await expect(alice.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'outgoing');
  await expect(bob.page.getByTestId('incoming')).toHaveCount(1);
  // Calling again while it rings opens the same call.
  await alice.page.getByRole('link', { name: 'Contacts' }).click();
  await contact(alice.page, bob).getByRole('button').click();
  await expect(alice.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'outgoing');
  await bob.page.getByTestId('incoming').getByRole('button', { name: 'Accept' }).click();
  await expect(alice.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
  const call = await callIdOf(alice.page);
  expect(await callIdOf(bob.page)).toBe(call);
  expect(await metric(alice.page.request, 'holdfast_calls_created_total')).toBe(created + 1);
  for (const p of [alice, bob]) {
    expect(await p.page.evaluate(() => window.holdfastDemo.getClient()!.getSnapshot().calls.length)).toBe(1);
  }

  // (b) Carol and Dave call each other at the same moment: one call, active at both.
  const carol = await person(browser, 'Carol');
  const dave = await person(browser, 'Dave');
  const before = await metric(carol.page.request, 'holdfast_calls_created_total');
  const glare = await metric(carol.page.request, 'holdfast_glare_merges_total');
  // Both click "Call" at the same instant (a shared wall-clock time, both pages on
  // this machine), before either could see the other's call ringing.
  const at = Date.now() + 500;
  // The button is looked up when the timer fires: the contact list re-renders on every
  // presence change, and a button found earlier may be detached by then (a click on it
  // does nothing, and only one side would call).
  await Promise.all([[carol, dave], [dave, carol]].map(([p, other]) => p.page.evaluate(([id, t]) => {
    setTimeout(() => {
      document.querySelector<HTMLButtonElement>(`[data-testid=contact][data-user="${id}"] button`)!.click();
    }, Number(t) - Date.now());
  }, [other.id, at])));
  for (const p of [carol, dave]) {
    await expect(p.page.getByTestId('call-view')).toHaveAttribute('data-phase', 'active');
    await expect(p.page.getByTestId('incoming')).toHaveCount(0);
  }
  const merged = await callIdOf(carol.page);
  expect(await callIdOf(dave.page)).toBe(merged);
  expect(await metric(carol.page.request, 'holdfast_calls_created_total')).toBe(before + 1);
  // How the crossing was resolved (a server-side merge of crossed invites, or this page
  // answering the incoming call instead of placing a second one) is noted in the report.
  test.info().annotations.push({
    type: 'glare',
    description: `server merges: ${(await metric(carol.page.request, 'holdfast_glare_merges_total')) - glare}`,
  });
  await expectMediaBothWays(carol.page, dave.page, merged);
  await closeAll(alice, bob, carol, dave);
});
