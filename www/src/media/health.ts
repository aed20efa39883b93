// When a call's media is broken and when to restart ICE: a pure state machine. It is
// fed what happened (a stats sample, an ICE state change, the peer leaving or coming
// back, a restart request) with the time `now` in epoch ms, and answers with decisions
// for the caller to carry out. No DOM, no timers, no clock of its own, so it runs under
// `node --test` (www/test-unit/health.test.ts).
//
// - On ICE `failed`, or when no inbound bytes arrive for `stallMs` while ICE is
//   `disconnected`, it enters `reconnecting` and restarts ICE, with backoff between
//   attempts (equal jitter, the client engine's formula: src/engine/client.rs).
// - It leaves `reconnecting` (`restored`) only when ICE is up, signaling is stable, a
//   negotiation completed since the last restart, and inbound bytes flow again.
// - While the peer is away (its signaling link dropped) nothing is restarted: there is
//   nobody to negotiate with; the peer restarts itself when it is back.

import type { MediaRestartReason, MediaState } from './types.js';

/** Every timeout of the media health machine. */
export interface HealthTimeouts {
  /** No inbound bytes for this long while ICE is `disconnected` → ICE restart. */
  stallMs: number;
  /** The first cap of the backoff between two ICE restarts; doubles per attempt. */
  backoffBaseMs: number;
  /** The largest cap of the backoff between two ICE restarts. */
  backoffMaxMs: number;
  /** How often stats are sampled. Bytes count as flowing when they grew within the
   *  last two samples (plus `flowSlackMs`). */
  monitorMs: number;
  /** Slack on top of two sample intervals for "bytes are flowing". */
  flowSlackMs: number;
  /** After the peer came back: restart from here if ICE is still down by then (the
   *  peer restarts ICE itself after its resume, and a rejoined peer offers afresh). */
  peerCheckMs: number;
  /** A restart request from the polite peer this soon after our own restart is served
   *  by ours (both sides saw the same resume). */
  peerRequestDedupeMs: number;
  /** The polite side repeats its hello this often until it is offered. */
  helloRepeatMs: number;
  /** A first connection that is not up after this long is restarted like a broken one. */
  connectTimeoutMs: number;
}

export const HEALTH_DEFAULTS: Readonly<HealthTimeouts> = Object.freeze({
  stallMs: 3000,
  backoffBaseMs: 1000,
  backoffMaxMs: 8000,
  monitorMs: 500,
  flowSlackMs: 50,
  peerCheckMs: 1500,
  peerRequestDedupeMs: 2000,
  helloRepeatMs: 3000,
  connectTimeoutMs: 10_000,
});

/** The delay before restart attempt `attempt + 1`, after attempt `attempt` (1-based):
 *  equal jitter, exactly as the client engine's `backoff_delay`. The cap is
 *  `min(base · 2^(attempt-1), max)`; the delay is half the cap plus a random share of
 *  the other half, so many peers spread out but none waits much longer than the cap. */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number): number {
  if (attempt <= 0) return 0;
  const cap = Math.min(baseMs * 2 ** Math.min(attempt - 1, 20), maxMs);
  const half = Math.floor(cap / 2);
  return half + Math.floor(random() * half);
}

/** What the peer connection looks like right now. */
export interface LinkFacts {
  /** `RTCPeerConnection.iceConnectionState`. */
  ice: string;
  /** `RTCPeerConnection.connectionState`. */
  connection: string;
  /** `RTCPeerConnection.signalingState`. */
  signaling: string;
  /** The current peer connection completed an offer/answer at least once. */
  negotiated: boolean;
  /** An offer of ours is being made. */
  makingOffer: boolean;
}

/** One stats sample: the sum of `inbound-rtp` `bytesReceived` over `streams` streams. */
export interface InboundSample {
  inbound: number;
  streams: number;
}

/** What the caller is to do, in order. */
export type HealthDecision =
  /** The media state changed: tell the app (`media-state`). */
  | { do: 'state'; state: MediaState }
  /** Media broke: tell the app (`media-reconnecting`). */
  | { do: 'reconnecting'; reason: MediaRestartReason; attempt: number }
  /** Media flows again: tell the app (`media-restored`). */
  | { do: 'restored'; afterMs: number; attempts: number }
  /** Queue one ICE restart step; call `restartStarted()` when it runs. */
  | { do: 'restart-ice' }
  /** (Polite side) say hello again: the first offer has not come. */
  | { do: 'hello' }
  /** Call `peerCheckDue()` after this long (replacing an earlier such check). */
  | { do: 'check-peer'; afterMs: number };

