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

/** Why a call's media closed: the call ended or moved, `logout()`, or `close()`. */
export type MediaCloseReason = 'call-ended' | 'call-moved' | 'logged-out' | 'closed';

/** Every media event, discriminated by `type`. */
export type MediaEvent =
  | {
      /** The media's state changed. */
      type: 'media-state';
      /** The call's id. */
      call: string;
      /** The new state. */
      state: MediaState;
    }
  | {
      /** The remote stream (the same object per peer connection; a fresh negotiation
       *  after a rejoin gives a new one). Put it in a `<video>`'s `srcObject`. */
      type: 'remote-stream';
      /** The call's id. */
      call: string;
      /** The other participant's audio and video. */
      stream: MediaStream;
    }
  | {
      /** The path broke: an ICE restart (or a fresh connection) started. */
      type: 'media-reconnecting';
      /** The call's id. */
      call: string;
      /** What started it. */
      reason: MediaRestartReason;
      /** 1 for the first restart of this outage, counting up. */
      attempt: number;
    }
  | {
      /** Bytes flow again. */
      type: 'media-restored';
      /** The call's id. */
      call: string;
      /** Milliseconds since `media-reconnecting`. */
      afterMs: number;
      /** How many restarts it took. */
      attempts: number;
    }
  | {
      /** The media closed for good (the call is over, moved, or `close()` was called). */
      type: 'media-closed';
      /** The call's id. */
      call: string;
      /** Why. */
      reason: MediaCloseReason;
    }
  | {
      /** Something failed that the media cannot recover from by itself (e.g. a rejected
       *  offer); the call goes on. */
      type: 'media-error';
      /** The call's id. */
      call: string;
      /** What failed, for logs. */
      message: string;
    };

/** The name of every media event. */
export type MediaEventType = MediaEvent['type'];
/** The media event whose `type` is `K`. */
export type MediaEventOf<K extends MediaEventType> = Extract<MediaEvent, {
  /** The event's name. */
  type: K;
}>;

/** The options of `attachMedia()`. */
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
  /** `bytesReceived` of the audio `inbound-rtp` streams. */
  audioBytesReceived: number;
  /** `bytesReceived` of the video `inbound-rtp` streams. */
  videoBytesReceived: number;
  /** `inbound-rtp` video frames decoded. */
  framesDecoded: number;
  /** The peer connection's `iceConnectionState`. */
  iceConnectionState: RTCIceConnectionState;
  /** The peer connection's `connectionState`. */
  connectionState: RTCPeerConnectionState;
  /** The peer connection's `signalingState`. */
  signalingState: RTCSignalingState;
}
