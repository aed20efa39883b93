// The one event emitter of the package (the client's events and each call's media
// events): handlers per event `type`, plus `'*'` for every event.

/** Handlers for events discriminated by `type`. */
export class Emitter<E extends { type: string }> {
  private handlers = new Map<string, Set<(event: E) => void>>();

  /** Adds `handler` for `type` (or `'*'`). Returns the unsubscriber. */
  on(type: string, handler: (event: E) => void): () => void {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, (set = new Set()));
    set.add(handler);
    return () => {
      set!.delete(handler);
    };
  }

  /** Runs the handlers of `event.type`, then the `'*'` ones. A throwing handler must
   *  not stop the others or the caller: its error is rethrown on a fresh task, where the
   *  page sees it as an uncaught error. */
  emit(event: E): void {
    for (const key of [event.type, '*']) {
      for (const h of this.handlers.get(key) ?? []) {
        try {
          h(event);
        } catch (e) {
          setTimeout(() => {
            throw e;
          });
        }
      }
    }
  }

  /** Number of registered handlers. */
  get size(): number {
    let n = 0;
    for (const s of this.handlers.values()) n += s.size;
    return n;
  }

  clear(): void {
    this.handlers.clear();
  }
}
