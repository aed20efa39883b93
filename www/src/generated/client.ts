// Generated from the client engine (src/engine/client) by ts-rs (src/protocol/ts_bindings.rs). Do not edit:
// change the Rust types, then run `npm run gen:protocol` in www/.

import type { EndReason, ErrorCode, LinkState, Peer, PresenceEntry } from './protocol.js';

/**
 * The connection state the app sees.
 */
export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "offline" | "gave-up" | "auth-failed" | "logged-out";

/**
 * This page's role and view of a call.
 */
export type CallPhase = "outgoing" | "incoming" | "active";

/**
 * A call in this page's active-call map. Times are epoch milliseconds.
 */
export type Call = { 
/**
 * The call's id (the same at both ends).
 */
id: string, 
/**
 * `outgoing`: ringing at the peer; `incoming`: ringing here; `active`: connected.
 */
phase: CallPhase, 
/**
 * The other person.
 */
peer: Peer, 
/**
 * The app's call kind from the invite (it picks the grace window), or `null`.
 */
kind: string | null, 
/**
 * The app's JSON data from the invite (`null` when none was given).
 */
metadata: unknown, 
/**
 * How long either side may be away before the call ends `reconnect-failed`.
 */
graceMs: number, 
/**
 * The peer's link as last reported.
 */
peerLink: LinkState, 
/**
 * Local epoch ms when the peer's grace window closes (while reconnecting).
 */
peerDeadline: number | null, 
/**
 * Local epoch ms when a ringing call ends unanswered.
 */
ringDeadline: number | null, };

/**
 * A rejoin the app may offer to the user.
 */
export type RejoinOffer = { 
/**
 * The call's id.
 */
call: string, 
/**
 * The other person, who is waiting.
 */
peer: Peer, 
/**
 * The app's call kind, or `null`.
 */
kind: string | null, 
/**
 * When the window closes (local epoch ms, from the server's deadline).
 */
deadline: number, 
/**
 * Milliseconds left to rejoin.
 */
remainingMs: number, };

/**
 * Why a rejoin offer went away without the user choosing.
 */
export type RejoinWithdrawn = "call-ended" | "held-elsewhere" | "declined" | "denied";

/**
 * Why a connection attempt failed.
 */
export type FailureReason = "unreachable" | "not-found" | "auth-failed" | "version" | "timeout" | "refused";

/**
 * One failed connection attempt, as the app sees it (the `connection-failed` event and
 * the snapshot's `lastFailure`). Times are local epoch milliseconds.
 */
export type ConnectionFailure = { 
/**
 * Why it failed (see [`FailureReason`]).
 */
reason: FailureReason, 
/**
 * The server's error code, when it gave one (`auth-failed`, `token-expired`,
 * `unsupported-version`, `too-many-sessions`, …).
 */
code: ErrorCode | null, 
/**
 * What happened, for people (not for matching: use `reason` and `code`).
 */
message: string, 
/**
 * Which attempt failed (1 for the first of a streak).
 */
attempt: number, 
/**
 * When it failed.
 */
at: number, 
/**
 * Whether the client will try again by itself (false after `auth-failed`,
 * `version`, or when it gave up; true while offline: it tries when back online).
 */
willRetry: boolean, 
/**
 * When the next attempt goes, if one is scheduled.
 */
nextAttemptAt: number | null, };

/**
 * Something the app should know. Serialises to the JS event objects
 * (`{ type: "call-ended", call, reason }`, fields in camelCase).
 */
export type HoldfastEvent = { "type": "connecting", attempt: number, } | { "type": "reconnecting", attempt: number, } | { "type": "connected", session: string, user: Peer, } | { "type": "resumed", recovered: boolean, } | { "type": "disconnected", nextAttemptAt: number | null, } | { "type": "session-lost", unconfirmed: number, } | { "type": "connection-failed" } & ConnectionFailure | { "type": "offline" } | { "type": "gave-up" } | { "type": "auth-failed", code: ErrorCode, message: string, } | { "type": "logged-out" } | { "type": "presence", entries: Array<PresenceEntry>, } | { "type": "presence-changed", entry: PresenceEntry, } | { "type": "outgoing-call", re: number, call: Call, existing: boolean, } | { "type": "incoming-call", call: Call, } | { "type": "call-started", call: Call, rejoined: boolean, } | { "type": "participant-disconnected", call: string, user: string, deadline: number, remainingMs: number, } | { "type": "participant-reconnected", call: string, user: string, } | { "type": "call-ended", call: string, reason: EndReason, peer: Peer, } | { "type": "call-moved", call: string, } | { "type": "signal", call: string, from: string, payload: unknown, } | { "type": "rejoin-available", offer: RejoinOffer, } | { "type": "rejoin-countdown", call: string, remainingMs: number, } | { "type": "rejoin-expired", call: string, } | { "type": "rejoin-withdrawn", call: string, why: RejoinWithdrawn, } | { "type": "error", code: ErrorCode, message: string, re: number | null, };

/**
 * What the browser driver hands to JavaScript as the client's state (the facade adds
 * `pendingRejoin` and freezes it).
 */
export type ClientSnapshot = { 
/**
 * The connection's state.
 */
state: ConnectionState, 
/**
 * Who this page is, once connected.
 */
user: Peer | null, 
/**
 * The session's id, once connected.
 */
session: string | null, 
/**
 * Epoch ms of the next connection attempt while reconnecting.
 */
nextAttemptAt: number | null, 
/**
 * This page's calls: ringing and active.
 */
calls: Array<Call>, 
/**
 * Who is online (with `presence: true`).
 */
presence: Array<PresenceEntry>, 
/**
 * Calls this page may rejoin, soonest deadline first.
 */
pendingRejoins: Array<RejoinOffer>, 
/**
 * The last failed connection attempt (as in its `connection-failed` event), until
 * the next welcome.
 */
lastFailure: ConnectionFailure | null, 
/**
 * When the snapshot was taken (epoch ms).
 */
now: number, };

/**
 * Why the client engine refused a command (nothing was sent).
 */
export type ClientErrorCode = "already-in-call" | "buffer-full" | "frame-too-large" | "invalid-argument" | "invalid-state" | "invite-pending" | "logged-out" | "no-rejoin" | "unknown-call";
