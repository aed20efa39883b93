// The `holdfast` npm package: a hand-written facade over the wasm client.
//
// One client per page (kept on globalThis, so a second copy of this module or a hot
// reload finds the same client and socket). Components may call `connect()`,
// `on()`, `subscribe()` and their unsubscribers as often as they like: only
// `logout()` closes the socket.

import init, * as raw from './wasm/holdfast.js';

// ------------------------------------------------------------------ types

export interface Peer {
  id: string;
  name: string;
}

export type ConnectionState =
  | 'idle'
  | 'connecting'
  | 'connected'
  | 'reconnecting'
  | 'offline'
  | 'gave-up'
  | 'auth-failed'
  | 'logged-out';

export type EndReason =
  | 'hangup'
  | 'declined'
  | 'cancelled'
  | 'no-answer'
  | 'busy'
  | 'reconnect-failed'
  | 'server-shutdown'
  /** Client-side: the server no longer knows the call (it restarted without a durable
   *  store); neither person ended it. */
  | 'server-lost';

export type PresenceStatus = 'available' | 'busy' | 'offline';

export interface PresenceEntry {
  user: Peer;
  status: PresenceStatus;
}

/** A call in this page's active-call map. Times are epoch milliseconds. */
export interface Call {
  id: string;
  /** `outgoing`: ringing at the peer; `incoming`: ringing here; `active`: connected. */
  phase: 'outgoing' | 'incoming' | 'active';
  peer: Peer;
  kind: string | null;
  metadata: unknown;
  /** How long either side may be away before the call ends `reconnect-failed`. */
  graceMs: number;
  peerLink: 'connected' | 'reconnecting' | 'pending';
  /** When the peer's grace window closes, while `peerLink` is `reconnecting`. */
  peerDeadline: number | null;
  /** When a ringing call ends `no-answer`. */
  ringDeadline: number | null;
}

/** A call this page may rejoin (after a reload, crash or closed tab). */
export interface RejoinOffer {
  call: string;
  peer: Peer;
  kind: string | null;
  deadline: number;
  remainingMs: number;
}

export type ErrorCode =
  | 'bad-frame' | 'frame-too-large' | 'unknown-message' | 'unsupported-version'
  | 'not-authenticated' | 'already-authenticated' | 'auth-failed' | 'token-expired'
  | 'too-many-sessions' | 'rate-limited' | 'bad-sequence' | 'self-call' | 'peer-offline'
  | 'unknown-call' | 'not-participant' | 'invalid-state' | 'rejoin-denied' | 'held-elsewhere'
  | 'invalid-argument' | 'superseded' | 'server-shutdown' | 'hello-timeout'
  | 'session-lost';

/** Every event, discriminated by `type`. */
export type HoldfastEvent =
  | { type: 'connecting'; attempt: number }
  | { type: 'reconnecting'; attempt: number }
  | { type: 'connected'; session: string; user: Peer }
  | { type: 'resumed'; recovered: boolean }
  | { type: 'disconnected'; nextAttemptAt: number | null }
  | { type: 'session-lost'; unconfirmed: number }
  | { type: 'offline' }
  | { type: 'gave-up' }
  | { type: 'auth-failed'; code: ErrorCode; message: string }
  | { type: 'logged-out' }
  | { type: 'presence'; entries: PresenceEntry[] }
  | { type: 'presence-changed'; entry: PresenceEntry }
  | { type: 'outgoing-call'; re: number; call: Call; existing: boolean }
  | { type: 'incoming-call'; call: Call }
  | { type: 'call-started'; call: Call; rejoined: boolean }
  | { type: 'participant-disconnected'; call: string; user: string; deadline: number; remainingMs: number }
  | { type: 'participant-reconnected'; call: string; user: string }
  /** `peer`: the other person, also for a call this page knew only from its rejoin
   *  record (it ended while the page was away). */
  | { type: 'call-ended'; call: string; reason: EndReason; peer: Peer }
  | { type: 'call-moved'; call: string }
  | { type: 'signal'; call: string; from: string; payload: unknown }
  | { type: 'rejoin-available'; offer: RejoinOffer }
  | { type: 'rejoin-countdown'; call: string; remainingMs: number }
  | { type: 'rejoin-expired'; call: string }
  | { type: 'rejoin-withdrawn'; call: string; why: 'call-ended' | 'held-elsewhere' | 'declined' | 'denied' }
  | { type: 'error'; code: ErrorCode; message: string; re: number | null };

