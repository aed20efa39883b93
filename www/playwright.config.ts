import { defineConfig } from '@playwright/test';
import { execFileSync } from 'node:child_process';

// The server gets a free loopback port, chosen once by the runner: the workers it starts
// inherit the environment, so every process agrees on it.
process.env.HOLDFAST_E2E_PORT ??= execFileSync(process.execPath, [
  '-e',
  "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})",
]).toString().trim();
const PORT = Number(process.env.HOLDFAST_E2E_PORT);

// Debian's Chromium (never `npx playwright install`: nothing may be downloaded).
export const BASE = `http://127.0.0.1:${PORT}`;

export default defineConfig({
  testDir: './tests',
  fullyParallel: false,
  workers: 1,
  timeout: 60_000,
  expect: { timeout: 10_000 },
  reporter: [['list']],
  outputDir: '../target/playwright-results',
  use: {
    baseURL: BASE,
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--no-first-run', '--disable-quic',
        '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
        '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
      ],
    },
  },
  webServer: {
    // Short windows so expiry scenarios take seconds.
    command: `../target/debug/holdfast-server --dev --test-hooks --listen 127.0.0.1:${PORT} --static-dir . ` +
      '--heartbeat-interval 500ms --heartbeat-timeout 1500ms --resume-window 20s --grace 8s ' +
      '--grace-kinds quick=3s,long=20s --ring-timeout 6s --ring-detach-grace 1500ms',
    url: `${BASE}/healthz`,
    reuseExistingServer: false,
    stdout: 'ignore',
    stderr: 'pipe',
  },
});
