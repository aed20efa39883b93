// The one error type of the package.

/** Every failed call into the client throws this. */
export class HoldfastError extends Error {
  /** The stable code: a server error code (`peer-offline`, `rate-limited`, …) or one
   *  of the client's (`already-connected`, `not-in-browser`, `wasm-not-found`, …). */
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'HoldfastError';
    this.code = code;
  }
}

/** Runs `f`, turning whatever it throws (the wasm client throws plain `Error`s with a
 *  `code`) into a `HoldfastError`. */
export function wrap<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    const err = e as { code?: string; message?: string };
    throw new HoldfastError(err?.code ?? 'internal', err?.message ?? String(e));
  }
}