export type EventType = HoldfastEvent['type'];
export type EventOf<K extends EventType> = Extract<HoldfastEvent, { type: K }>;

/** An immutable picture of the client; a new object only when something changed. */
export interface Snapshot {
  readonly state: ConnectionState;
  readonly user: Peer | null;
  readonly session: string | null;
  /** Epoch ms of the next connection attempt while reconnecting. */
  readonly nextAttemptAt: number | null;
  readonly calls: readonly Call[];
  readonly presence: readonly PresenceEntry[];
  readonly pendingRejoins: readonly RejoinOffer[];
  /** The first pending rejoin, for the common one-call case. */
  readonly pendingRejoin: RejoinOffer | null;
  /** When the snapshot was taken (epoch ms). */
  readonly now: number;
}

export interface ConnectOptions {
  /** The server's WebSocket URL; default `ws(s)://<this host>/ws`. */
  url?: string;
  /** Your backend's signed token (or a bare identity for a `--dev` server). */
  token: string;
  /** Receive who is online. */
  presence?: boolean;
  /** Accept a second incoming call while in a call. */
  callWaiting?: boolean;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  giveUpAfterMs?: number;
  /** Where the `.wasm` file is, if not next to this package's files. */
  wasmUrl?: string | URL;
}

export interface CallOptions {
  /** Selects the server's grace window (e.g. `support`, `interpreter`). */
  kind?: string;
  /** JSON data shown to the callee. */
  metadata?: unknown;
}

/** Every failed call into the client throws this. */
export class HoldfastError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'HoldfastError';
    this.code = code;
  }
}

// ------------------------------------------------------------- the client

const LOCK_PREFIX = 'holdfast:call:';

function wrap<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    const err = e as { code?: string; message?: string };
    throw new HoldfastError(err?.code ?? 'internal', err?.message ?? String(e));
  }
}

type Handler = (event: HoldfastEvent) => void;

/** The page's client. Get it from `connect()`. */
export class HoldfastClient {
  private handlers = new Map<string, Set<Handler>>();
  private listeners = new Set<() => void>();
  private snapshot: Snapshot | null = null;
  private notifyQueued = false;
  private outgoing = new Map<number, { resolve: (c: Call) => void; reject: (e: HoldfastError) => void }>();
  private locks = new Map<string, () => void>();
  private closed = false;

  /** @internal */
  constructor(readonly url: string, readonly token: string) {}

  /** @internal Receives every event from the wasm client. */
  dispatch(ev: HoldfastEvent): void {
    this.track(ev);
    this.snapshot = null;
    for (const key of [ev.type, '*']) {
      for (const h of this.handlers.get(key) ?? []) {
        try {
          h(ev);
        } catch (e) {
          // A throwing handler must not stop the others or the client.
          setTimeout(() => { throw e; });
        }
      }
    }
    this.queueNotify();
  }

  private track(ev: HoldfastEvent): void {
    switch (ev.type) {
      case 'outgoing-call': {
        this.outgoing.get(ev.re)?.resolve(ev.call);
        this.outgoing.delete(ev.re);
        break;
      }
      case 'error': {
        if (ev.re !== null && this.outgoing.has(ev.re)) {
          this.outgoing.get(ev.re)!.reject(new HoldfastError(ev.code, ev.message));
          this.outgoing.delete(ev.re);
        }
        break;
      }
      case 'call-started':
        this.holdLock(ev.call.id);
        break;
      case 'call-ended':
      case 'call-moved':
        this.releaseLock(ev.call);
        break;
      case 'logged-out':
        for (const id of [...this.locks.keys()]) this.releaseLock(id);
        for (const p of this.outgoing.values()) p.reject(new HoldfastError('logged-out', 'logged out'));
        this.outgoing.clear();
        break;
    }
  }

