// The wasm download is part of surviving a bad network: a failed request is retried,
// and when every attempt of one `connect()` fails, the next `connect()` tries again.
import { expect, test } from '@playwright/test';

declare global {
  interface Window {
    holdfast: typeof import('../src/index');
    ready: boolean;
  }
}

const unique = (name: string) => `${name}-${Math.floor(Math.random() * 1e9)}`;

test('one failed wasm download is retried and connect() works', async ({ page }) => {
  let requests = 0;
  await page.route('**/holdfast_bg.wasm', (route) => {
    requests += 1;
    return requests === 1 ? route.abort('connectionreset') : route.continue();
  });
  await page.goto('/tests/pages/facade.html');
  await page.waitForFunction(() => window.ready);
  const state = await page.evaluate(async (token) => {
    const client = await window.holdfast.connect({ token });
    return client.getSnapshot().state;
  }, unique('retry'));
  expect(state).not.toBe('idle');
  expect(requests).toBe(2);
});

test('when every attempt fails, connect() rejects with wasm-load-failed and the next one loads', async ({ page }) => {
  let failing = true;
  let requests = 0;
  await page.route('**/holdfast_bg.wasm', (route) => {
    requests += 1;
    return failing ? route.abort('internetdisconnected') : route.continue();
  });
  await page.goto('/tests/pages/facade.html');
  await page.waitForFunction(() => window.ready);
  const token = unique('later');
  const first = await page.evaluate(async (t) => {
    try {
      await window.holdfast.connect({ token: t });
      return null;
    } catch (e) {
      return { code: (e as { code: string }).code, real: e instanceof window.holdfast.HoldfastError };
    }
  }, token);
  expect(first).toEqual({ code: 'wasm-load-failed', real: true });
  const attempts = requests;
  expect(attempts).toBeGreaterThan(1);
  failing = false;
  await page.evaluate(async (t) => {
    const client = await window.holdfast.connect({ token: t });
    await new Promise<void>((resolve) => {
      if (client.getSnapshot().state === 'connected') return resolve();
      client.on('connected', () => resolve());
    });
  }, token);
  expect(requests).toBe(attempts + 1);
});