const iceUp = (ice: string): boolean => ice === 'connected' || ice === 'completed';

/** The health of one call's media. */
export class MediaHealth {
  readonly timeouts: Readonly<HealthTimeouts>;

  private current: MediaState = 'new';
  private peerAway = false;
  private lastBytes = -1;
  private lastInboundAt = 0;
  private sawInbound = false;
  private reconnectingSince = 0;
  private attempts = 0;
  private restartAt = 0;
  private negotiations = 0;
  private negotiationsAtRestart = 0;
  private restartPending = false;
  private helloAt = 0;
  private connectingSince = 0;
  private lastRestartAt = 0;

  /** `polite`: this side yields on offer collisions (and says hello instead of
   *  offering). `random` in [0, 1) draws the backoff jitter. */
  constructor(
    readonly polite: boolean,
    timeouts: Partial<HealthTimeouts> = {},
    private readonly random: () => number = Math.random,
  ) {
    const given = Object.fromEntries(Object.entries(timeouts).filter(([, v]) => v !== undefined));
    this.timeouts = Object.freeze({ ...HEALTH_DEFAULTS, ...given });
  }

  get state(): MediaState {
    return this.current;
  }

  /** Restart attempts since media broke (0 while healthy). */
  get restartAttempts(): number {
    return this.attempts;
  }

  /** When the next restart attempt may run (epoch ms). */
  get nextRestartAt(): number {
    return this.restartAt;
  }

  /** The peer's signaling link dropped (`true`) or the call (re)started (`false`). */
  setPeerAway(away: boolean): void {
    this.peerAway = away;
  }

  /** The peer is back (`participant-reconnected`). */
  peerReturned(): HealthDecision[] {
    this.peerAway = false;
    return [{ do: 'check-peer', afterMs: this.timeouts.peerCheckMs }];
  }

  /** The check asked for by `check-peer`: restart if ICE is still down. */
  peerCheckDue(facts: LinkFacts, now: number): HealthDecision[] {
    if (iceUp(facts.ice) || facts.makingOffer) return [];
    return this.restart('peer-reconnected', true, now);
  }

  /** A fresh peer connection was made (first one, or a renewal). */
  connectionOpened(now: number): HealthDecision[] {
    this.helloAt = 0;
    this.connectingSince = now;
    this.lastBytes = -1;
    this.sawInbound = false;
    this.lastInboundAt = now;
    return this.current === 'reconnecting' ? [] : this.setState('connecting');
  }

  /** The polite side said hello (asked the impolite side for an offer). */
  helloSent(now: number): void {
    this.helloAt = now;
  }

  /** An offer/answer exchange completed (signaling back to `stable`). */
  negotiationCompleted(): void {
    this.negotiations++;
  }

  /** The peer connection is being replaced (the peer came back with a new one). */
  renewed(reason: MediaRestartReason, now: number): HealthDecision[] {
    const out: HealthDecision[] = [];
    if (this.current !== 'reconnecting') {
      this.reconnectingSince = now;
      out.push(...this.setState('reconnecting'), { do: 'reconnecting', reason, attempt: 1 });
    }
    this.attempts = 0;
    this.restartAt = 0;
    this.restartPending = false;
    this.negotiationsAtRestart = this.negotiations;
    return out;
  }

  /** `iceconnectionstatechange`. */
  iceChanged(ice: string, now: number): HealthDecision[] {
    const out: HealthDecision[] = [];
    if (this.current === 'connecting' && iceUp(ice)) out.push(...this.setState('connected'));
    if (ice === 'failed') out.push(...this.restart('ice-failed', false, now));
    return out;
  }

