// Web Locks that tell this origin's tabs which calls another tab holds live: a tab
// holding a call holds the lock `holdfast:call:<id>`, so other tabs do not offer it for
// rejoin, and learn when that tab is gone (they get the lock).

import type { Peer } from './generated/protocol.js';

const LOCK_PREFIX = 'holdfast:call:';

function webLocks(): LockManager | undefined {
  return (globalThis.navigator as Navigator | undefined)?.locks;
}

/** The locks of the calls this page holds. */
export class CallLocks {
  private held = new Map<string, () => void>();

  hold(call: string): void {
    const locks = webLocks();
    if (!locks || this.held.has(call)) return;
    let release!: () => void;
    const until = new Promise<void>((r) => (release = r));
    this.held.set(call, release);
    locks.request(LOCK_PREFIX + call, () => until).catch(() => {});
  }

  release(call: string): void {
    this.held.get(call)?.();
    this.held.delete(call);
  }

  releaseAll(): void {
    for (const id of [...this.held.keys()]) this.release(id);
  }
}

/** Calls this origin's other tabs hold live. */
export async function heldElsewhere(): Promise<string[]> {
  const locks = webLocks();
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
 *  means that tab is gone (closed or crashed), so `released` runs and the call can be
 *  offered here. */
export function watchHeld(call: string, released: () => void): void {
  const locks = webLocks();
  if (!locks || watching.has(call)) return;
  watching.add(call);
  locks
    .request(LOCK_PREFIX + call, async () => {
      watching.delete(call);
      released();
    })
    .catch(() => watching.delete(call));
}

/** localStorage key prefix of the client's rejoin records (`<prefix><call>:<user>`; the
 *  wasm driver writes them, src/web/mod.rs `RECORD_PREFIX`). */
const RECORD_PREFIX = 'holdfast:v1:rejoin:';

/** A call this person holds live in another tab of this browser. */
export interface CallElsewhere {
  /** The call's id (for `client.moveHere()`). */
  call: string;
  /** The other participant. */
  peer: Peer;
  /** The call's kind (`null`: the server's default). */
  kind: string | null;
}

/** After another tab wrote a record, look again this long later too: its lock may be
 *  granted a moment after the record is written. */
const RESCAN_AFTER_MS = [300, 1_500];

/** Follows the calls this person holds live in another tab: a rejoin record of theirs in
 *  this origin's storage whose call's lock another tab holds. Looks again when another
 *  tab writes or removes a record, when this page's calls change (`scan()`), and when a
 *  listed call's lock is let go (that tab closed, or the call ended or moved). */
export class ElsewhereWatch {
  /** The current list; a new array whenever it changes. */
  list: readonly CallElsewhere[] = Object.freeze([]);
  private key = '[]';
  private scanning = false;
  private again = false;
  private stopped = false;
  private timers = new Set<ReturnType<typeof setTimeout>>();
  private watched = new Set<string>();
  private offStorage: () => void = () => {};

  /** @param me this page's user id, once known
   *  @param here the calls this page holds (any phase)
   *  @param changed runs after `list` changed */
  constructor(
    private readonly me: () => string | null,
    private readonly here: () => ReadonlySet<string>,
    private readonly changed: () => void,
  ) {
    const win = globalThis.window as (Window & typeof globalThis) | undefined;
    if (!win?.addEventListener) return;
    const onStorage = (e: StorageEvent) => {
      if (e.key !== null && !e.key.startsWith(RECORD_PREFIX)) return;
      this.scan();
      for (const ms of RESCAN_AFTER_MS) this.later(ms);
    };
    win.addEventListener('storage', onStorage);
    this.offStorage = () => win.removeEventListener('storage', onStorage);
  }

  private later(ms: number): void {
    if (this.stopped) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.scan();
    }, ms);
    this.timers.add(t);
  }

  /** Looks at storage and locks again (coalesced: one look at a time). */
  scan(): void {
    if (this.stopped) return;
    if (this.scanning) {
      this.again = true;
      return;
    }
    this.scanning = true;
    // After the current event is dispatched: the caller's snapshot is rebuilt by then.
    void Promise.resolve().then(() => this.look()).finally(() => {
      this.scanning = false;
      if (this.again) {
        this.again = false;
        this.scan();
      }
    });
  }

  private async look(): Promise<void> {
    const me = this.me();
    const found: CallElsewhere[] = [];
    if (me) {
      const records = readRecords(me, this.here());
      if (records.length > 0) {
        const held = new Set(await heldElsewhere());
        for (const r of records) if (held.has(r.call)) found.push(r);
      }
    }
    if (this.stopped) return;
    for (const r of found) this.watchRelease(r.call);
    const key = JSON.stringify(found);
    if (key === this.key) return;
    this.key = key;
    this.list = Object.freeze(found.map((r) => Object.freeze(r)));
    this.changed();
  }

  /** Looks again once the tab holding `call` lets its lock go. */
  private watchRelease(call: string): void {
    const locks = webLocks();
    if (!locks || this.watched.has(call)) return;
    this.watched.add(call);
    // Granted means the holder let go; look once this page has let go too (the promise
    // settles after the release), or it would see its own hold.
    locks
      .request(LOCK_PREFIX + call, async () => {})
      .catch(() => {})
      .finally(() => {
        this.watched.delete(call);
        this.scan();
      });
  }

  /** Stops following (logout). The list empties. */
  stop(): void {
    this.stopped = true;
    this.offStorage();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    if (this.list.length > 0) {
      this.list = Object.freeze([]);
      this.key = '[]';
      this.changed();
    }
  }
}

/** This person's rejoin records in storage, of calls this page does not hold. */
function readRecords(me: string, here: ReadonlySet<string>): CallElsewhere[] {
  let storage: Storage | undefined;
  try {
    storage = globalThis.localStorage;
  } catch {
    return []; // storage blocked for this origin
  }
  if (!storage) return [];
  const out: CallElsewhere[] = [];
  for (let i = 0; i < storage.length; i++) {
    const key = storage.key(i);
    if (!key?.startsWith(RECORD_PREFIX) || !key.endsWith(':' + me)) continue;
    try {
      const r = JSON.parse(storage.getItem(key) ?? 'null') as { call?: unknown; user?: unknown; peer?: Peer; kind?: string | null } | null;
      if (!r || r.user !== me || typeof r.call !== 'string' || !r.peer || here.has(r.call)) continue;
      out.push({ call: r.call, peer: { id: r.peer.id, name: r.peer.name }, kind: r.kind ?? null });
    } catch {
      // The client removes unreadable records itself.
    }
  }
  return out.sort((a, b) => a.call.localeCompare(b.call));
}
