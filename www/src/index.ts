// The `holdfast` npm package: a hand-written facade over the wasm client. This file only
// re-exports; each behaviour lives in its own module:
//   types.ts      public types (wire types from generated/protocol.ts)
//   errors.ts     HoldfastError
//   client.ts     HoldfastClient: commands, events, snapshots
//   page.ts       connect() / getClient(): one client per page
//   locks.ts      Web Locks: which calls another tab holds (`snapshot.elsewhere`)
//   emitter.ts    the event emitter of the client and of media
//   media/        attachMedia(): the call's RTCPeerConnection

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
export { connect, getClient, onClientChange } from './page.js';
export * from './media/index.js';
