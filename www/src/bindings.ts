// Framework-neutral plumbing shared by `holdfast/react` and `holdfast/vue` (not a public
// entry point). It follows the page-global client through `connect()` and `logout()`, so
// a hook may render before the client exists, and every subscription it makes is undone
// by the unsubscriber it returns.

import {
  HoldfastError,
  getClient,
  onClientChange,
  type Call,
  type EndReason,
  type EventOf,
  type EventType,
  type HoldfastClient,
  type HoldfastEvent,
  type Snapshot,
} from './index.js';

/** The client's snapshot plus the client itself (`null` until `connect()` resolves and
 *  after `logout()`). */
export interface HoldfastState extends Snapshot {
  /** The page's client, for actions (`null` until `connect()` resolves). */
  readonly client: HoldfastClient | null;
}

/** What a call view shows: `none` (no call), a `Call['phase']`, or `ended`. */
export type CallStatus = 'none' | Call['phase'] | 'ended';

/** Why the call a view showed is over (`moved`: another tab or device took it). */
export type CallEndReason = EndReason | 'moved';

/** The state before `connect()` resolves (and on the server, for SSR). */
export const IDLE_STATE: HoldfastState = Object.freeze({
  state: 'idle',
  user: null,
  session: null,
  nextAttemptAt: null,
  calls: Object.freeze([]) as readonly Call[],
  presence: Object.freeze([]),
  pendingRejoins: Object.freeze([]),
  pendingRejoin: null,
  elsewhere: Object.freeze([]),
  lastFailure: null,
  now: 0,
  client: null,
});

const noop = () => {};

// After `logout()` the page has no client; the closed one still reports `logged-out`
// until `connect()` makes a new one, so keep showing it.
let last: HoldfastClient | null = null;

export function currentClient(): HoldfastClient | null {
  const c = getClient();
  if (c) last = c;
  return c ?? last;
}

function requireClient(): HoldfastClient {
  const c = getClient();
  if (!c) throw new HoldfastError('not-connected', 'connect() has not finished (or the page logged out)');
  return c;
}

let memo: HoldfastState | null = null;
let memoSnap: Snapshot | null = null;

/** The current state; the same object until something changes. */
export function getState(): HoldfastState {
  const c = currentClient();
  if (!c) return IDLE_STATE;
  const snap = c.getSnapshot();
  // After `logout()` the snapshot says `logged-out` and `client` is null.
  const client = getClient();
  if (!memo || memoSnap !== snap || memo.client !== client) {
    memoSnap = snap;
    memo = Object.freeze({ ...snap, client });
  }
  return memo;
}

/** Whether this runs in a browser (not server-side rendering). */
export const inBrowser = typeof window !== 'undefined';

export function getServerState(): HoldfastState {
  return IDLE_STATE;
}

/** Runs `attach` on the current client now and again whenever the page's client
 *  changes; the returned function undoes everything. */
function follow(attach: (c: HoldfastClient) => () => void, changed?: () => void): () => void {
  let client = currentClient();
  let off = client ? attach(client) : noop;
  const unwatch = onClientChange(() => {
    const next = currentClient();
    if (next !== client) {
      off();
      client = next;
      off = next ? attach(next) : noop;
    }
    changed?.();
  });
  return () => {
    unwatch();
    off();
    off = noop;
  };
}

/** `listener` runs after any change of `getState()`. */
export function subscribeState(listener: () => void): () => void {
  return follow((c) => c.subscribe(listener), listener);
}

/** An event's name, or `'*'` for every event. */
export type EventName = EventType | '*';
/** The event a handler of `K` gets. */
export type EventFor<K extends EventName> = K extends EventType ? EventOf<K> : HoldfastEvent;

/** `handler` gets the client's events of one type (or all, `'*'`). */
export function onEvent<K extends EventName>(type: K, handler: (event: EventFor<K>) => void): () => void {
  return follow((c) => c.on(type as '*', handler as (e: HoldfastEvent) => void));
}

/** The given call, or else the page's current call: the active one, else one ringing
 *  here, else one ringing out. */
export function pickCall(calls: readonly Call[], id?: string | null): Call | null {
  if (id) return calls.find((c) => c.id === id) ?? null;
  return (
    calls.find((c) => c.phase === 'active') ??
    calls.find((c) => c.phase === 'incoming') ??
    calls.find((c) => c.phase === 'outgoing') ??
    null
  );
}

/** The end of a call, if `ev` ends one. */
export function endOf(ev: HoldfastEvent): { call: string; reason: CallEndReason } | null {
  if (ev.type === 'call-ended') return { call: ev.call, reason: ev.reason };
  if (ev.type === 'call-moved') return { call: ev.call, reason: 'moved' };
  return null;
}

/** Whole seconds left until `deadline` (epoch ms), never negative. */
export function secondsUntil(deadline: number, now: number): number {
  return Math.max(0, Math.ceil((deadline - now) / 1000));
}

/** Calls `tick` each time `secondsUntil(deadline, Date.now())` changes, until it is 0. */
export function everySecondUntil(deadline: number, tick: () => void): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = () => {
    const left = deadline - Date.now();
    if (left <= 0) return;
    timer = setTimeout(() => {
      tick();
      arm();
    }, (left % 1000 || 1000) + 5);
  };
  arm();
  return () => clearTimeout(timer);
}

/** A call view's actions, on the call the view shows when they run (they throw a
 *  `HoldfastError` `unknown-call` without one). */
export interface CallActions {
  /** Accepts the call ringing here. */
  accept(): void;
  /** Declines the call ringing here. */
  decline(): void;
  /** Cancels, declines or hangs up the call, whatever its phase. */
  hangup(): void;
  /** Relays JSON data to the other participant, exactly once and in order. */
  send(payload: unknown): void;
}

/** The actions of a call view, on the call `id()` names when they run. */
export function callActions(id: () => string | null): CallActions {
  const target = () => {
    const call = id();
    if (!call) throw new HoldfastError('unknown-call', 'there is no call to act on');
    return call;
  };
  return {
    /** Accepts the call ringing here. */
    accept: (): void => requireClient().accept(target()),
    /** Declines the call ringing here. */
    decline: (): void => requireClient().decline(target()),
    /** Cancels, declines or hangs up the call, whatever its phase. */
    hangup: (): void => requireClient().hangup(target()),
    /** Relays JSON data to the other participant, exactly once and in order. */
    send: (payload: unknown): void => requireClient().send(target(), payload),
  };
}


/** Rejoins or declines the offer for `call`. */
export function rejoinCall(call: string): void {
  requireClient().rejoin(call);
}

export function declineRejoinCall(call: string): void {
  requireClient().declineRejoin(call);
}
