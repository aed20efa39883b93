// Steps shared by the call-lifecycle end-to-end tests (e2e-lifecycle-*.spec.ts): what a
// person sees over time (every toast and prompt that ever appeared, not only the last
// one), clocks that are off, pages that crash, and a server process of the test's own.
import { expect, test, type BrowserContext, type Page } from '@playwright/test';
import type { Person } from './e2e-helpers';

declare global {
  interface Window {
    /** Every toast text shown on this page, in order (see `recordWhatIsShown`). */
    __toasts: string[];
    /** Every text the rejoin prompt showed, in order. */
    __prompts: string[];
    /** [epoch ms, seconds] of every value the rejoin countdown showed. */
    __countdown: [number, number][];
  }
}

/** From the next page on, this profile's pages remember every toast and every rejoin
 *  prompt they show, so a test can tell what flashed by. */
export async function recordWhatIsShown(ctx: BrowserContext): Promise<void> {
  await ctx.addInitScript(() => {
    window.__toasts = [];
    window.__prompts = [];
    window.__countdown = [];
    const seen = new WeakSet<Node>();
    const look = () => {
      for (const t of document.querySelectorAll('[data-testid=toast]')) {
        if (seen.has(t)) continue;
        seen.add(t);
        window.__toasts.push(t.textContent ?? '');
      }
      for (const p of document.querySelectorAll('[data-testid=rejoin]')) {
        const text = p.textContent ?? '';
        if (window.__prompts[window.__prompts.length - 1] !== text) window.__prompts.push(text);
      }
      const secs = document.querySelector('[data-testid=rejoin-countdown] .secs');
      if (secs) {
        const n = Number(secs.textContent);
        const last = window.__countdown[window.__countdown.length - 1];
        if (!last || last[1] !== n) window.__countdown.push([Date.now(), n]);
      }
    };
    new MutationObserver(look).observe(document, { subtree: true, childList: true, characterData: true });
  });
}

export async function toastsSeen(page: Page): Promise<string[]> {
  return page.evaluate(() => window.__toasts);
}

export async function promptsSeen(page: Page): Promise<string[]> {
  return page.evaluate(() => window.__prompts);
}

export async function countdownSeen(page: Page): Promise<[number, number][]> {
  return page.evaluate(() => window.__countdown);
}

/** From the next page on, this profile's clock reads `offsetMs` ahead of the real one
 *  (`Date.now()`, which the client and the demo both use; timers are untouched), as
 *  after a clock jump or on a machine whose clock is off. */
export async function skewClock(ctx: BrowserContext, offsetMs: number): Promise<void> {
  await ctx.addInitScript((off) => {
    const real = Date.now.bind(Date);
    Date.now = () => real() + off;
  }, offsetMs);
}

/** The page's renderer crashes: no pagehide, no goodbye, nothing written on the way out. */
export async function crash(page: Page): Promise<void> {
  const cdp = await page.context().newCDPSession(page);
  // The crash takes the CDP session with it: its answer never comes.
  void cdp.send('Page.crash').catch(() => {});
  await expect.poll(() => page.evaluate(() => 1).then(() => 'alive', () => 'crashed'), { timeout: 5000 }).toBe('crashed');
  await page.close().catch(() => {});
}

/** The page is connected and has settled (the welcome and its snapshot were handled). */
export async function settled(page: Page): Promise<void> {
  await expect(page.getByTestId('conn-badge')).toHaveText('Connected');
  await expect(page.getByTestId('contacts')).not.toContainText('Connecting…');
  await page.waitForTimeout(1500);
}

/** Signs in on a page showing the sign-in form, as the same person again. */
export async function signInAgain(p: Person, page: Page = p.page): Promise<void> {
  await page.getByPlaceholder(/your name/i).fill(p.name);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByTestId('conn-badge')).toHaveText('Connected');
}

/** The stored rejoin record of `who` for `call` in `page`'s storage (null when none). */
export async function storedRecord(page: Page, call: string, who: Person): Promise<{ deadline: number; token: string } | null> {
  return page.evaluate(([c, u]) => {
    const text = localStorage.getItem(`holdfast:v1:rejoin:${c}:${u}`);
    return text ? JSON.parse(text) : null;
  }, [call, who.id]);
}

// ------------------------------------------------------------ own server

