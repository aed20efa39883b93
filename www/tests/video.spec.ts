// The README's 25-line video calls (React: fixtures/video-react/VideoCall.tsx, Vue:
// fixtures/video-vue/VideoCall.vue, built by `npm run build`) in Chromium with its fake
// camera and microphone, against the real server: two people call, see each other, mute,
// one reloads, is offered the call back while the other counts down, and rejoins.
import { expect, test, type Browser, type Page } from '@playwright/test';
import { expectVideoPlaying, watchProblems } from './page-probes.js';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const www = join(dirname(fileURLToPath(import.meta.url)), '..');

const fixtures = [
  { name: 'react', path: '/fixtures/video-react/index.html', file: 'fixtures/video-react/VideoCall.tsx', fence: 'tsx' },
  { name: 'vue', path: '/fixtures/video-vue/index.html', file: 'fixtures/video-vue/VideoCall.vue', fence: 'vue' },
];

const unique = (name: string) => `${name}-${Math.floor(Math.random() * 1e9)}`;

async function open(browser: Browser, path: string, user: string): Promise<{ page: Page; problems: string[] }> {
  const page = await (await browser.newContext()).newPage();
  const problems = watchProblems(page);
  await page.goto(`${path}?user=${user}`);
  await expect(page.getByRole('button', { name: 'Call' })).toBeEnabled();
  return { page, problems };
}

const expectRemoteVideoPlaying = (page: Page) => expectVideoPlaying(page, 'video[data-holdfast-video=remote]');

/** Mean brightness (0-255) of the remote video's current frame. */
function remoteBrightness(page: Page): Promise<number> {
  return page.evaluate(() => {
    const v = document.querySelector<HTMLVideoElement>('video[data-holdfast-video=remote]')!;
    const c = document.createElement('canvas');
    c.width = 64;
    c.height = 48;
    const g = c.getContext('2d')!;
    g.drawImage(v, 0, 0, c.width, c.height);
    const px = g.getImageData(0, 0, c.width, c.height).data;
    let sum = 0;
    for (let i = 0; i < px.length; i += 4) sum += (px[i] + px[i + 1] + px[i + 2]) / 3;
    return sum / (px.length / 4);
  });
}

/** Whether this page's camera or microphone track is enabled (what it sends). */
function localEnabled(page: Page, kind: 'audio' | 'video'): Promise<boolean | null> {
  return page.evaluate((k) => {
    const v = document.querySelector<HTMLVideoElement>('video[data-holdfast-video=local]');
    const s = v?.srcObject as MediaStream | null | undefined;
    const t = k === 'audio' ? s?.getAudioTracks()[0] : s?.getVideoTracks()[0];
    return t ? t.enabled : null;
  }, kind);
}

async function secondsIn(page: Page, pattern: RegExp): Promise<number> {
  const text = (await page.getByText(pattern).textContent()) ?? '';
  return Number(pattern.exec(text)?.[1]);
}

for (const fx of fixtures) {
  test.describe(`${fx.name}: the README's video call`, () => {
    test('the README shows exactly the fixture app, in at most 25 lines', () => {
      const code = readFileSync(join(www, fx.file), 'utf8');
      expect(code.trimEnd().split('\n').length).toBeLessThanOrEqual(25);
      const readme = readFileSync(join(www, '..', 'README.md'), 'utf8');
      expect(readme).toContain('```' + fx.fence + '\n' + code + '```');
      if (fx.name === 'react') {
        expect(readFileSync(join(www, 'README.md'), 'utf8')).toContain('```tsx\n' + code + '```');
      }
    });

    test('call, accept, video both ways, mute and camera off, reload, rejoin prompt and countdown, video again', async ({ browser }) => {
      const [ua, ub] = [unique('ann'), unique('ben')];
      const a = await open(browser, fx.path, ua);
      const b = await open(browser, fx.path, ub);

      await a.page.getByPlaceholder('who to call').fill(ub);
      await a.page.getByRole('button', { name: 'Call' }).click();
      await expect(a.page.getByText('Calling')).toBeVisible();
      await b.page.getByRole('button', { name: 'Accept' }).click();
      await expectRemoteVideoPlaying(a.page);
      await expectRemoteVideoPlaying(b.page);
      expect(await localEnabled(a.page, 'audio')).toBe(true);

      // Mute: Ann's microphone track is disabled, and back.
      await a.page.getByRole('button', { name: 'Mute', exact: true }).click();
      await expect.poll(() => localEnabled(a.page, 'audio')).toBe(false);
      await a.page.getByRole('button', { name: 'Unmute' }).click();
      await expect.poll(() => localEnabled(a.page, 'audio')).toBe(true);

      // Camera off: Ben sees black; camera on: the picture again.
      await expect.poll(() => remoteBrightness(b.page)).toBeGreaterThan(30);
      await a.page.getByRole('button', { name: 'Camera off' }).click();
      expect(await localEnabled(a.page, 'video')).toBe(false);
      await expect.poll(() => remoteBrightness(b.page), { timeout: 15_000 }).toBeLessThan(8);
      await a.page.getByRole('button', { name: 'Camera on' }).click();
      await expect.poll(() => remoteBrightness(b.page), { timeout: 15_000 }).toBeGreaterThan(30);

      // Ben reloads: he is offered the call back with a countdown; Ann sees him away,
      // counting down too.
      await b.page.reload();
      const offer = /Rejoin your call with .+\? (\d+) s left/;
      await expect(b.page.getByText(offer)).toBeVisible();
      const waiting = /is reconnecting: (\d+) s left/;
      await expect(a.page.getByText(waiting)).toBeVisible();
      const first = await secondsIn(a.page, waiting);
      await expect.poll(() => secondsIn(a.page, waiting), { timeout: 5_000 }).toBeLessThan(first);
      const offered = await secondsIn(b.page, offer);
      await expect.poll(() => secondsIn(b.page, offer), { timeout: 5_000 }).toBeLessThan(offered);

      // Ben rejoins: the same call, video both ways again.
      await b.page.getByRole('button', { name: 'Rejoin' }).click();
      await expect(a.page.getByText(waiting)).toHaveCount(0);
      await expectRemoteVideoPlaying(b.page);
      await expectRemoteVideoPlaying(a.page);

      // Hanging up closes the media and stops the tracks the hook opened.
      await a.page.evaluate(() => {
        const v = document.querySelector<HTMLVideoElement>('video[data-holdfast-video=local]')!;
        (window as unknown as { sent: MediaStreamTrack[] }).sent = (v.srcObject as MediaStream).getTracks();
      });
      await a.page.getByRole('button', { name: 'Hang up' }).click();
      await expect(a.page.getByRole('button', { name: 'Call' })).toBeVisible();
      await expect(b.page.getByRole('button', { name: 'Call' })).toBeVisible();
      await expect
        .poll(() => a.page.evaluate(() => (window as unknown as { sent: MediaStreamTrack[] }).sent.map((t) => t.readyState)))
        .toEqual(['ended', 'ended']);
      expect(a.problems).toEqual([]);
      expect(b.problems).toEqual([]);
      await a.page.context().close();
      await b.page.context().close();
    });
  });
}
