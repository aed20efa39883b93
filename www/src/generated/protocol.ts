// Generated from src/protocol.rs by ts-rs (src/protocol/ts_bindings.rs). Do not edit:
// change the Rust types, then run `npm run gen:protocol` in www/.

/**
 * Frames a client sends. Tagged by `"t"`.
 */
export type ClientFrame = { "t": "hello" } & Hello | { "t": "msg", 
/**
 * This message's sequence number (1-based, consecutive within the session).
 */
seq: number, 
/**
 * Highest server sequence the client has handled.
 */
ack: number, 
/**
 * The message.
 */
body: ClientMsg, } | { "t": "ack", ack: number, } | { "t": "ping", ack: number, } | { "t": "bye" } | { "t": "leave" };

/**
 * The opening frame of a socket.
 */
export type Hello = { 
/**
 * Must equal [`PROTOCOL_VERSION`].
 */
v: number, 
/**
 * The app backend's signed token (HS256 JWT with `sub`, `name`, `exp`), or a bare
 * identity when the server runs in `--dev` mode. `exp` is checked only when a
 * session is created, never at resume: a user mid-call is not cut off because a
 * token expired during a Wi-Fi drop.
 */
token: string, 
/**
 * Present to resume an existing session.
 */
resume?: Resume | null, 
/**
 * Receive presence (who is online) for this session.
 */
presence: boolean, 
/**
 * Accept incoming calls while already in a call (call waiting). Otherwise a second
 * caller gets `busy`.
 */
call_waiting: boolean, 
/**
 * The browser tab's own id (kept in its sessionStorage, so it outlives a reload),
 * at most [`MAX_TAB_ID_LEN`] bytes. A new session from a tab supersedes that tab's
 * detached session (a reloaded page whose `leave` was lost) instead of leaving it
 * to the resume window. A live session with the same id (a duplicated tab copies
 * sessionStorage) is left alone.
 */
tab?: string | null, };

/**
 * Proof that the client owns a session it wants to resume.
 */
export type Resume = { 
/**
 * The session to resume.
 */
session: string, 
/**
 * The resume secret from the most recent welcome of that session.
 */
secret: string, 
/**
 * Highest server sequence the client has handled.
 */
last_seq: number, };

/**
 * Sequenced application messages from the client. Tagged by `"type"`.
 */
export type ClientMsg = { "type": "invite", peer: string, 
/**
 * Call kind: selects the grace window (e.g. `support`, `interpreter`).
 */
kind?: string | null, 
/**
 * Opaque app data shown to the callee (at most 2 KiB serialised).
 */
metadata?: JsonValue | null, } | { "type": "accept", call: string, } | { "type": "decline", call: string, busy: boolean, } | { "type": "cancel", call: string, } | { "type": "hangup", call: string, } | { "type": "signal", call: string, payload: JsonValue, } | { "type": "rejoin", call: string, token: string, } | { "type": "set-status", status: PresenceStatus, };

/**
 * Frames the server sends. Tagged by `"t"`.
 */
export type ServerFrame = { "t": "welcome" } & Welcome | { "t": "msg", seq: number, 
/**
 * Highest client sequence the server has handled.
 */
ack: number, body: ServerMsg, } | { "t": "ack", ack: number, } | { "t": "pong", ack: number, } | { "t": "error" } & ErrorBody | { "t": "bye" };

/**
 * Opens or resumes a session.
 */
export type Welcome = { session: string, 
/**
 * The resume secret for the *next* resume (rotated on every welcome).
 */
secret: string, 
/**
 * True when the session named in the hello was resumed; false when this is a new
 * session (then `snapshot` is present).
 */
resumed: boolean, 
/**
 * Highest client sequence the server has handled in this session (0 when new).
 */
last_seq: number, 
/**
 * The authenticated user.
 */
user: Peer, 
/**
 * Timers the client must use.
 */
timers: Timers, 
/**
 * Limits the server enforces.
 */
limits: Limits, 
/**
 * Server clock (epoch ms) when the welcome was sent, to translate deadlines.
 */
now: number, 
/**
 * Full state on a non-resumed welcome.
 */
snapshot?: Snapshot | null, };

/**
 * Timers announced in the welcome. Both sides use them so they agree.
 */
export type Timers = { heartbeat_interval_ms: number, heartbeat_timeout_ms: number, 
/**
 * How long a detached session can be resumed.
 */
resume_window_ms: number, 
/**
 * Grace window of calls without a kind.
 */
default_grace_ms: number, 
/**
 * Grace windows by call kind.
 */
grace_ms: { [key in string]: number }, 
/**
 * Unanswered calls end `no-answer` after this long.
 */
ring_timeout_ms: number, 
/**
 * A ringing call whose caller's link dropped is withdrawn after this long.
 */
ring_detach_grace_ms: number, };

