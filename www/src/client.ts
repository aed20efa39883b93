// The page's client: a thin object over the wasm client's commands and events. Made by
// `connect()` (page.ts), which keeps one per page.

import * as raw from './wasm/holdfast.js';
import { Emitter } from './emitter.js';
import { HoldfastError, wrap } from './errors.js';
import { CallLocks, ElsewhereWatch } from './locks.js';
import type { Call, CallOptions, ConnectionState, EventOf, EventType, HoldfastEvent, Snapshot } from './types.js';

/** The page's client. Get it from `connect()`. */
export class HoldfastClient {
  private events = new Emitter<HoldfastEvent>();
  private listeners = new Set<() => void>();
  private snapshot: Snapshot | null = null;
  private notifyQueued = false;
  private outgoing = new Map<number, { resolve: (c: Call) => void; reject: (e: HoldfastError) => void }>();
  private locks = new CallLocks();
  private closed = false;
  private elsewhere = new ElsewhereWatch(
    () => this.getSnapshot().user?.id ?? null,
    () => new Set(this.getSnapshot().calls.map((c) => c.id)),
    () => {
      this.snapshot = null;
      this.queueNotify();
    },
  );

  /** @internal `loggedOut` runs once, when `logout()` closed this client.
   *  @param url The server's WebSocket URL.
   *  @param token The token this client connected with. */
  constructor(readonly url: string, readonly token: string, private readonly loggedOut: () => void = () => {}) {}

  /** @internal Receives every event from the wasm client. */
  dispatch(ev: HoldfastEvent): void {
    this.track(ev);
    this.snapshot = null;
    this.events.emit(ev);
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
        this.locks.hold(ev.call.id);
        this.elsewhere.scan();
        break;
      case 'call-ended':
      case 'call-moved':
        this.locks.release(ev.call);
        this.elsewhere.scan();
        break;
      case 'connected':
      case 'incoming-call':
      case 'outgoing-call':
      case 'rejoin-withdrawn':
        this.elsewhere.scan();
        break;
      case 'logged-out':
        this.elsewhere.stop();
        this.locks.releaseAll();
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

  /** Moves here a call this person holds in another tab of this browser (one of the
   *  snapshot's `elsewhere`), or on another device: that tab or device is told
   *  `call-moved`, this page gets `call-started`. Does nothing if the call is already
   *  here; throws `no-rejoin` if this browser holds no token for it. */
  moveHere(callId: string): void {
    this.guard();
    if (this.getSnapshot().calls.some((c) => c.id === callId)) return;
    this.command(() => raw.moveHere(callId));
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

  /** Ends the session: calls end (`hangup`) here at once and at the other end as soon
   *  as the server has it, rejoin records are deleted, the socket closes. The only way
   *  to close it. Resolves when the server has the logout (it answered on the socket, or
   *  the browser was handed a `sendBeacon` fallback): await it before navigating away
   *  or reloading, so the other person is told at once. */
  logout(): Promise<void> {
    if (this.closed) return Promise.resolve();
    let delivered!: () => void;
    const done = new Promise<void>((resolve) => (delivered = resolve));
    wrap(() => raw.logout(() => delivered()));
    this.closed = true;
    this.elsewhere.stop();
    this.snapshot = null;
    this.loggedOut();
    this.queueNotify();
    return done;
  }

  /** Listens to one event type (or `'*'` for all). Returns the unsubscriber. */
  on<K extends EventType>(type: K, handler: (event: EventOf<K>) => void): () => void;
  on(type: '*', handler: (event: HoldfastEvent) => void): () => void;
  on(type: string, handler: (event: HoldfastEvent) => void): () => void {
    return this.events.on(type, handler);
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
    const s = wrap(() => raw.snapshot()) as Omit<Snapshot, 'pendingRejoin' | 'elsewhere'>;
    this.snapshot = freeze({ ...s, pendingRejoin: s.pendingRejoins[0] ?? null, elsewhere: this.elsewhere.list });
    return this.snapshot;
  };

  /** Number of registered event handlers and subscribers (leak checks in tests). */
  listenerCount(): number {
    return this.listeners.size + this.events.size;
  }
}

function emptySnapshot(state: ConnectionState): Snapshot {
  return {
    state, user: null, session: null, nextAttemptAt: null, calls: [], presence: [],
    pendingRejoins: [], pendingRejoin: null, elsewhere: [], lastFailure: null, now: Date.now(),
  };
}

function freeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) freeze((v as Record<string, unknown>)[k]);
  }
  return v;
}
