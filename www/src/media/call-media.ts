// The media of one call: ties the call's signaling events, the negotiation
// (negotiation.ts), the health machine (health.ts) and stats polling (stats.ts)
// together, and tells the app what happens. Never torn down while the call lives:
// a broken path restarts ICE; a rejoined peer gets a fresh connection.

import type { HoldfastClient } from '../client.js';
import { Emitter } from '../emitter.js';
import type { Call } from '../types.js';
import { MediaHealth, type HealthDecision, type LinkFacts } from './health.js';
import { Negotiation, isWire, type Wire } from './negotiation.js';
import { InboundPoller, readStats } from './stats.js';
import type {
  MediaCloseReason,
  MediaEvent,
  MediaEventOf,
  MediaEventType,
  MediaOptions,
  MediaRestartReason,
  MediaState,
  MediaStats,
} from './types.js';

/** The page's media sessions by call id, on globalThis like the client (a second copy
 *  of this module or a hot reload finds the same sessions). */
const KEY = Symbol.for('holdfast.media');
const g = globalThis as unknown as Record<symbol, Map<string, CallMedia>>;
export const registry: Map<string, CallMedia> = (g[KEY] ??= new Map());

function facts(pc: RTCPeerConnection, negotiation: Negotiation): LinkFacts {
  return {
    ice: pc.iceConnectionState,
    connection: pc.connectionState,
    signaling: pc.signalingState,
    negotiated: negotiation.negotiated,
    makingOffer: negotiation.makingOffer,
  };
}

/** The media of one call. Get it from `attachMedia()`. */
export class CallMedia {
  /** The call whose media this is. */
  readonly callId: string;
  /** True when this side yields on offer collisions. */
  readonly polite: boolean;

  private client: HoldfastClient;
  private events = new Emitter<MediaEvent>();
  private offs: (() => void)[] = [];
  private local: MediaStream | null = null;
  private negotiation: Negotiation;
  private health: MediaHealth;
  private poller: InboundPoller;
  private inbox: Wire[] = [];
  private chain: Promise<void> = Promise.resolve();
  private ready = false;
  private started = false;
  private peerCheck: ReturnType<typeof setTimeout> | null = null;

  /** @internal Use `attachMedia()`. */
  constructor(client: HoldfastClient, callId: string, polite: boolean, options: MediaOptions) {
    this.client = client;
    this.callId = callId;
    this.polite = polite;
    const { stallMs, backoffBaseMs, backoffMaxMs, monitorMs } = options;
    this.health = new MediaHealth(polite, { stallMs, backoffBaseMs, backoffMaxMs, monitorMs });
    this.negotiation = new Negotiation(polite, options.rtcConfig ?? {}, {
      send: (wire) => {
        try {
          this.client.send(this.callId, wire);
        } catch {
          // Not active any more, or the relay buffer is full: the next restart re-sends.
        }
      },
      remoteStream: (stream) => this.emit({ type: 'remote-stream', call: this.callId, stream }),
      negotiated: () => this.health.negotiationCompleted(),
      iceChanged: (ice) => this.apply(this.health.iceChanged(ice, Date.now())),
      helloSent: () => this.health.helloSent(Date.now()),
      peerRejoined: () => this.renew('peer-rejoined', false),
      restartRequested: (immediate) => this.apply(this.health.peerRequestedRestart(immediate, Date.now())),
      error: (e) => this.fail(e),
    });
    this.poller = new InboundPoller(this.health.timeouts.monitorMs, () => this.negotiation.pc, (pc, sample) => {
      if (pc !== this.negotiation.pc || this.state === 'closed') return;
      this.apply(this.health.sampled(sample, facts(pc, this.negotiation), Date.now()));
    });

    const mine = (id: string) => id === this.callId;
    this.offs.push(
      client.on('signal', (e) => {
        if (mine(e.call) && isWire(e.payload)) this.receive(e.payload);
      }),
      client.on('resumed', () => {
        if (this.negotiation.pc && this.isActive()) this.restart('signaling-resumed', true);
      }),
      client.on('call-started', (e) => {
        if (!mine(e.call.id)) return;
        this.health.setPeerAway(false);
        if (!this.started) this.maybeStart();
        // Same page, same peer connection, new session (e.g. an automatic rejoin).
        else if (e.rejoined && this.negotiation.pc) this.restart('rejoined', true);
      }),
      client.on('participant-disconnected', (e) => {
        if (mine(e.call)) this.health.setPeerAway(true);
      }),
      client.on('participant-reconnected', (e) => {
        if (mine(e.call)) this.apply(this.health.peerReturned());
      }),
      client.on('call-ended', (e) => {
        if (mine(e.call)) this.shut('call-ended');
      }),
      client.on('call-moved', (e) => {
        if (mine(e.call)) this.shut('call-moved');
      }),
      client.on('logged-out', () => this.shut('logged-out')),
    );
    this.health.setPeerAway(this.call()?.peerLink === 'reconnecting');
  }

