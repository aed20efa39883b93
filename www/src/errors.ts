// The one error type of the package.

import type { ClientErrorCode } from './generated/client.js';
import type { ErrorCode } from './generated/protocol.js';

/** Codes of failures found in the browser, before anything reached the server. */
export type LocalErrorCode =
  /** `connect()` has not finished, or the page logged out. */
  | 'not-connected'
  /** The page is connected with another server or identity: `logout()` first. */
  | 'already-connected'
  /** A command came from inside the client's own callback; call again from a later task. */
  | 'busy'
  /** No browser here: `connect()` ran during a server-side render. */
  | 'not-in-browser'
  /** A browser feature the client needs is missing. */
  | 'unsupported'
  /** The client's WebAssembly could not be downloaded or compiled (`connect()` again to retry). */
  | 'wasm-load-failed'
  /** No camera or microphone could be opened (none there, or permission refused). */
  | 'media-unavailable'
  /** A step of a call's media failed that it cannot recover from by itself. */
  | 'media-failed'
  /** A bug in this package. */
  | 'internal';

/** Every code a `HoldfastError` can carry: the server's (`ErrorCode`, generated from the
 *  Rust protocol), the client engine's (`ClientErrorCode`, generated from it too) and the
 *  browser's (`LocalErrorCode`). */
export type HoldfastErrorCode = ErrorCode | ClientErrorCode | LocalErrorCode;

/** Every failed call into the client throws (or rejects with) this. */
export class HoldfastError extends Error {
  /** The stable code: a server error code (`peer-offline`, `rate-limited`, …) or one
   *  of the client's (`already-connected`, `not-in-browser`, `wasm-load-failed`, …). */
  readonly code: HoldfastErrorCode;
  constructor(code: HoldfastErrorCode, message: string) {
    super(message);
    this.name = 'HoldfastError';
    this.code = code;
  }
}

/** `e` as a `HoldfastError`: itself if it is one, else one with `e`'s `code` (the wasm
 *  client throws plain `Error`s with a `code`) or `fallback`. */
export function toHoldfastError(e: unknown, fallback: HoldfastErrorCode = 'internal'): HoldfastError {
  if (e instanceof HoldfastError) return e;
  const err = e as { code?: unknown; message?: unknown } | null;
  const code = typeof err?.code === 'string' ? (err.code as HoldfastErrorCode) : fallback;
  const message = typeof err?.message === 'string' ? err.message : String(e);
  return new HoldfastError(code, message);
}

/** Runs `f`, turning whatever it throws into a `HoldfastError`. */
export function wrap<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw toHoldfastError(e);
  }
}
