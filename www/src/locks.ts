// Web Locks that tell this origin's tabs which calls another tab holds live: a tab
// holding a call holds the lock `holdfast:call:<id>`, so other tabs do not offer it for
// rejoin, and learn when that tab is gone (they get the lock).

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
