// The public types of the client. Generated from the Rust source of truth and checked
// against it by `cargo test` (src/protocol/ts_bindings.rs): the wire types (`Peer`,
// `EndReason`, `ErrorCode`, …) in `generated/protocol.ts`, and what the wasm client hands
// to JavaScript (calls, events, rejoin offers, snapshots) in `generated/client.ts`.
// Written here: the options of the facade's own functions, and the event union again
// with a comment on every field (ts-rs keeps no comments on enum variants), which
// `fixtures/types/events-match.ts` checks is exactly the generated one.

import type {
  Call, ClientSnapshot, ConnectionState, FailureReason, RejoinOffer, RejoinWithdrawn,
} from './generated/client.js';
import type { EndReason, ErrorCode, Peer, PresenceEntry } from './generated/protocol.js';
import type { CallElsewhere } from './locks.js';

export type { CallElsewhere } from './locks.js';

export type { EndReason, ErrorCode, LinkState, Peer, PresenceEntry, PresenceStatus } from './generated/protocol.js';

export type {
  Call, CallPhase, ClientErrorCode, ConnectionFailure, ConnectionState, FailureReason, RejoinOffer,
  RejoinWithdrawn,
} from './generated/client.js';

/** Every event, discriminated by `type`; `client.on(type, handler)` gets one kind. */
export type HoldfastEvent =
  | {
      /** Trying to open the first session. */
      type: 'connecting';
      /** 1 for the first attempt, counting up. */
      attempt: number;
    }
  | {
      /** Trying to get back after a drop. */
      type: 'reconnecting';
      /** 1 for the first attempt after the drop, counting up. */
      attempt: number;
    }
  | {
      /** The first session is open. */
      type: 'connected';
      /** The session's id. */
      session: string;
      /** Who the token says this page is. */
      user: Peer;
    }
  | {
      /** Back after a drop. */
      type: 'resumed';
      /** `true`: the session resumed with nothing lost; `false`: the server started a new
       *  session (a `session-lost` event came first). */
      recovered: boolean;
    }
  | {
      /** The link dropped. */
      type: 'disconnected';
      /** When the next attempt starts (epoch ms); `null` while offline or after giving up. */
      nextAttemptAt: number | null;
    }
  | {
      /** The session could not be resumed: state was rebuilt from the server's snapshot. */
      type: 'session-lost';
      /** Sent messages the server may or may not have handled, which were dropped. */
      unconfirmed: number;
    }
  | {
      /** A connection attempt failed before the server's welcome, and why; reported once
       *  per attempt, within about a second. The snapshot's `lastFailure` holds the same
       *  fields until the next connect. */
      type: 'connection-failed';
      /** `unreachable` (nothing answered), `not-found` (no Holdfast server at that URL),
       *  `auth-failed` (the token was refused), `version` (another protocol version),
       *  `timeout` (no socket or welcome within `connectTimeoutMs`) or `refused` (the
       *  server refused with another `code`). */
      reason: FailureReason;
      /** The server's error code, when it gave one (`auth-failed`, `token-expired`,
       *  `unsupported-version`, `too-many-sessions`, …). */
      code: ErrorCode | null;
      /** What happened, for people (match on `reason` and `code`). */
      message: string;
      /** Which attempt failed (1 for the first of a streak). */
      attempt: number;
      /** When it failed (epoch ms). */
      at: number;
      /** Whether the client tries again by itself (`false` after `auth-failed` or
       *  `version`, or when it gave up). */
      willRetry: boolean;
      /** When the next attempt goes (epoch ms), if one is scheduled. */
      nextAttemptAt: number | null;
    }
  | {
      /** The browser went offline; the client reconnects when it is back online. */
      type: 'offline';
    }
  | {
      /** No session for `giveUpAfterMs`: the client stopped trying. */
      type: 'gave-up';
    }
  | {
      /** The server refused the token; the client does not retry. */
      type: 'auth-failed';
      /** The server's error code (`auth-failed`, `token-expired`, …). */
      code: ErrorCode;
      /** The server's explanation, for logs. */
      message: string;
    }
  | {
      /** `logout()` closed the socket; `connect()` may be called again. */
      type: 'logged-out';
    }
  | {
      /** Everyone online (with `presence: true`), once after connecting. */
      type: 'presence';
      /** Who is online and whether in a call. */
      entries: PresenceEntry[];
    }
  | {
      /** Someone came online, went offline, or started or ended a call. */
      type: 'presence-changed';
      /** Their new status. */
      entry: PresenceEntry;
    }
  | {
      /** The server made the call this page asked for with `call()` (or found the existing
       *  one between the same two people). */
      type: 'outgoing-call';
      /** The request's sequence number. */
      re: number;
      /** The call, ringing at the peer. */
      call: Call;
      /** `true` when an invite between the same two people already existed. */
      existing: boolean;
    }
  | {
      /** Someone is calling this page: `accept(call.id)` or `decline(call.id)`. */
      type: 'incoming-call';
      /** The ringing call. */
      call: Call;
    }
  | {
      /** Both participants are in the call. */
      type: 'call-started';
      /** The call, now `active`. */
      call: Call;
      /** `true` when this page took the call back with `rejoin()`. */
      rejoined: boolean;
    }
  | {
      /** The other participant dropped; the call waits for them until `deadline`. */
      type: 'participant-disconnected';
      /** The call's id. */
      call: string;
      /** Who dropped. */
      user: string;
      /** When their grace window closes and the call ends `reconnect-failed` (epoch ms). */
      deadline: number;
      /** Milliseconds left of their grace window. */
      remainingMs: number;
    }
  | {
      /** The other participant is back. */
      type: 'participant-reconnected';
      /** The call's id. */
      call: string;
      /** Who came back. */
      user: string;
    }
  | {
      /** The call ended, at both ends, with one reason. */
      type: 'call-ended';
      /** The call's id. */
      call: string;
      /** Why: `hangup`, `declined`, `cancelled`, `no-answer`, `busy`, `reconnect-failed`,
       *  `server-shutdown`, `server-lost`, `call-moved`. */
      reason: EndReason;
      /** The other person, also for a call this page knew only from its rejoin record
       *  (it ended while the page was away). */
      peer: Peer;
    }
  | {
      /** Another tab or device of this identity took the call. */
      type: 'call-moved';
      /** The call's id. */
      call: string;
    }
  | {
      /** The other participant's `send()`: delivered exactly once, in order. */
      type: 'signal';
      /** The call's id. */
      call: string;
      /** Who sent it. */
      from: string;
      /** The JSON value they sent. */
      payload: unknown;
    }
  | {
      /** After a reload, crash or closed tab: this page may take back a live call. */
      type: 'rejoin-available';
      /** The call, its peer and the time left. */
      offer: RejoinOffer;
    }
  | {
      /** Once a second while a rejoin offer stands. */
      type: 'rejoin-countdown';
      /** The call's id. */
      call: string;
      /** Milliseconds left to rejoin. */
      remainingMs: number;
    }
  | {
      /** The rejoin window closed. */
      type: 'rejoin-expired';
      /** The call's id. */
      call: string;
    }
  | {
      /** The offer is gone before its deadline. */
      type: 'rejoin-withdrawn';
      /** The call's id. */
      call: string;
      /** `call-ended`, `held-elsewhere` (another tab has it), `declined` (`declineRejoin()`)
       *  or `denied` (the server refused the rejoin). */
      why: RejoinWithdrawn;
    }
  | {
      /** A request was refused, or the server reported a problem. */
      type: 'error';
      /** The stable error code. */
      code: ErrorCode;
      /** The server's explanation, for logs. */
      message: string;
      /** The refused request's sequence number, or `null`. */
      re: number | null;
    };


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
  /** Calls this person holds live in another tab of this browser (`moveHere()` takes
   *  one), sorted by id. */
  readonly elsewhere: readonly CallElsewhere[];
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
