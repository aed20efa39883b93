// The public types of a call's media.

/** Where a call's media is. */
export type MediaState =
  /** Waiting for the local stream, or for the call to become active. */
  | 'new'
  /** First negotiation and ICE checks. */
  | 'connecting'
  /** ICE connected. */
  | 'connected'
  /** The path broke (or a restart was asked for); restarting ICE until bytes flow. */
  | 'reconnecting'
  /** The call ended or moved, or `close()` was called. */
  | 'closed';

/** Why an ICE restart (or a fresh connection) was started. */
export type MediaRestartReason =
  | 'ice-failed'
  | 'stalled'
  | 'signaling-resumed'
  | 'peer-reconnected'
  /** The polite peer asked the impolite one to restart. */
  | 'peer-request'
  | 'peer-away'
  | 'peer-rejoined'
  | 'rejoined'
  | 'manual';

export type MediaCloseReason = 'call-ended' | 'call-moved' | 'logged-out' | 'closed';

/** Every media event, discriminated by `type`. */
export type MediaEvent =
  | { type: 'media-state'; call: string; state: MediaState }
  /** The remote stream (the same object per peer connection; a fresh negotiation
   *  after a rejoin gives a new one). Put it in a `<video>`'s `srcObject`. */
  | { type: 'remote-stream'; call: string; stream: MediaStream }
  | { type: 'media-reconnecting'; call: string; reason: MediaRestartReason; attempt: number }
  /** Bytes flow again. `afterMs`: time since `media-reconnecting`. */
  | { type: 'media-restored'; call: string; afterMs: number; attempts: number }
  | { type: 'media-closed'; call: string; reason: MediaCloseReason }
  | { type: 'media-error'; call: string; message: string };

export type MediaEventType = MediaEvent['type'];
export type MediaEventOf<K extends MediaEventType> = Extract<MediaEvent, { type: K }>;

export interface MediaOptions {
  /** Passed to `new RTCPeerConnection()` (ICE/TURN servers, transport policy, …). */
  rtcConfig?: RTCConfiguration;
  /** No inbound bytes for this long while ICE is `disconnected` → ICE restart. */
  stallMs?: number;
  /** Backoff between two ICE restarts: the cap starts here and doubles per attempt;
   *  each delay is half the cap plus a random share of the other half (equal jitter,
   *  the formula of the client engine's reconnects). */
  backoffBaseMs?: number;
  /** Largest cap of the delay between two ICE restarts. */
  backoffMaxMs?: number;
  /** How often stats are sampled. */
  monitorMs?: number;
}

/** Byte counters of the current peer connection (from `getStats()`). */
export interface MediaStats {
  /** Sum of `inbound-rtp` `bytesReceived`. */
  bytesReceived: number;
  /** Sum of `outbound-rtp` `bytesSent`. */
  bytesSent: number;
  audioBytesReceived: number;
  videoBytesReceived: number;
  /** `inbound-rtp` video frames decoded. */
  framesDecoded: number;
  iceConnectionState: RTCIceConnectionState;
  connectionState: RTCPeerConnectionState;
  signalingState: RTCSignalingState;
}
