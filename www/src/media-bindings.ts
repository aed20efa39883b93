// Framework-neutral media of a call, shared by `useMedia()` in `holdfast/react` and
// `holdfast/vue` (not a public entry point). One session per call and page, however many
// components show it: the first user opens the camera and microphone and attaches them
// with `attachMedia()`; when the last one lets go (or the call ends) the media closes and
// the tracks this module opened are stopped. Letting go waits one task, so StrictMode's
// unmount-and-mount and a route change that remounts the same call keep the session.

import {
  HoldfastError,
  attachMedia,
  getClient,
  type CallMedia,
  type MediaOptions,
  type MediaState,
} from './index.js';

/** Where a view's media is: a `MediaState`, or `none` while there is no active call. */
export type MediaViewState = MediaState | 'none';

/** What to send, and how the media runs. Read when a call's media starts. */
export interface UseMediaOptions {
  /** Send audio (or these constraints); default `true`. */
  audio?: boolean | MediaTrackConstraints;
  /** Send video (or these constraints); default `true`. */
  video?: boolean | MediaTrackConstraints;
  /** Passed to `attachMedia()` (ICE servers, restart timings, …). */
  media?: MediaOptions;
}

/** A call's media as a view shows it. A new object whenever something changes. */
export interface MediaSnapshot {
  /** The call whose media this is (`null`: no active call). */
  readonly call: string | null;
  /** `none` without an active call, else the media's state. */
  readonly state: MediaViewState;
  /** The camera and microphone being sent (`null` until they opened, or if refused). */
  readonly localStream: MediaStream | null;
  /** The other participant's audio and video, once a track arrived. */
  readonly remoteStream: MediaStream | null;
  /** The microphone is muted (its track is disabled: the other side hears silence). */
  readonly audioMuted: boolean;
  /** The camera is off (its track is disabled: the other side sees black). */
  readonly videoMuted: boolean;
  /** The cameras the browser lists (labels once permission was given). */
  readonly cameras: readonly MediaDeviceInfo[];
  /** The microphones the browser lists. */
  readonly microphones: readonly MediaDeviceInfo[];
  /** The `deviceId` of the camera being sent. */
  readonly camera: string | null;
  /** The `deviceId` of the microphone being sent. */
  readonly microphone: string | null;
  /** The last failure (`media-unavailable`: no camera or microphone, or permission
   *  refused, so the call only receives; `media-failed`: a negotiation step failed). */
  readonly error: HoldfastError | null;
}

/** What a media view can do. Each acts on the view's current call (a no-op without one,
 *  except the device choices, which reject with `unknown-call`). */
export interface MediaControls {
  /** Restarts ICE now (a "Reconnect media" button). Never ends the call. */
  reconnectMedia(): void;
  /** Mutes or unmutes the microphone. */
  setAudioMuted(muted: boolean): void;
  /** Turns the camera off or on. */
  setVideoMuted(muted: boolean): void;
  /** Flips `audioMuted`. */
  toggleAudio(): void;
  /** Flips `videoMuted`. */
  toggleVideo(): void;
  /** Sends this camera instead (a `deviceId` from `cameras`). Rejects with a
   *  `HoldfastError` (`media-unavailable`, `unknown-call`) and keeps the old one. */
  selectCamera(deviceId: string): Promise<void>;
  /** Sends this microphone instead (a `deviceId` from `microphones`). */
  selectMicrophone(deviceId: string): Promise<void>;
}

const NO_DEVICES: readonly MediaDeviceInfo[] = Object.freeze([]);

/** The snapshot of a view without an active call. */
export const NO_MEDIA: MediaSnapshot = Object.freeze({
  call: null,
  state: 'none',
  localStream: null,
  remoteStream: null,
  audioMuted: false,
  videoMuted: false,
  cameras: NO_DEVICES,
  microphones: NO_DEVICES,
  camera: null,
  microphone: null,
  error: null,
});

function unavailable(e: unknown): HoldfastError {
  const why = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return new HoldfastError('media-unavailable', `could not open the camera or microphone (${why})`);
}

function mediaDevices(): MediaDevices | undefined {
  return (globalThis.navigator as Navigator | undefined)?.mediaDevices;
}

function constraint(base: boolean | MediaTrackConstraints | undefined, deviceId?: string): boolean | MediaTrackConstraints {
  if (deviceId) return { ...(typeof base === 'object' ? base : {}), deviceId: { exact: deviceId } };
  return base ?? true;
}

