// The `holdfast` npm package: a hand-written facade over the wasm client. This file only
// re-exports; each behaviour lives in its own module:
//   types.ts      public types (wire types from generated/protocol.ts)
//   errors.ts     HoldfastError
//   client.ts     HoldfastClient: commands, events, snapshots
//   page.ts       connect() / getClient(): one client per page
//   locks.ts      Web Locks: which calls another tab holds (`snapshot.elsewhere`)
//   emitter.ts    the event emitter of the client and of media
// Media (attachMedia(): the call's RTCPeerConnection, src/media/) is its own entry point,
// `holdfast/media`, so a page that brings its own media (or none) does not download it.

export type {
  Call,
  CallElsewhere,
  CallOptions,
  CallPhase,
  ClientErrorCode,
  ConnectOptions,
  ConnectionFailure,
  ConnectionState,
  EndReason,
  ErrorCode,
  EventOf,
  EventType,
  FailureReason,
  HoldfastEvent,
  LinkState,
  Peer,
  PresenceEntry,
  PresenceStatus,
  RejoinOffer,
  RejoinWithdrawn,
  Snapshot,
} from './types.js';
export { HoldfastError } from './errors.js';
export type { HoldfastErrorCode, LocalErrorCode } from './errors.js';
export { HoldfastClient } from './client.js';
export { connect, getClient, onClientChange, preloadWasm } from './page.js';