/**
 * Limits announced in the welcome.
 */
export type Limits = { max_frame_bytes: number, 
/**
 * Sustained messages per second per session (bursts allowed up to `burst`).
 */
max_msgs_per_sec: number, burst: number, };

/**
 * Everything a client needs after a non-resumed welcome.
 */
export type Snapshot = { 
/**
 * The user's calls that have not ended, including calls held by other sessions
 * of the same identity (`held_here: false`) and calls whose participant slot is
 * waiting for a rejoin.
 */
calls: Array<CallInfo>, 
/**
 * Who is online (only when the hello asked for presence).
 */
presence: Array<PresenceEntry>, 
/**
 * Calls of this user that ended recently (within the longest grace window), so a
 * page that kept a rejoin record learns why the call is gone.
 */
ended: Array<EndedCall>, };

/**
 * A call that has ended, and why.
 */
export type EndedCall = { call: string, reason: EndReason, };

/**
 * An identity with its display name.
 */
export type Peer = { 
/**
 * The stable identity (the token's `sub`).
 */
id: string, 
/**
 * The display name (the token's `name`).
 */
name: string, };

/**
 * The state of a call as the server sees it.
 */
export type CallState = "ringing" | "active" | "ended";

/**
 * The link state of one participant.
 */
export type LinkState = "connected" | "reconnecting" | "pending";

/**
 * One side of a call.
 */
export type ParticipantInfo = { user: Peer, link: LinkState, 
/**
 * Server epoch ms when a `reconnecting` participant's window closes.
 */
deadline?: number | null, };

/**
 * A call as described to a participant.
 */
export type CallInfo = { id: string, kind: string | null, state: CallState, caller: ParticipantInfo, callee: ParticipantInfo, 
/**
 * The grace window of this call.
 */
grace_ms: number, 
/**
 * Server epoch ms when a ringing call ends `no-answer`.
 */
ring_deadline?: number | null, metadata?: JsonValue | null, 
/**
 * True when the receiving session holds this call (it is the caller's session, or
 * the callee's session that accepted). False for a call held by another session of
 * the same identity, or a slot waiting for a rejoin.
 */
held_here: boolean, };

/**
 * Presence status.
 */
export type PresenceStatus = "available" | "busy" | "offline";

/**
 * Who is online.
 */
export type PresenceEntry = { 
/**
 * Who.
 */
user: Peer, 
/**
 * Whether they are online, and whether in a call.
 */
status: PresenceStatus, };

/**
 * Why a call ended. Every end reaches both participants with the same reason.
 */
export type EndReason = "hangup" | "declined" | "cancelled" | "no-answer" | "busy" | "reconnect-failed" | "server-shutdown" | "server-lost";

/**
 * Sequenced application messages from the server. Tagged by `"type"`.
 */
export type ServerMsg = { "type": "call-created", re: number, call: CallInfo, existing: boolean, } | { "type": "incoming-call", call: CallInfo, } | { "type": "call-started", call: CallInfo, rejoin_token: string, 
/**
 * True when this is the answer to a rejoin.
 */
rejoined: boolean, } | { "type": "participant-disconnected", call: string, user: string, 
/**
 * Server epoch ms.
 */
deadline: number, 
/**
 * Milliseconds from this message's creation to the deadline.
 */
remaining_ms: number, } | { "type": "participant-reconnected", call: string, user: string, } | { "type": "call-ended", call: string, reason: EndReason, } | { "type": "call-moved", call: string, } | { "type": "signal", call: string, from: string, payload: JsonValue, } | { "type": "presence", entries: Array<PresenceEntry>, } | { "type": "presence-changed", entry: PresenceEntry, } | { "type": "error" } & ErrorBody;

/**
 * An error with a stable code.
 */
export type ErrorBody = { code: ErrorCode, message: string, 
/**
 * The client seq this answers, if any.
 */
re?: number | null, 
/**
 * The socket will be closed.
 */
fatal: boolean, };

/**
 * Stable machine-readable error codes.
 */
export type ErrorCode = "bad-frame" | "frame-too-large" | "unknown-message" | "unsupported-version" | "not-authenticated" | "already-authenticated" | "auth-failed" | "token-expired" | "too-many-sessions" | "rate-limited" | "bad-sequence" | "self-call" | "peer-offline" | "unknown-call" | "not-participant" | "invalid-state" | "rejoin-denied" | "held-elsewhere" | "invalid-argument" | "superseded" | "server-shutdown" | "server-restarting" | "hello-timeout" | "session-lost" | "timeout";

export type JsonValue = number | string | boolean | Array<JsonValue> | { [key in string]: JsonValue } | null;
