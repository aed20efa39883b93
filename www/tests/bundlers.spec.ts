// The packed tarball in the apps users have: fixtures/bundlers/app built by Vite 5–8 and
// webpack 5 (fixtures/bundlers/build.mjs, served by the test server) and run under
// `vite dev` of each Vite major (dependency pre-bundling on), with no holdfast-specific
// configuration: each must load the wasm and connect to the real server.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, test, type Page } from '@playwright/test';
import { BASE } from '../playwright.config';

const fixtureDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'bundlers');
const ws = `${BASE.replace(/^http/, 'ws')}/ws`;
const unique = (name: string) => `${name}-${Math.floor(Math.random() * 1e9)}`;

/** Opens the app and waits for `connected`; the page must log no error on the way. */
async function expectConnects(page: Page, url: string): Promise<string[]> {
  const errors: string[] = [];
  const requests: string[] = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(url);
  await expect(page.locator('#state')).toHaveText('connected', { timeout: 30_000 });
  expect(errors).toEqual([]);
  return requests;
}

for (const name of ['vite5', 'vite6', 'vite7', 'vite8', 'webpack']) {
  test(`${name} build: the app loads the wasm with no configuration and connects`, async ({ page }) => {
    await expectConnects(page, `/fixtures/bundlers/out/${name}/index.html?user=${unique(name)}`);
  });
}

for (const major of [5, 6, 7, 8]) {
  test(`vite ${major} dev: the pre-bundled package finds its wasm and connects`, async ({ page }) => {
    const dev: ChildProcess = spawn('node', [join(fixtureDir, 'dev.mjs'), String(major)], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        createInterface({ input: dev.stdout! }).once('line', resolve);
        dev.once('exit', (code) => reject(new Error(`vite ${major} dev exited (${code})`)));
      });
      const requests = await expectConnects(page, `${url}?user=${unique(`vite${major}-dev`)}&ws=${encodeURIComponent(ws)}`);
      // The case that broke: the package's JS served from Vite's pre-bundle folder.
      expect(requests.some((r) => /\/deps\/holdfast\.js/.test(r))).toBe(true);
    } finally {
      dev.kill('SIGTERM');
    }
  });
}