  private queueNotify(): void {
    if (this.notifyQueued) return;
    this.notifyQueued = true;
    queueMicrotask(() => {
      this.notifyQueued = false;
      for (const l of [...this.listeners]) l();
    });
  }

  /** A tab that holds a live call holds a Web Lock named after it, so other tabs of
   *  this origin do not offer it for rejoin (and learn when this tab is gone). */
  private holdLock(call: string): void {
    const locks = (globalThis.navigator as Navigator | undefined)?.locks;
    if (!locks || this.locks.has(call)) return;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    this.locks.set(call, release);
    locks.request(LOCK_PREFIX + call, () => held).catch(() => {});
  }

  private releaseLock(call: string): void {
    this.locks.get(call)?.();
    this.locks.delete(call);
  }

  /** Runs a command. Commands can change what the snapshot shows without an event
   *  (a rejoin takes the offer away at once), so the snapshot is rebuilt after each. */
  private command<T>(f: () => T): T {
    try {
      return wrap(f);
    } finally {
      this.snapshot = null;
      this.queueNotify();
    }
  }

  private guard(): void {
    if (this.closed) throw new HoldfastError('logged-out', 'this client logged out; connect() again');
  }

  /** Calls `peer`. Resolves with the call (the existing one if the two already share
   *  a call); rejects with `peer-offline`, `self-call`, `already-in-call`, … */
  call(peer: string, options: CallOptions = {}): Promise<Call> {
    this.guard();
    const re = this.command(() => raw.call(peer, options.kind, options.metadata));
    return new Promise((resolve, reject) => this.outgoing.set(re, { resolve, reject }));
  }

  /** Accepts a ringing incoming call. */
  accept(callId: string): void {
    this.guard();
    this.command(() => raw.accept(callId));
  }

  /** Declines a ringing incoming call. */
  decline(callId: string): void {
    this.guard();
    this.command(() => raw.decline(callId));
  }

  /** Ends a call: cancels it while ringing out, declines it while ringing in, hangs up
   *  an active one. Closing the tab is *not* a hang-up. */
  hangup(callId: string): void {
    this.guard();
    this.command(() => raw.hangup(callId));
  }

  /** Relays JSON data (SDP, ICE candidates, app messages) to the other participant,
   *  exactly once and in order, across drops. */
  send(callId: string, payload: unknown): void {
    this.guard();
    this.command(() => raw.send(callId, payload));
  }

  /** Takes back the call: after a reload (see `pendingRejoin`), or from another tab or
   *  device (which is told `call-moved`). */
  rejoin(callId: string): void {
    this.guard();
    this.command(() => raw.rejoin(callId));
  }

  /** The user does not want the call back: forget the offer. */
  declineRejoin(callId: string): void {
    this.guard();
    this.command(() => raw.declineRejoin(callId));
  }

  /** Sets the presence status others see. */
  setStatus(status: 'available' | 'busy'): void {
    this.guard();
    this.command(() => raw.setStatus(status));
  }

  /** Tries to connect now, whatever the backoff says (also after `gave-up`). */
  reconnect(): void {
    this.guard();
    this.command(() => raw.reconnect());
  }

  /** Ends the session: calls end (`hangup`), rejoin records are deleted, the socket
   *  closes. The only way to close it. */
  logout(): void {
    if (this.closed) return;
    wrap(() => raw.logout());
    this.closed = true;
    this.snapshot = null;
    setGlobal(null);
    this.queueNotify();
  }

