// The public types of the client. Wire types (`Peer`, `EndReason`, `ErrorCode`, …) come
// from `generated/protocol.ts`, which is generated from the Rust protocol (src/protocol.rs)
// and checked against it by `cargo test`; the rest describe what the wasm client hands
// to JavaScript (its events and snapshots).

import type { EndReason, ErrorCode, Peer, PresenceEntry } from './generated/protocol.js';

export type { EndReason, ErrorCode, Peer, PresenceEntry, PresenceStatus } from './generated/protocol.js';

export type ConnectionState =
  | 'idle'
  | 'connecting'
  | 'connected'
  | 'reconnecting'
  | 'offline'
  | 'gave-up'
  | 'auth-failed'
  | 'logged-out';

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
