// One client per page, kept on globalThis so a second copy of this module or a hot
// reload finds the same client and socket. Components may call `connect()`, `on()`,
// `subscribe()` and their unsubscribers as often as they like: only `logout()` closes
// the socket.

import init, * as raw from './wasm/holdfast.js';
import { HoldfastClient } from './client.js';
import { HoldfastError, toHoldfastError, wrap } from './errors.js';
import { heldElsewhere, watchHeld } from './locks.js';
import { fetchWasm } from './wasm-source.js';
import type { ConnectOptions, HoldfastEvent } from './types.js';

const KEY = Symbol.for('holdfast.client');
type Global = {
  client: HoldfastClient | null;
  connecting: Promise<HoldfastClient> | null;
  watchers?: Set<() => void>;
};
const g = globalThis as unknown as Record<symbol, Global>;
g[KEY] ??= { client: null, connecting: null };
const state = g[KEY];

function setGlobal(c: HoldfastClient | null): void {
  const changed = state.client !== c;
  state.client = c;
  state.connecting = null;
  if (!changed) return;
  for (const w of [...(state.watchers ?? [])]) {
    try {
      w();
    } catch (e) {
      setTimeout(() => { throw e; });
    }
  }
}

/** Calls `listener` whenever the page's client changes (`connect()` finished,
 *  `logout()`). Returns the unsubscriber. For framework bindings (`holdfast/react`,
 *  `holdfast/vue`) that render before `connect()` resolves. */
export function onClientChange(listener: () => void): () => void {
  const set = (state.watchers ??= new Set());
  set.add(listener);
  return () => {
    set.delete(listener);
  };
}

let wasmReady: Promise<unknown> | null = null;
/** The `wasmUrl` the load in `wasmReady` uses (`undefined`: the default places). */
let wasmReadyFrom: string | undefined;

/** Waits between the attempts to download the wasm (a flaky network is what this
 *  package is for). */
const WASM_RETRY_DELAYS_MS = [250, 1_000];

/** Loads the wasm client once per page. A failed download is retried a few times; if
 *  every attempt fails, the next `connect()` starts over (nothing failed is cached). */
function loadWasm(wasmUrl: string | URL | undefined): Promise<unknown> {
  if (!wasmReady) wasmReadyFrom = wasmUrl === undefined ? undefined : String(wasmUrl);
  wasmReady ??= (async () => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await init({ module_or_path: fetchWasm(wasmUrl) });
      } catch (e) {
        const delay = WASM_RETRY_DELAYS_MS[attempt];
        if (delay === undefined) {
          // `fetchWasm` explains where it looked and the one option that fixes it.
          const why = e instanceof Error ? e.message : String(e);
          throw new HoldfastError('wasm-load-failed', `could not load the Holdfast wasm: ${why}`);
        }
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  })();
  wasmReady.catch(() => {
    wasmReady = null;
  });
  return wasmReady;
}

/** Starts downloading and compiling the wasm client now (streaming), so that a later
 *  `connect()` does not wait for it. Call it as early as the page knows where the wasm
 *  is, e.g. at the top of the app's entry module, with the same `wasmUrl` it will pass
 *  to `connect()` (none when the bundler finds the file itself). Nothing is fetched at
 *  import time without it: a guessed default URL would be a 404 in the console of every
 *  app whose bundler does not copy the file. Failures are reported by `connect()`; a
 *  `connect()` with another `wasmUrl` reuses a preload that worked and retries with its
 *  own URL one that failed. Does nothing during server rendering. */
export function preloadWasm(options: { wasmUrl?: string | URL } = {}): void {
  if (typeof window === 'undefined') return;
  loadWasm(options.wasmUrl).catch(() => {
    /* connect() reports it */
  });
}

/** Loads the wasm for `connect()`: reuses a load on its way, and retries with this
 *  `wasmUrl` when a preload from another URL failed. */
async function wasmFor(wasmUrl: string | URL | undefined): Promise<void> {
  const loading = loadWasm(wasmUrl);
  const from = wasmReadyFrom;
  try {
    await loading;
  } catch (e) {
    const mine = wasmUrl === undefined ? undefined : String(wasmUrl);
    if (from === mine) throw e;
    await loadWasm(wasmUrl);
  }
}

/** Another tab that held `call` is gone: the call may be offered here now. */
function releasedElsewhere(call: string): void {
  if (!state.client) return;
  try {
    raw.setHeldElsewhere(call, false);
  } catch {
    /* logged out meanwhile */
  }
}

/** Connects the page (once). Every later call with the same server and token returns
 *  the same client and socket; another identity needs `logout()` first. */
export function connect(options: ConnectOptions): Promise<HoldfastClient> {
  // Server-side rendering: no page, no socket; say so instead of a raw `fetch failed`.
  if (typeof window === 'undefined') {
    return Promise.reject(new HoldfastError('not-in-browser',
      'connect() runs in the browser only; call it from an effect (useEffect, onMounted), not during server rendering'));
  }
  const url = options.url ?? defaultUrl();
  const existing = state.client;
  if (existing) {
    if (existing.url === url && existing.token === options.token) return Promise.resolve(existing);
    return Promise.reject(new HoldfastError('already-connected',
      'this page is connected with another server or identity; logout() first'));
  }
  if (state.connecting) return state.connecting;
  state.connecting = (async () => {
    await wasmFor(options.wasmUrl);
    const held = await heldElsewhere();
    const client = new HoldfastClient(url, options.token, () => setGlobal(null));
    wrap(() => raw.connect({
      url,
      token: options.token,
      presence: options.presence ?? false,
      callWaiting: options.callWaiting ?? false,
      heldElsewhere: held,
      backoffBaseMs: options.backoffBaseMs,
      backoffMaxMs: options.backoffMaxMs,
      giveUpAfterMs: options.giveUpAfterMs,
      connectTimeoutMs: options.connectTimeoutMs,
    }, (ev: HoldfastEvent) => client.dispatch(ev)));
    for (const call of held) watchHeld(call, () => releasedElsewhere(call));
    setGlobal(client);
    return client;
  })().catch((e: unknown) => {
    setGlobal(null);
    throw toHoldfastError(e);
  });
  return state.connecting;
}

/** The page's client, if `connect()` finished. */
export function getClient(): HoldfastClient | null {
  return state.client;
}

function defaultUrl(): string {
  const loc = globalThis.location;
  if (!loc) throw new HoldfastError('invalid-argument', 'no url given and no page location');
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
}
