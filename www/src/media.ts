// Media that survives: the RTCPeerConnection of a call, managed for the app.
//
// - Perfect negotiation over the call's signaling relay. The polite peer is chosen
//   deterministically: the participant with the lexicographically greater user id.
// - Never torn down while the call lives. On ICE `failed`, or when no inbound bytes
//   arrive for `stallMs` while ICE is `disconnected`, the ICE agent is restarted, with
//   exponential backoff between attempts. Every signaling resume restarts ICE too (a
//   network switch usually breaks both); `reconnect()` / `reconnectMedia()` restart by
//   hand.
// - A page that rejoins a call (after a reload, crash or from another tab) builds a
//   fresh peer connection; the other side sees a new peer-connection generation in the
//   first offer and renegotiates a fresh connection of its own.
// - Payloads on the relay are namespaced (`{ holdfast: 'media', … }`); apps may send
//   their own payloads through `client.send()` alongside, and media ignores them.

import type { Call, HoldfastClient } from './index.js';

// ------------------------------------------------------------------ types

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
  /** First delay between two ICE restarts; doubles per attempt. */
  backoffBaseMs?: number;
  /** Longest delay between two ICE restarts. */
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

/** What media puts on the relay. Anything else on the relay is the app's. */
interface Wire {
  holdfast: 'media';
  v: 1;
  /** The sender's peer-connection generation. */
  from: string;
  /** The generation this is meant for (null: whoever is there). */
  to: string | null;
  description?: RTCSessionDescriptionInit;
  candidate?: RTCIceCandidateInit;
  /** A fresh polite peer connection: "offer me". */
  hello?: true;
  /** From the polite peer: "restart ICE, please". */
  restart?: true;
}

function isWire(p: unknown): p is Wire {
  const w = p as Partial<Wire> | null;
  return !!w && typeof w === 'object' && w.holdfast === 'media' && w.v === 1 && typeof w.from === 'string';
}

const DEFAULTS = { stallMs: 3000, backoffBaseMs: 1000, backoffMaxMs: 8000, monitorMs: 500 };

const randomId = (): string => Math.random().toString(36).slice(2, 10) + Date.now().toString(36).slice(-4);

type MediaHandler = (event: MediaEvent) => void;

// ---------------------------------------------------------- the session

/** The media of one call. Get it from `attachMedia()`. */
export class CallMedia {
  readonly callId: string;
  /** True when this side yields on offer collisions. */
  readonly polite: boolean;

  private client: HoldfastClient;
  private opts: Required<Omit<MediaOptions, 'rtcConfig'>> & { rtcConfig: RTCConfiguration };
  private handlers = new Map<string, Set<MediaHandler>>();
  private offs: (() => void)[] = [];
  private local: MediaStream | null = null;
  private pc: RTCPeerConnection | null = null;
  private remote: MediaStream | null = null;
  private gen = '';
  private remoteGen: string | null = null;
  private retired = new Set<string>();
  private makingOffer = false;
  private ignoreOffer = false;
  private inbox: Wire[] = [];
  private chain: Promise<void> = Promise.resolve();
  private ready = false;
  private started = false;
  private _state: MediaState = 'new';
  private peerAway = false;
  private timer: ReturnType<typeof setInterval> | null = null;
  private peerCheck: ReturnType<typeof setTimeout> | null = null;
  // Health and restarts.
  private lastBytes = -1;
  private lastInboundAt = 0;
  private sawInbound = false;
  private reconnectingSince = 0;
  private attempts = 0;
  private nextRestartAt = 0;
  private negotiations = 0;
  private negotiationsAtRestart = 0;
  private restartPending = false;
  private sampling = false;
  /** The current peer connection completed an offer/answer at least once. */
  private negotiated = false;
  private helloAt = 0;
  private connectingSince = 0;
  private lastRestartAt = 0;