  /** Listens to one event type (or `'*'` for all). Returns the unsubscriber. */
  on<K extends EventType>(type: K, handler: (event: EventOf<K>) => void): () => void;
  on(type: '*', handler: (event: HoldfastEvent) => void): () => void;
  on(type: string, handler: Handler): () => void {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, (set = new Set()));
    set.add(handler);
    return () => {
      set!.delete(handler);
    };
  }

  /** Called after any change (batched per microtask). For `useSyncExternalStore`. */
  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  /** The current state; the same object until something changes. */
  getSnapshot = (): Snapshot => {
    if (this.snapshot) return this.snapshot;
    if (this.closed) {
      this.snapshot = freeze(emptySnapshot('logged-out'));
      return this.snapshot;
    }
    const s = wrap(() => raw.snapshot()) as Omit<Snapshot, 'pendingRejoin'>;
    this.snapshot = freeze({ ...s, pendingRejoin: s.pendingRejoins[0] ?? null });
    return this.snapshot;
  };

  /** Number of registered event handlers and subscribers (leak checks in tests). */
  listenerCount(): number {
    let n = this.listeners.size;
    for (const s of this.handlers.values()) n += s.size;
    return n;
  }
}

function emptySnapshot(state: ConnectionState): Snapshot {
  return {
    state, user: null, session: null, nextAttemptAt: null, calls: [], presence: [],
    pendingRejoins: [], pendingRejoin: null, now: Date.now(),
  };
}

function freeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) freeze((v as Record<string, unknown>)[k]);
  }
  return v;
}

// ------------------------------------------------------------- singleton

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

/** Calls this origin's other tabs hold live (Web Locks). */
async function heldElsewhere(): Promise<string[]> {
  const locks = (globalThis.navigator as Navigator | undefined)?.locks;
  if (!locks) return [];
  try {
    const q = await locks.query();
    return (q.held ?? [])
      .map((l) => l.name ?? '')
      .filter((n) => n.startsWith(LOCK_PREFIX))
      .map((n) => n.slice(LOCK_PREFIX.length));
  } catch {
    return [];
  }
}

const watching = new Set<string>();

/** When another tab holds a call we have a record for, wait for its lock: getting it
 *  means that tab is gone (closed or crashed), so the call can be offered here. */
function watchHeld(call: string): void {
  const locks = (globalThis.navigator as Navigator | undefined)?.locks;
  if (!locks || watching.has(call)) return;
  watching.add(call);
  locks
    .request(LOCK_PREFIX + call, async () => {
      watching.delete(call);
      if (state.client) {
        try {
          raw.setHeldElsewhere(call, false);
        } catch {
          /* logged out meanwhile */
        }
      }
    })
    .catch(() => watching.delete(call));
}

/** Connects the page (once). Every later call with the same server and token returns
 *  the same client and socket; another identity needs `logout()` first. */
export function connect(options: ConnectOptions): Promise<HoldfastClient> {
  const url = options.url ?? defaultUrl();
  const existing = state.client;
  if (existing) {
    if (existing.url === url && existing.token === options.token) return Promise.resolve(existing);
    return Promise.reject(new HoldfastError('already-connected',
      'this page is connected with another server or identity; logout() first'));
  }
  if (state.connecting) return state.connecting;
  state.connecting = (async () => {
    wasmReady ??= init(options.wasmUrl ? { module_or_path: options.wasmUrl } : undefined);
    await wasmReady;
    const held = await heldElsewhere();
    const client = new HoldfastClient(url, options.token);
    wrap(() => raw.connect({
      url,
      token: options.token,
      presence: options.presence ?? false,
      callWaiting: options.callWaiting ?? false,
      heldElsewhere: held,
      backoffBaseMs: options.backoffBaseMs,
      backoffMaxMs: options.backoffMaxMs,
      giveUpAfterMs: options.giveUpAfterMs,
    }, (ev: HoldfastEvent) => client.dispatch(ev)));
    for (const call of held) watchHeld(call);
    setGlobal(client);
    return client;
  })();
  state.connecting.catch(() => setGlobal(null));
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

export * from './media.js';