/** One call's media on this page, shared by every view of it. */
class MediaSession {
  snapshot: MediaSnapshot;
  private listeners = new Set<() => void>();
  private users = 0;
  private media: CallMedia | null = null;
  /** The stream this session opened (its tracks are this session's to stop). */
  private own: MediaStream | null = null;
  private offs: (() => void)[] = [];
  private closed = false;
  private releaseTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(readonly call: string, private options: UseMediaOptions) {
    this.snapshot = Object.freeze({ ...NO_MEDIA, call, state: 'new' });
    this.start();
  }

  private set(patch: Partial<MediaSnapshot>): void {
    this.snapshot = Object.freeze({ ...this.snapshot, ...patch });
    for (const l of [...this.listeners]) l();
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  retain(): void {
    this.users++;
    if (this.releaseTimer) clearTimeout(this.releaseTimer);
    this.releaseTimer = null;
  }

  release(): void {
    this.users--;
    if (this.users > 0 || this.releaseTimer) return;
    this.releaseTimer = setTimeout(() => {
      this.releaseTimer = null;
      if (this.users <= 0) this.close();
    }, 0);
  }

  private start(): void {
    const client = getClient();
    if (!client) {
      this.fail(new HoldfastError('not-connected', 'connect() has not finished (or the page logged out)'));
      return;
    }
    const { audio = true, video = true } = this.options;
    const opening = this.open({ audio, video }).then(
      (stream) => {
        if (this.closed) {
          stopAll(stream);
          return null;
        }
        this.adopt(stream);
        return stream;
      },
      (e: unknown) => {
        // Nothing to send: the call still receives.
        if (!this.closed) this.set({ error: unavailable(e) });
        return null;
      },
    );
    try {
      this.media = attachMedia(client, this.call, opening, this.options.media);
    } catch (e) {
      this.fail(e instanceof HoldfastError ? e : new HoldfastError('internal', String(e)));
      return;
    }
    const m = this.media;
    this.offs.push(
      m.on('media-state', (e) => this.set({ state: e.state })),
      m.on('remote-stream', (e) => this.set({ remoteStream: e.stream })),
      m.on('media-error', (e) => this.set({ error: new HoldfastError('media-failed', e.message) })),
      m.on('media-closed', () => this.close()),
    );
    this.set({ state: m.state, remoteStream: m.remoteStream });
    const devices = mediaDevices();
    if (devices?.addEventListener) {
      const changed = () => void this.listDevices();
      devices.addEventListener('devicechange', changed);
      this.offs.push(() => devices.removeEventListener('devicechange', changed));
    }
  }

  /** The media could not start: the session is closed from the outset. */
  private fail(error: HoldfastError): void {
    this.closed = true;
    this.set({ error, state: 'closed' });
  }

  private async open(constraints: MediaStreamConstraints): Promise<MediaStream> {
    const devices = mediaDevices();
    if (!devices?.getUserMedia) throw new Error('this page has no navigator.mediaDevices (not a secure context?)');
    return devices.getUserMedia(constraints);
  }

  /** Makes `stream` the one being sent, with the mute state applied. */
  private adopt(stream: MediaStream): void {
    const old = this.own;
    this.own = stream;
    for (const t of stream.getAudioTracks()) t.enabled = !this.snapshot.audioMuted;
    for (const t of stream.getVideoTracks()) t.enabled = !this.snapshot.videoMuted;
    this.set({
      localStream: stream,
      camera: stream.getVideoTracks()[0]?.getSettings().deviceId ?? null,
      microphone: stream.getAudioTracks()[0]?.getSettings().deviceId ?? null,
    });
    if (old && old !== stream) {
      // Tracks the new stream kept go on; the replaced ones stop.
      const kept = new Set(stream.getTracks());
      for (const t of old.getTracks()) if (!kept.has(t)) t.stop();
    }
    void this.listDevices();
  }

  private async listDevices(): Promise<void> {
    const devices = mediaDevices();
    if (!devices?.enumerateDevices) return;
    try {
      const all = await devices.enumerateDevices();
      if (this.closed) return;
      this.set({
        cameras: Object.freeze(all.filter((d) => d.kind === 'videoinput')),
        microphones: Object.freeze(all.filter((d) => d.kind === 'audioinput')),
      });
    } catch {
      // Listing devices is a nicety: the call goes on without it.
    }
  }

  setMuted(kind: 'audio' | 'video', muted: boolean): void {
    if (this.closed) return;
    const tracks = kind === 'audio' ? this.own?.getAudioTracks() : this.own?.getVideoTracks();
    for (const t of tracks ?? []) t.enabled = !muted;
    this.set(kind === 'audio' ? { audioMuted: muted } : { videoMuted: muted });
  }

  /** Opens `deviceId` for `kind` and sends it instead of the current track. */
  async select(kind: 'audio' | 'video', deviceId: string): Promise<void> {
    if (this.closed || !this.media) throw new HoldfastError('unknown-call', `the media of call ${this.call} is closed`);
    let fresh: MediaStream;
    try {
      fresh = await this.open(kind === 'audio'
        ? { audio: constraint(this.options.audio, deviceId) }
        : { video: constraint(this.options.video, deviceId) });
    } catch (e) {
      throw unavailable(e);
    }
    if (this.closed || !this.media) {
      stopAll(fresh);
      throw new HoldfastError('unknown-call', `the media of call ${this.call} closed meanwhile`);
    }
    const keep = (kind === 'audio' ? this.own?.getVideoTracks() : this.own?.getAudioTracks()) ?? [];
    const next = new MediaStream([...keep, ...fresh.getTracks()]);
    // attachMedia() on an attached call swaps the stream (replaceTrack, no renegotiation
    // for a track of a kind already sent).
    attachMedia(getClient()!, this.call, next, this.options.media);
    this.adopt(next);
  }

  reconnect(): void {
    this.media?.reconnect();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (sessions.get(this.call) === this) sessions.delete(this.call);
    if (this.releaseTimer) clearTimeout(this.releaseTimer);
    for (const off of this.offs.splice(0)) off();
    const m = this.media;
    this.media = null;
    if (m && m.state !== 'closed') m.close();
    stopAll(this.own);
    this.own = null;
    this.set({ state: 'closed', localStream: null });
  }
}

function stopAll(stream: MediaStream | null): void {
  for (const t of stream?.getTracks() ?? []) t.stop();
}

const KEY = Symbol.for('holdfast.media-sessions');
const g = globalThis as unknown as Record<symbol, Map<string, MediaSession>>;
const sessions: Map<string, MediaSession> = (g[KEY] ??= new Map());

/** A view's hold on the media of `call`: its snapshot, a subscription, the controls,
 *  and `release()`, which the view calls exactly once when it stops showing the call. */
export interface MediaHold {
  readonly call: string;
  snapshot(): MediaSnapshot;
  subscribe(listener: () => void): () => void;
  release(): void;
}

/** Takes a hold on the media of the active call `call`, starting it if needed. */
export function holdMedia(call: string, options: UseMediaOptions): MediaHold {
  let session = sessions.get(call);
  if (!session) {
    session = new MediaSession(call, options);
    // A session that failed to start is already closed: do not keep it.
    if (session.snapshot.state !== 'closed') sessions.set(call, session);
  }
  const s = session;
  s.retain();
  let released = false;
  return {
    call,
    snapshot: () => s.snapshot,
    subscribe: (l) => s.subscribe(l),
    release: () => {
      if (released) return;
      released = true;
      s.release();
    },
  };
}

/** The controls of whichever call `call()` names when they run. */
export function mediaControls(call: () => string | null): MediaControls {
  const session = () => {
    const id = call();
    return id ? sessions.get(id) ?? null : null;
  };
  const muted = (kind: 'audio' | 'video') => {
    const s = session()?.snapshot;
    return kind === 'audio' ? !!s?.audioMuted : !!s?.videoMuted;
  };
  const select = async (kind: 'audio' | 'video', deviceId: string): Promise<void> => {
    const s = session();
    if (!s) throw new HoldfastError('unknown-call', 'there is no call with media to act on');
    return s.select(kind, deviceId);
  };
  return {
    reconnectMedia: () => session()?.reconnect(),
    setAudioMuted: (m) => session()?.setMuted('audio', m),
    setVideoMuted: (m) => session()?.setMuted('video', m),
    toggleAudio: () => session()?.setMuted('audio', !muted('audio')),
    toggleVideo: () => session()?.setMuted('video', !muted('video')),
    selectCamera: (id) => select('video', id),
    selectMicrophone: (id) => select('audio', id),
  };
}