  /** @internal Use `attachMedia()`. */
  constructor(client: HoldfastClient, callId: string, polite: boolean, options: MediaOptions) {
    this.client = client;
    this.callId = callId;
    this.polite = polite;
    this.opts = {
      stallMs: options.stallMs ?? DEFAULTS.stallMs,
      backoffBaseMs: options.backoffBaseMs ?? DEFAULTS.backoffBaseMs,
      backoffMaxMs: options.backoffMaxMs ?? DEFAULTS.backoffMaxMs,
      monitorMs: options.monitorMs ?? DEFAULTS.monitorMs,
      rtcConfig: options.rtcConfig ?? {},
    };
    const mine = (id: string) => id === this.callId;
    this.offs.push(
      client.on('signal', (e) => {
        if (mine(e.call) && isWire(e.payload)) this.receive(e.payload);
      }),
      client.on('resumed', () => {
        if (this.pc && this.isActive()) this.restart('signaling-resumed', true);
      }),
      client.on('call-started', (e) => {
        if (!mine(e.call.id)) return;
        this.peerAway = false;
        if (!this.started) this.maybeStart();
        // Same page, same peer connection, new session (e.g. an automatic rejoin).
        else if (e.rejoined && this.pc) this.restart('rejoined', true);
      }),
      client.on('participant-disconnected', (e) => {
        if (!mine(e.call)) return;
        this.peerAway = true;
      }),
      client.on('participant-reconnected', (e) => {
        if (!mine(e.call)) return;
        this.peerAway = false;
        // The peer restarts ICE itself after its resume, and a rejoined peer offers a
        // fresh connection; restart from here only if media is still broken then.
        if (this.peerCheck) clearTimeout(this.peerCheck);
        this.peerCheck = setTimeout(() => {
          this.peerCheck = null;
          if (this.pc && !this.iceUp() && !this.makingOffer) this.restart('peer-reconnected', true);
        }, 1500);
      }),
      client.on('call-ended', (e) => {
        if (mine(e.call)) this.shut('call-ended');
      }),
      client.on('call-moved', (e) => {
        if (mine(e.call)) this.shut('call-moved');
      }),
      client.on('logged-out', () => this.shut('logged-out')),
    );
    const call = this.call();
    this.peerAway = call?.peerLink === 'reconnecting';
  }

  /** The current state. */
  get state(): MediaState {
    return this._state;
  }

  /** The stream being sent (null: receive only, or not resolved yet). */
  get localStream(): MediaStream | null {
    return this.local;
  }

  /** The other participant's stream, once a track arrived. */
  get remoteStream(): MediaStream | null {
    return this.remote;
  }

  /** The current peer connection (a new one after a fresh negotiation). */
  get peerConnection(): RTCPeerConnection | null {
    return this.pc;
  }