  /** The current state. */
  get state(): MediaState {
    return this.health.state;
  }

  /** The stream being sent (null: receive only, or not resolved yet). */
  get localStream(): MediaStream | null {
    return this.local;
  }

  /** The other participant's stream, once a track arrived. */
  get remoteStream(): MediaStream | null {
    return this.negotiation.remoteStream;
  }

  /** The current peer connection (a new one after a fresh negotiation). */
  get peerConnection(): RTCPeerConnection | null {
    return this.negotiation.pc;
  }

  /** Listens to one media event type (or `'*'`). Returns the unsubscriber. */
  on<K extends MediaEventType>(type: K, handler: (event: MediaEventOf<K>) => void): () => void;
  on(type: '*', handler: (event: MediaEvent) => void): () => void;
  on(type: string, handler: (event: MediaEvent) => void): () => void {
    return this.events.on(type, handler);
  }

  /** Restarts ICE now (a "Reconnect media" button). Never ends the call. */
  reconnect(): void {
    if (!this.negotiation.pc) return;
    this.apply(this.health.manualRestart(Date.now()));
  }

  /** Byte counters of the current peer connection. */
  stats(): Promise<MediaStats> {
    return readStats(this.negotiation.pc);
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
    this.negotiation.replaceLocal(old, stream);
  }

  /** @internal Starts once the stream is there and the call is active. */
  maybeStart(): void {
    if (this.started || !this.ready || this.state === 'closed') return;
    if (this.call()?.phase !== 'active') return;
    this.started = true;
    this.newPeerConnection(true);
    this.poller.start();
    for (const w of this.inbox.splice(0)) this.serial(() => this.negotiation.handle(w));
  }

  /** Carries out what the health machine decided, in order. */
  private apply(decisions: HealthDecision[]): void {
    for (const d of decisions) {
      switch (d.do) {
        case 'state':
          this.emit({ type: 'media-state', call: this.callId, state: d.state });
          break;
        case 'reconnecting':
          this.emit({ type: 'media-reconnecting', call: this.callId, reason: d.reason, attempt: d.attempt });
          break;
        case 'restored':
          this.emit({ type: 'media-restored', call: this.callId, afterMs: d.afterMs, attempts: d.attempts });
          break;
        case 'restart-ice':
          this.serial(() => this.restartIce());
          break;
        case 'hello':
          this.negotiation.sayHello();
          break;
        case 'check-peer':
          if (this.peerCheck) clearTimeout(this.peerCheck);
          this.peerCheck = setTimeout(() => {
            this.peerCheck = null;
            const pc = this.negotiation.pc;
            if (pc) this.apply(this.health.peerCheckDue(facts(pc, this.negotiation), Date.now()));
          }, d.afterMs);
          break;
      }
    }
  }

  /** Runs peer-connection steps one at a time (each awaits the connection). */
  private serial(step: () => Promise<void>): void {
    this.chain = this.chain.then(step).catch((e) => this.fail(e));
  }

  private emit(ev: MediaEvent): void {
    this.events.emit(ev);
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

  /** A fresh peer connection; the polite side says hello when `hello`. */
  private newPeerConnection(hello: boolean): void {
    this.negotiation.open(this.local);
    this.apply(this.health.connectionOpened(Date.now()));
    if (this.polite && hello) this.negotiation.sayHello();
  }

  /** Replaces the peer connection: the other side came back with a new one. */
  private renew(reason: MediaRestartReason, hello: boolean): void {
    this.negotiation.retire();
    this.apply(this.health.renewed(reason, Date.now()));
    this.newPeerConnection(hello);
  }

  private receive(w: Wire): void {
    if (!this.started) this.inbox.push(w);
    else this.serial(() => this.negotiation.handle(w));
  }

  private fail(e: unknown): void {
    if (this.state === 'closed') return;
    this.emit({ type: 'media-error', call: this.callId, message: e instanceof Error ? e.message : String(e) });
  }

  /** Enters `reconnecting` and restarts ICE, now or when the backoff allows. */
  private restart(reason: MediaRestartReason, immediate: boolean): void {
    if (!this.negotiation.pc) return;
    this.apply(this.health.restart(reason, immediate, Date.now()));
  }

  /** One restart attempt (queued by a `restart-ice` decision). */
  private async restartIce(): Promise<void> {
    const pc = this.negotiation.pc;
    if (!pc || pc.signalingState === 'closed') return;
    this.health.restartStarted(Date.now());
    this.negotiation.restartIce();
  }

  private shut(reason: MediaCloseReason): void {
    if (this.state === 'closed') return;
    for (const off of this.offs) off();
    this.offs = [];
    this.poller.stop();
    if (this.peerCheck) clearTimeout(this.peerCheck);
    this.peerCheck = null;
    this.negotiation.close();
    this.inbox = [];
    registry.delete(this.callId);
    this.apply(this.health.close());
    this.emit({ type: 'media-closed', call: this.callId, reason });
    this.events.clear();
  }
}
