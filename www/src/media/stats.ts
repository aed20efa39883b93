// `getStats()` of a call's peer connection: the byte counters apps read
// (`media.stats()`) and the inbound samples the health machine is fed, polled on an
// interval.

import type { InboundSample } from './health.js';
import type { MediaStats } from './types.js';

/** Byte counters of `pc` (zeros and `closed` without one). */
export async function readStats(pc: RTCPeerConnection | null): Promise<MediaStats> {
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

/** The sum of `inbound-rtp` `bytesReceived` of `pc`, and how many streams it sums. */
export async function sampleInbound(pc: RTCPeerConnection): Promise<InboundSample> {
  let inbound = 0;
  let streams = 0;
  const report = await pc.getStats();
  report.forEach((s: Record<string, unknown>) => {
    if (s.type === 'inbound-rtp') {
      streams++;
      inbound += Number(s.bytesReceived ?? 0);
    }
  });
  return { inbound, streams };
}

/** Samples the current peer connection every `intervalMs`, one sample at a time (a
 *  slow `getStats()` skips ticks rather than piling up). `sampled` gets the connection
 *  the sample is of, which may have been replaced meanwhile. */
export class InboundPoller {
  private timer: ReturnType<typeof setInterval> | null = null;
  private sampling = false;

  constructor(
    private readonly intervalMs: number,
    private readonly current: () => RTCPeerConnection | null,
    private readonly sampled: (pc: RTCPeerConnection, sample: InboundSample) => void,
  ) {}

  start(): void {
    if (!this.timer) this.timer = setInterval(() => void this.tick(), this.intervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private async tick(): Promise<void> {
    const pc = this.current();
    if (!pc || this.sampling) return;
    this.sampling = true;
    let sample: InboundSample;
    try {
      sample = await sampleInbound(pc);
    } catch {
      return;
    } finally {
      this.sampling = false;
    }
    this.sampled(pc, sample);
  }
}
