// The public types of the client. Generated from the Rust source of truth and checked
// against it by `cargo test` (src/protocol/ts_bindings.rs): the wire types (`Peer`,
// `EndReason`, `ErrorCode`, …) in `generated/protocol.ts`, and what the wasm client hands
// to JavaScript (calls, events, rejoin offers, snapshots) in `generated/client.ts`. Only
// the options of the facade's own functions are written here.

import type { ClientSnapshot, HoldfastEvent, RejoinOffer } from './generated/client.js';

export type { EndReason, ErrorCode, Peer, PresenceEntry, PresenceStatus } from './generated/protocol.js';

export type {
  Call, CallPhase, ClientErrorCode, ConnectionFailure, ConnectionState, FailureReason, HoldfastEvent,
  RejoinOffer, RejoinWithdrawn,
} from './generated/client.js';

/** The name of every event (`'call-ended'`, …). */
export type EventType = HoldfastEvent['type'];
/** The event whose `type` is `K`. */
export type EventOf<K extends EventType> = Extract<HoldfastEvent, {
  /** The event's name. */
  type: K;
}>;

/** Every field readonly, arrays too (a snapshot is frozen). */
type Frozen<T> = { readonly [K in keyof T]: T[K] extends Array<infer U> ? readonly U[] : T[K] };

/** An immutable picture of the client; a new object only when something changed. */
export interface Snapshot extends Frozen<ClientSnapshot> {
  /** The first pending rejoin, for the common one-call case. */
  readonly pendingRejoin: RejoinOffer | null;
}

/** The options of `connect()`. */
export interface ConnectOptions {
  /** The server's WebSocket URL; default `ws(s)://<this host>/ws`. */
  url?: string;
  /** Your backend's signed token (or a bare identity for a `--dev` server). */
  token: string;
  /** Receive who is online. */
  presence?: boolean;
  /** Accept a second incoming call while in a call. */
  callWaiting?: boolean;
  /** Reconnect backoff: the second attempt waits about this long (default 250 ms),
   *  doubling, with jitter, up to `backoffMaxMs`. */
  backoffBaseMs?: number;
  /** The longest wait between reconnect attempts (default 5000 ms). */
  backoffMaxMs?: number;
  /** Stop reconnecting (state `gave-up`) after this long without a session (default
   *  120000 ms). */
  giveUpAfterMs?: number;
  /** How long one attempt may take to open the socket and get the server's welcome
   *  before it fails with `connection-failed` reason `timeout` (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Where the `.wasm` file is, if not next to this package's files. */
  wasmUrl?: string | URL;
}

/** The options of `call()`. */
export interface CallOptions {
  /** Selects the server's grace window (e.g. `support`, `interpreter`). */
  kind?: string;
  /** JSON data shown to the callee. */
  metadata?: unknown;
}
