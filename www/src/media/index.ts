// Media that survives: the RTCPeerConnection of a call, managed for the app.
//   negotiation.ts  perfect negotiation over the call's relay
//   health.ts       when to restart ICE, with backoff (a pure state machine)
//   stats.ts        getStats() polling and byte counters
//   call-media.ts   CallMedia: one call's media, tying these together
// This file is the entry: attachMedia(), getMedia(), reconnectMedia().

import type { HoldfastClient } from '../client.js';
import { HoldfastError } from '../errors.js';
import { CallMedia, registry } from './call-media.js';
import type { MediaOptions } from './types.js';

export { CallMedia } from './call-media.js';
export type {
  MediaCloseReason,
  MediaEvent,
  MediaEventOf,
  MediaEventType,
  MediaOptions,
  MediaRestartReason,
  MediaState,
  MediaStats,
} from './types.js';

/** Lets the client manage the peer connection of `callId`: call it when the call
 *  starts (`call-started`, also with `rejoined: true` on a reloaded page). `stream` is
 *  what to send (a promise is fine, e.g. `getUserMedia()`; null receives only). Calling
 *  it again for the same call returns the same object (swapping in a new stream). */
export function attachMedia(
  client: HoldfastClient,
  callId: string,
  stream: MediaStream | Promise<MediaStream | null> | null,
  options: MediaOptions = {},
): CallMedia {
  let media = registry.get(callId);
  if (!media) {
    const snap = client.getSnapshot();
    const me = snap.user?.id;
    const call = snap.calls.find((c) => c.id === callId);
    if (!me || !call) {
      throw new HoldfastError('unknown-call', `no call ${callId} on this page`);
    }
    media = new CallMedia(client, callId, me > call.peer.id, options);
    registry.set(callId, media);
  }
  const m = media;
  if (stream instanceof Promise) {
    stream.then(
      (s) => {
        if (m.state === 'closed') return;
        m.setLocalStream(s);
        m.maybeStart();
      },
      () => {
        if (m.state === 'closed') return;
        m.setLocalStream(null);
        m.maybeStart();
      },
    );
  } else {
    m.setLocalStream(stream);
    m.maybeStart();
  }
  return m;
}

/** The media of `callId`, if attached on this page. */
export function getMedia(callId: string): CallMedia | null {
  return registry.get(callId) ?? null;
}

/** Restarts ICE of one call (or of every call with media on this page). */
export function reconnectMedia(callId?: string): void {
  for (const [id, m] of registry) if (callId === undefined || id === callId) m.reconnect();
}