  /** Listens to one media event type (or `'*'`). Returns the unsubscriber. */
  on<K extends MediaEventType>(type: K, handler: (event: MediaEventOf<K>) => void): () => void;
  on(type: '*', handler: (event: MediaEvent) => void): () => void;
  on(type: string, handler: MediaHandler): () => void {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, (set = new Set()));
    set.add(handler);
    return () => {
      set!.delete(handler);
    };
  }

  /** Restarts ICE now (a "Reconnect media" button). Never ends the call. */
  reconnect(): void {
    if (!this.pc) return;
    this.attempts = 0;
    this.restart('manual', true);
  }

  /** Byte counters of the current peer connection. */
  async stats(): Promise<MediaStats> {
    const pc = this.pc;
    const out: MediaStats = {
      bytesReceived: 0, bytesSent: 0, audioBytesReceived: 0, videoBytesReceived: 0, framesDecoded: 0,
      iceConnectionState: pc?.iceConnectionState ?? 'closed',
      connectionState: pc?.connectionState ?? 'closed',
      signalingState: pc?.signalingState ?? 'closed',
    };
    if (!pc) return out;
    const report = await pc.getStats();
    report.forEach((s: Record<string, unknown>) => {
      if (s.type === 'inbound-rtp') {
        const b = Number(s.bytesReceived ?? 0);
        out.bytesReceived += b;
        if (s.kind === 'audio') out.audioBytesReceived += b;
        if (s.kind === 'video') {
          out.videoBytesReceived += b;
          out.framesDecoded += Number(s.framesDecoded ?? 0);
        }
      } else if (s.type === 'outbound-rtp') {
        out.bytesSent += Number(s.bytesSent ?? 0);
      }
    });
    return out;
  }

  /** Stops managing this call's media and closes its peer connection. The call itself
   *  goes on (hang up with `client.hangup()`); the local stream is the app's to stop. */
  close(): void {
    this.shut('closed');
  }

  // ------------------------------------------------------------ internals

  /** @internal Sets (or replaces) the stream to send. */
  setLocalStream(stream: MediaStream | null): void {
    this.ready = true;
    if (stream === this.local) return;
    const old = this.local;
    this.local = stream;
    const pc = this.pc;
    if (!pc || pc.signalingState === 'closed') return;
    const placed = new Set<MediaStreamTrack>();
    for (const sender of pc.getSenders()) {
      if (!sender.track || !old?.getTracks().includes(sender.track)) continue;
      const next = stream?.getTracks().find((t) => t.kind === sender.track!.kind && !placed.has(t)) ?? null;
      if (next) placed.add(next);
      void sender.replaceTrack(next);
    }
    for (const track of stream?.getTracks() ?? []) {
      if (!placed.has(track)) pc.addTrack(track, stream!);
    }
  }

  /** @internal Starts once the stream is there and the call is active. */
  maybeStart(): void {
    if (this.started || !this.ready || this._state === 'closed') return;
    if (this.call()?.phase !== 'active') return;
    this.started = true;
    this.newPeerConnection(true);
    this.timer = setInterval(() => void this.monitor(), this.opts.monitorMs);
    for (const w of this.inbox.splice(0)) this.serial(() => this.handle(w));
  }

  /** Runs peer-connection steps one at a time (each awaits the connection). */
  private serial(step: () => Promise<void>): void {
    this.chain = this.chain.then(step).catch((e) => this.fail(e));
  }

  private emit(ev: MediaEvent): void {
    for (const key of [ev.type, '*']) {
      for (const h of this.handlers.get(key) ?? []) {
        try {
          h(ev);
        } catch (e) {
          setTimeout(() => {
            throw e;
          });
        }
      }
    }
  }

  private setState(state: MediaState): void {
    if (state === this._state) return;
    this._state = state;
    this.emit({ type: 'media-state', call: this.callId, state });
  }

  private call(): Call | undefined {
    try {
      return this.client.getSnapshot().calls.find((c) => c.id === this.callId);
    } catch {
      return undefined;
    }
  }

  private isActive(): boolean {
    return this.call()?.phase === 'active';
  }

  private isClosed(): boolean {
    return this._state === 'closed';
  }

  private iceUp(): boolean {
    const s = this.pc?.iceConnectionState;
    return s === 'connected' || s === 'completed';
  }

  /** A fresh peer connection with a new generation id. The impolite side offers as
   *  soon as tracks are added; the polite side says `hello` and waits for that offer,
   *  so the two never race to offer (a rolled-back first offer can leave Chrome's ICE
   *  agent without candidates). */
  private newPeerConnection(hello: boolean): void {
    const pc = new RTCPeerConnection(this.opts.rtcConfig);
    this.pc = pc;
    this.gen = randomId();
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.negotiated = false;
    this.helloAt = 0;
    this.connectingSince = Date.now();
    this.lastBytes = -1;
    this.sawInbound = false;
    this.lastInboundAt = Date.now();
    const remote = new MediaStream();
    this.remote = remote;
    const current = () => this.pc === pc;

    pc.ontrack = (ev) => {
      if (!current()) return;
      if (!remote.getTracks().includes(ev.track)) remote.addTrack(ev.track);
      this.emit({ type: 'remote-stream', call: this.callId, stream: remote });
    };
    pc.onicecandidate = (ev) => {
      if (current() && ev.candidate) this.post({ candidate: ev.candidate.toJSON() });
    };
    pc.onnegotiationneeded = async () => {
      if (!current()) return;
      if (this.polite && !this.negotiated) return; // the impolite side makes the first offer
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        if (current() && pc.localDescription) this.post({ description: pc.localDescription.toJSON() });
      } catch (e) {
        this.fail(e);
      } finally {
        this.makingOffer = false;
      }
    };
    let was: RTCSignalingState = pc.signalingState;
    pc.onsignalingstatechange = () => {
      if (!current()) return;
      const now = pc.signalingState;
      if (now === 'stable' && was !== 'stable' && pc.remoteDescription) {
        this.negotiations++;
        this.negotiated = true;
      }
      was = now;
    };
    pc.oniceconnectionstatechange = () => {
      if (!current()) return;
      const s = pc.iceConnectionState;
      if (this._state === 'connecting' && (s === 'connected' || s === 'completed')) this.setState('connected');
      if (s === 'failed') this.restart('ice-failed', false);
    };

    if (this.local && this.local.getTracks().length > 0) {
      for (const track of this.local.getTracks()) pc.addTrack(track, this.local);
    } else if (!this.polite) {
      // Receive only: transceivers still make an offer happen (the polite side answers
      // whatever the impolite side offers).
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
    }
    if (this._state !== 'reconnecting') this.setState('connecting');
    if (this.polite && hello) this.sayHello();
  }

  private sayHello(): void {
    this.helloAt = Date.now();
    this.post({ hello: true });
  }

  /** Replaces the peer connection: the other side came back with a new one. */
  private renew(reason: MediaRestartReason, hello: boolean): void {
    const old = this.pc;
    if (old) {
      old.ontrack = old.onicecandidate = old.onnegotiationneeded = null;
      old.onsignalingstatechange = old.oniceconnectionstatechange = null;
      old.close();
    }
    this.retired.add(this.gen);
    if (this._state !== 'reconnecting') {
      this.reconnectingSince = Date.now();
      this.setState('reconnecting');
      this.emit({ type: 'media-reconnecting', call: this.callId, reason, attempt: 1 });
    }
    this.attempts = 0;
    this.nextRestartAt = 0;
    this.restartPending = false;
    this.negotiationsAtRestart = this.negotiations;
    this.newPeerConnection(hello);
  }

  private post(body: Pick<Wire, 'description' | 'candidate' | 'hello' | 'restart'>): void {
    const wire: Wire = { holdfast: 'media', v: 1, from: this.gen, to: this.remoteGen, ...body };
    try {
      this.client.send(this.callId, wire);
    } catch {
      // Not active any more, or the relay buffer is full: the next restart re-sends.
    }
  }

  private receive(w: Wire): void {
    if (!this.started) this.inbox.push(w);
    else this.serial(() => this.handle(w));
  }

  private async handle(w: Wire): Promise<void> {
    if (!this.pc) return;
    if (w.to !== null && w.to !== this.gen) return; // meant for a connection we replaced
    if (this.retired.has(w.from)) return; // from a connection the peer replaced
    if (this.remoteGen === null) {
      this.remoteGen = w.from;
    } else if (w.from !== this.remoteGen) {
      // The peer has a new peer connection (it rejoined from a new page or tab): it
      // opens with an offer (impolite) or a hello (polite). Anything else waits for it.
      const opens = w.description?.type === 'offer' || w.hello === true;
      if (!opens) return;
      this.retired.add(this.remoteGen);
      this.remoteGen = w.from;
      // Our fresh connection answers the offer; after a hello, it offers itself.
      this.renew('peer-rejoined', false);
      if (w.hello) return;
    }
    const pc = this.pc!;
    if (w.hello) {
      // A polite peer waits for our offer: make sure one is on its way.
      if (this.polite) return;
      if (pc.signalingState === 'have-local-offer' && pc.localDescription) {
        this.post({ description: pc.localDescription.toJSON() });
      } else if (pc.signalingState === 'stable' && !this.negotiated && !this.makingOffer) {
        pc.restartIce(); // forces a (new) offer
      }
      return;
    }
    if (w.restart) {
      // The polite peer asks us to restart ICE (its path broke, or it resumed).
      if (this.polite) return;
      // Already restarting (both sides saw the same resume): that restart serves both.
      if (this._state === 'reconnecting' && Date.now() - this.lastRestartAt < 2000) return;
      this.restart('peer-request', pc.signalingState === 'stable' && !this.makingOffer);
      return;
    }
    try {
      if (w.description) {
        const d = w.description;
        const collision = d.type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
        this.ignoreOffer = !this.polite && collision;
        if (this.ignoreOffer) return;
        await pc.setRemoteDescription(d); // rolls back our own offer when polite
        if (d.type === 'offer') {
          await pc.setLocalDescription();
          if (pc.localDescription) this.post({ description: pc.localDescription.toJSON() });
        }
      } else if (w.candidate) {
        try {
          await pc.addIceCandidate(w.candidate);
        } catch {
          // A candidate of an ignored offer or of an earlier ICE generation.
        }
      }
    } catch (e) {
      this.fail(e);
    }
  }

  private fail(e: unknown): void {
    if (this._state === 'closed') return;
    this.emit({ type: 'media-error', call: this.callId, message: e instanceof Error ? e.message : String(e) });
  }

  /** Enters `reconnecting` and restarts ICE, now or when the backoff allows. */
  private restart(reason: MediaRestartReason, now: boolean): void {
    if (!this.pc || this._state === 'closed') return;
    if (this._state !== 'reconnecting') {
      this.reconnectingSince = Date.now();
      this.attempts = 0;
      this.nextRestartAt = 0;
      this.setState('reconnecting');
      this.emit({ type: 'media-reconnecting', call: this.callId, reason, attempt: this.attempts + 1 });
    }
    this.restartPending = true;
    if (this.peerAway && reason !== 'manual') return; // nobody to negotiate with yet
    if (now || Date.now() >= this.nextRestartAt) {
      this.nextRestartAt = Number.MAX_SAFE_INTEGER; // set for real when the step runs
      this.serial(() => this.restartIce());
    }
  }

  /** One restart attempt. The impolite side restarts ICE (a new offer); the polite side
   *  asks it to, so the two never offer at once. */
  private async restartIce(): Promise<void> {
    const pc = this.pc;
    if (!pc || pc.signalingState === 'closed') return;
    this.restartPending = false;
    this.lastRestartAt = Date.now();
    this.attempts++;
    const delay = Math.min(this.opts.backoffMaxMs, this.opts.backoffBaseMs * 2 ** (this.attempts - 1));
    this.nextRestartAt = Date.now() + delay * (0.8 + Math.random() * 0.4);
    this.negotiationsAtRestart = this.negotiations;
    if (this.polite) {
      if (this.negotiated) this.post({ restart: true });
      else this.sayHello();
      return;
    }
    if (pc.signalingState === 'have-local-offer') {
      // Our last offer is still unanswered (the peer was away or had no connection for
      // it): send it again rather than rolling it back.
      if (pc.localDescription) this.post({ description: pc.localDescription.toJSON() });
      return;
    }
    pc.restartIce();
  }

  private async monitor(): Promise<void> {
    const pc = this.pc;
    if (!pc || this.sampling || this._state === 'closed') return;
    this.sampling = true;
    let inbound = 0;
    let streams = 0;
    try {
      const report = await pc.getStats();
      report.forEach((s: Record<string, unknown>) => {
        if (s.type === 'inbound-rtp') {
          streams++;
          inbound += Number(s.bytesReceived ?? 0);
        }
      });
    } catch {
      return;
    } finally {
      this.sampling = false;
    }
    if (pc !== this.pc || this.isClosed()) return;
    const t = Date.now();
    if (inbound > this.lastBytes && this.lastBytes >= 0) {
      this.lastInboundAt = t;
      this.sawInbound = true;
    }
    this.lastBytes = inbound;
    const ice = pc.iceConnectionState;
    const flowing = this.sawInbound && this.lastInboundAt >= t - 2 * this.opts.monitorMs - 50;

    if (this._state === 'connecting' || this._state === 'connected') {
      if (ice === 'failed' || pc.connectionState === 'failed') {
        this.restart('ice-failed', false);
      } else if (ice === 'disconnected' && t - this.lastInboundAt >= this.opts.stallMs) {
        this.restart('stalled', false);
      } else if (this._state === 'connecting' && this.iceUp()) {
        this.setState('connected');
      } else if (this._state === 'connecting' && !this.peerAway) {
        // The first negotiation: a polite side repeats its hello until offered; a
        // connection that never comes up is restarted like a broken one.
        if (this.polite && !this.negotiated && t - this.helloAt >= 3000) this.sayHello();
        else if (t - this.connectingSince >= 10_000) this.restart('stalled', false);
      }
      return;
    }
    if (this._state !== 'reconnecting') return;
    // Restored: ICE up, our restart negotiated (or the peer's), and bytes flowing since.
    const renegotiated = this.negotiations > this.negotiationsAtRestart && !this.restartPending;
    const bytesOk = streams === 0 ? true : flowing && this.lastInboundAt > this.reconnectingSince;
    if (this.iceUp() && pc.signalingState === 'stable' && renegotiated && bytesOk) {
      this.setState('connected');
      this.emit({
        type: 'media-restored', call: this.callId, afterMs: t - this.reconnectingSince,
        attempts: Math.max(1, this.attempts),
      });
      this.attempts = 0;
      this.nextRestartAt = 0;
      return;
    }
    if (this.peerAway || this.makingOffer) return;
    if (t >= this.nextRestartAt && (this.restartPending || !this.iceUp() || !bytesOk || !renegotiated)) {
      this.nextRestartAt = Number.MAX_SAFE_INTEGER; // set for real when the step runs
      this.serial(() => this.restartIce());
    }
  }

  private shut(reason: MediaCloseReason): void {
    if (this._state === 'closed') return;
    for (const off of this.offs) off();
    this.offs = [];
    if (this.timer) clearInterval(this.timer);
    if (this.peerCheck) clearTimeout(this.peerCheck);
    this.timer = this.peerCheck = null;
    const pc = this.pc;
    this.pc = null;
    if (pc) {
      pc.ontrack = pc.onicecandidate = pc.onnegotiationneeded = null;
      pc.onsignalingstatechange = pc.oniceconnectionstatechange = null;
      pc.close();
    }
    this.inbox = [];
    registry.delete(this.callId);
    this.setState('closed');
    this.emit({ type: 'media-closed', call: this.callId, reason });
    this.handlers.clear();
  }
}

// ------------------------------------------------------------- registry

const KEY = Symbol.for('holdfast.media');
const g = globalThis as unknown as Record<symbol, Map<string, CallMedia>>;
g[KEY] ??= new Map();
const registry = g[KEY];

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
      throw Object.assign(new Error(`no call ${callId} on this page`), { name: 'HoldfastError', code: 'unknown-call' });
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