  /** Enters `reconnecting` and restarts ICE: now (`immediate`) or when the backoff
   *  allows (the next sample after `nextRestartAt`). */
  restart(reason: MediaRestartReason, immediate: boolean, now: number): HealthDecision[] {
    if (this.current === 'closed') return [];
    const out: HealthDecision[] = [];
    if (this.current !== 'reconnecting') {
      this.reconnectingSince = now;
      this.attempts = 0;
      this.restartAt = 0;
      out.push(...this.setState('reconnecting'), { do: 'reconnecting', reason, attempt: this.attempts + 1 });
    }
    this.restartPending = true;
    if (this.peerAway && reason !== 'manual') return out; // nobody to negotiate with yet
    if (immediate || now >= this.restartAt) out.push(...this.queueRestart());
    return out;
  }

  /** "Reconnect media": restart now, with the backoff from the start. */
  manualRestart(now: number): HealthDecision[] {
    this.attempts = 0;
    return this.restart('manual', true, now);
  }

  /** (Impolite side) the polite peer asks for an ICE restart. */
  peerRequestedRestart(immediate: boolean, now: number): HealthDecision[] {
    if (this.current === 'reconnecting' && now - this.lastRestartAt < this.timeouts.peerRequestDedupeMs) return [];
    return this.restart('peer-request', immediate, now);
  }

  /** A queued restart step runs now: counts the attempt and arms the backoff. */
  restartStarted(now: number): void {
    this.restartPending = false;
    this.lastRestartAt = now;
    this.attempts++;
    const { backoffBaseMs, backoffMaxMs } = this.timeouts;
    this.restartAt = now + backoffDelay(this.attempts, backoffBaseMs, backoffMaxMs, this.random);
    this.negotiationsAtRestart = this.negotiations;
  }

  /** A stats sample of the current peer connection. */
  sampled(sample: InboundSample, facts: LinkFacts, now: number): HealthDecision[] {
    if (this.current === 'closed') return [];
    const t = now;
    if (sample.inbound > this.lastBytes && this.lastBytes >= 0) {
      this.lastInboundAt = t;
      this.sawInbound = true;
    }
    this.lastBytes = sample.inbound;
    const { monitorMs, flowSlackMs, stallMs, helloRepeatMs, connectTimeoutMs } = this.timeouts;
    const flowing = this.sawInbound && this.lastInboundAt >= t - 2 * monitorMs - flowSlackMs;
    const up = iceUp(facts.ice);

    if (this.current === 'connecting' || this.current === 'connected') {
      if (facts.ice === 'failed' || facts.connection === 'failed') return this.restart('ice-failed', false, t);
      if (facts.ice === 'disconnected' && t - this.lastInboundAt >= stallMs) return this.restart('stalled', false, t);
      if (this.current === 'connecting' && up) return this.setState('connected');
      if (this.current === 'connecting' && !this.peerAway) {
        // The first negotiation: a polite side repeats its hello until offered; a
        // connection that never comes up is restarted like a broken one.
        if (this.polite && !facts.negotiated && t - this.helloAt >= helloRepeatMs) return [{ do: 'hello' }];
        if (t - this.connectingSince >= connectTimeoutMs) return this.restart('stalled', false, t);
      }
      return [];
    }
    if (this.current !== 'reconnecting') return [];
    // Restored: ICE up, our restart negotiated (or the peer's), and bytes flowing since.
    const renegotiated = this.negotiations > this.negotiationsAtRestart && !this.restartPending;
    const bytesOk = sample.streams === 0 ? true : flowing && this.lastInboundAt > this.reconnectingSince;
    if (up && facts.signaling === 'stable' && renegotiated && bytesOk) {
      const out = this.setState('connected');
      out.push({ do: 'restored', afterMs: t - this.reconnectingSince, attempts: Math.max(1, this.attempts) });
      this.attempts = 0;
      this.restartAt = 0;
      return out;
    }
    if (this.peerAway || facts.makingOffer) return [];
    if (t >= this.restartAt && (this.restartPending || !up || !bytesOk || !renegotiated)) return this.queueRestart();
    return [];
  }

  /** The media is closed for good. */
  close(): HealthDecision[] {
    return this.current === 'closed' ? [] : this.setState('closed');
  }

  private queueRestart(): HealthDecision[] {
    this.restartAt = Number.MAX_SAFE_INTEGER; // set for real when the step runs
    return [{ do: 'restart-ice' }];
  }

  private setState(state: MediaState): HealthDecision[] {
    if (state === this.current) return [];
    this.current = state;
    return [{ do: 'state', state }];
  }
}