/** A free TCP port on 127.0.0.1 (the kernel's choice). */
async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise<number>((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as import('node:net').AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** A throwaway `redis-server` of the test's own: loopback, a free port, nothing saved. */
export class ThrowawayRedis {
  private constructor(
    private readonly proc: import('node:child_process').ChildProcess,
    readonly port: number,
  ) {}

  static async start(): Promise<ThrowawayRedis> {
    const { spawn } = await import('node:child_process');
    const port = await freePort();
    const proc = spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    ], { stdio: 'ignore' });
    const net = await import('node:net');
    await expect.poll(() => new Promise<boolean>((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => { c.end(); resolve(true); });
      c.on('error', () => resolve(false));
    }), { timeout: 10_000, message: 'redis-server up' }).toBe(true);
    return new ThrowawayRedis(proc, port);
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async stop(): Promise<void> {
    const gone = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGKILL');
    await gone;
  }
}

/** A holdfast-server process of the test's own (the same short windows as
 *  playwright.config.ts; in-memory state unless `store` names a Redis), that the test
 *  can kill or stop and start again on the same port. */
export class OwnServer {
  private proc: import('node:child_process').ChildProcess | null = null;
  private constructor(
    readonly port: number,
    private readonly store: string,
    private readonly extra: string[],
  ) {}

  /** `extra`: more flags (`--cluster` for a node of a cluster on the Redis `store`). */
  static async start(opts: { store?: string; extra?: string[] } = {}): Promise<OwnServer> {
    const server = new OwnServer(await freePort(), opts.store ?? 'memory', opts.extra ?? []);
    await server.spawn();
    return server;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private async spawn(): Promise<void> {
    const { spawn } = await import('node:child_process');
    const path = await import('node:path');
    // www/, where playwright.config.ts is.
    const root = path.dirname(test.info().config.configFile ?? path.resolve('playwright.config.ts'));
    this.proc = spawn(path.join(root, '../target/debug/holdfast-server'), [
      '--dev', '--test-hooks', '--listen', `127.0.0.1:${this.port}`, '--static-dir', root,
      '--heartbeat-interval', '500ms', '--heartbeat-timeout', '1500ms', '--resume-window', '20s',
      '--grace', '8s', '--grace-kinds', 'quick=3s,long=20s', '--ring-timeout', '6s',
      '--ring-detach-grace', '1500ms', '--store', this.store, ...this.extra,
    ], { stdio: 'ignore' });
    await expect.poll(async () => {
      try {
        return (await fetch(`${this.url}/readyz`)).ok; // with Redis: once the state is loaded
      } catch {
        return false;
      }
    }, { timeout: 10_000, message: 'own server up' }).toBe(true);
  }

  /** SIGKILL: the process dies at once, with everything it held in memory. */
  async crash(): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    this.proc = null;
    const gone = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await gone;
  }

  /** SIGTERM: a graceful restart (with a durable store, clients are told to resume at
   *  once and no call ends). Waits for the process to exit. */
  async terminate(): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    this.proc = null;
    const gone = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await gone;
  }

  /** A new process on the same port. */
  async restart(): Promise<void> {
    await this.spawn();
  }

  async stop(): Promise<void> {
    await this.crash();
  }
}

/** A load balancer that knows nothing of sessions: each new TCP connection goes to the
 *  first backend that accepts it, in the order given. */
export class Balancer {
  private constructor(private readonly server: import('node:net').Server, readonly port: number) {}

  static async start(backends: number[]): Promise<Balancer> {
    const net = await import('node:net');
    const server = net.createServer((inbound) => {
      inbound.pause();
      const attempt = (i: number): void => {
        if (i >= backends.length) {
          inbound.destroy();
          return;
        }
        const outbound = net.connect(backends[i], '127.0.0.1');
        outbound.once('error', () => attempt(i + 1));
        outbound.once('connect', () => {
          outbound.removeAllListeners('error');
          const close = () => {
            inbound.destroy();
            outbound.destroy();
          };
          outbound.on('error', close).on('close', close);
          inbound.on('error', close).on('close', close);
          inbound.pipe(outbound);
          outbound.pipe(inbound);
          inbound.resume();
        });
      };
      attempt(0);
    });
    const port = await new Promise<number>((resolve) =>
      server.listen(0, '127.0.0.1', () => resolve((server.address() as import('node:net').AddressInfo).port)),
    );
    return new Balancer(server, port);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async stop(): Promise<void> {
    await new Promise((r) => this.server.close(r));
  }
}
