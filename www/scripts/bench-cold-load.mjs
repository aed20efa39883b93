// Cold page load benchmark (not a test): a real holdfast-server serves the package's
// built files (wasm included) and www/bench/cold-load.html; each run is a fresh browser
// context (empty cache), timed from navigation to connect() resolved and to the
// session open (socket open, welcome received). Prints the median of RUNS runs.
//
//   npm run build && cargo build --release --bin holdfast-server
//   node scripts/bench-cold-load.mjs [static dir, default www] [runs, default 20]
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from '@playwright/test';

const www = join(dirname(fileURLToPath(import.meta.url)), '..');
const staticDir = resolve(process.argv[2] ?? www);
const runs = Number(process.argv[3] ?? 20);
const serverBin = process.env.HOLDFAST_SERVER ?? join(www, '..', 'target', 'release', 'holdfast-server');

const freePort = () => new Promise((ok, fail) => {
  const s = createServer();
  s.on('error', fail);
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); });
});

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const server = spawn(serverBin, ['--dev', '--listen', `127.0.0.1:${port}`, '--static-dir', staticDir], { stdio: 'ignore' });
const stopServer = () => { if (server.exitCode === null) server.kill('SIGTERM'); };
process.on('exit', stopServer);
for (let i = 0; ; i++) {
  if (await fetch(`${base}/healthz`).then((r) => r.ok, () => false)) break;
  if (i > 100) throw new Error('server did not start');
  await new Promise((r) => setTimeout(r, 100));
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2; };
const resolved = [], open = [];
try {
  for (let i = 0; i < runs; i++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${base}/bench/cold-load.html`);
    await page.waitForFunction(() => window.sessionOpenMs !== undefined, null, { timeout: 30_000 });
    const t = await page.evaluate(() => [window.connectResolvedMs, window.sessionOpenMs]);
    resolved.push(t[0]);
    open.push(t[1]);
    await context.close();
  }
} finally {
  await browser.close();
  stopServer();
}
const fmt = (xs) => `median ${median(xs).toFixed(1)} ms (min ${Math.min(...xs).toFixed(1)}, max ${Math.max(...xs).toFixed(1)})`;
console.log(`cold load, ${runs} runs, ${staticDir}`);
console.log(`  navigation → connect() resolved: ${fmt(resolved)}`);
console.log(`  navigation → session open:       ${fmt(open)}`);
