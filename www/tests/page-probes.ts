// What the framework and video specs read from a page: console problems and whether a
// remote <video> is really playing.
import { expect, type Page } from '@playwright/test';

/** Uncaught exceptions and console errors or warnings (React's and Vue's included, e.g.
 *  "getSnapshot should be cached" or "onScopeDispose() is called when there is no active
 *  effect scope"). The browser's own lines about refused WebSocket attempts, which come
 *  while a test holds a page offline, are not problems. */
export function watchProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if ((m.type() === 'error' || m.type() === 'warning') && !/WebSocket/.test(m.text())) {
      problems.push(`${m.type()}: ${m.text()}`);
    }
  });
  return problems;
}

/** Video frames the `<video>` matching `selector` has shown (-1: no picture yet). */
export function videoFrames(page: Page, selector: string): Promise<number> {
  return page.evaluate((sel) => {
    const v = document.querySelector<HTMLVideoElement>(sel);
    if (!v || v.videoWidth === 0 || v.paused) return -1;
    return v.getVideoPlaybackQuality().totalVideoFrames;
  }, selector);
}

/** The `<video>` matching `selector` has a picture and new frames keep coming. */
export async function expectVideoPlaying(page: Page, selector: string): Promise<void> {
  await expect.poll(() => videoFrames(page, selector), { timeout: 20_000 }).toBeGreaterThan(0);
  const before = await videoFrames(page, selector);
  await expect.poll(() => videoFrames(page, selector), { timeout: 10_000 }).toBeGreaterThan(before + 5);
}
