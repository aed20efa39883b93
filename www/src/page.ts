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

/** Waits between the attempts to download the wasm (a flaky network is what this
 *  package is for). */
const WASM_RETRY_DELAYS_MS = [250, 1_000];

/** Loads the wasm client once per page. A failed download is retried a few times; if
 *  every attempt fails, the next `connect()` starts over (nothing failed is cached). */
function loadWasm(wasmUrl: string | URL | undefined): Promise<unknown> {
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
    await loadWasm(options.wasmUrl);
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
