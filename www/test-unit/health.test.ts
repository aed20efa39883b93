// The media health machine on a simulated clock: when media counts as broken, when ICE
// is restarted, the backoff between restarts, and when media counts as restored.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  HEALTH_DEFAULTS,
  MediaHealth,
  backoffDelay,
  type HealthDecision,
  type InboundSample,
  type LinkFacts,
} from '../src/media/health.js';

const up: LinkFacts = { ice: 'connected', connection: 'connected', signaling: 'stable', negotiated: true, makingOffer: false };
const down = (ice: string): LinkFacts => ({ ...up, ice, connection: ice === 'failed' ? 'failed' : 'connected' });
const bytes = (inbound: number, streams = 2): InboundSample => ({ inbound, streams });
const kinds = (ds: HealthDecision[]) => ds.map((d) => d.do);

/** A machine whose jitter draws `jitter`, connected at t=0 with bytes flowing until `t`. */
function connected(polite = false, jitter = 0.5) {
  const h = new MediaHealth(polite, {}, () => jitter);
  h.connectionOpened(0);
  h.negotiationCompleted();
  assert.deepEqual(h.iceChanged('connected', 50), [{ do: 'state', state: 'connected' }]);
  let inbound = 0;
  let t = 0;
  for (; t <= 2000; t += 500) h.sampled(bytes((inbound += 1000)), up, t);
  return { h, t, inbound };
}

test('backoff is equal jitter, as the client engine: half the doubling cap plus a random half', () => {
  const { backoffBaseMs: base, backoffMaxMs: max } = HEALTH_DEFAULTS;
  assert.equal(backoffDelay(0, base, max, () => 0.5), 0);
  assert.equal(backoffDelay(1, base, max, () => 0), 500);
  assert.equal(backoffDelay(1, base, max, () => 0.999), 999);
  assert.equal(backoffDelay(2, base, max, () => 0), 1000);
  assert.equal(backoffDelay(3, base, max, () => 0.5), 2000 + 1000);
  // Capped at backoffMaxMs from the fourth attempt on, however many there were.
  assert.equal(backoffDelay(4, base, max, () => 0), 4000);
  assert.equal(backoffDelay(40, base, max, () => 0.999), 4000 + 3996);
  for (let attempt = 1; attempt < 12; attempt++) {
    const cap = Math.min(base * 2 ** (attempt - 1), max);
    const d = backoffDelay(attempt, base, max, Math.random);
    assert.ok(d >= cap / 2 && d < cap, `attempt ${attempt}: ${d} not in [${cap / 2}, ${cap})`);
  }
});

test('all timeouts live in one defaults object; options override only what they set', () => {
  assert.deepEqual(new MediaHealth(false).timeouts, HEALTH_DEFAULTS);
  const h = new MediaHealth(false, { stallMs: 900, monitorMs: undefined });
  assert.equal(h.timeouts.stallMs, 900);
  assert.equal(h.timeouts.monitorMs, HEALTH_DEFAULTS.monitorMs);
  assert.ok(Object.isFrozen(HEALTH_DEFAULTS));
});

test('a fresh connection is connecting, then connected when ICE is up', () => {
  const h = new MediaHealth(false);
  assert.equal(h.state, 'new');
  assert.deepEqual(h.connectionOpened(0), [{ do: 'state', state: 'connecting' }]);
  assert.deepEqual(h.sampled(bytes(0), down('checking'), 500), []);
  assert.deepEqual(h.sampled(bytes(100), up, 1000), [{ do: 'state', state: 'connected' }]);
  assert.equal(h.state, 'connected');
});

test('ICE failed restarts at once, then waits out the backoff between attempts', () => {
  const { h, t } = connected(false, 0.5);
  const broke = h.iceChanged('failed', t);
  assert.deepEqual(broke, [
    { do: 'state', state: 'reconnecting' },
    { do: 'reconnecting', reason: 'ice-failed', attempt: 1 },
    { do: 'restart-ice' },
  ]);
  h.restartStarted(t);
  assert.equal(h.restartAttempts, 1);
  assert.equal(h.nextRestartAt, t + 750); // cap 1000: 500 + 0.5 · 500
  // Within the backoff: no second attempt, however broken.
  assert.deepEqual(h.sampled(bytes(0), down('failed'), t + 500), []);
  // After it: the next attempt, whose backoff cap has doubled.
  assert.deepEqual(h.sampled(bytes(0), down('failed'), t + 750), [{ do: 'restart-ice' }]);
  h.restartStarted(t + 750);
  assert.equal(h.nextRestartAt, t + 750 + 1500);
  for (let i = 0; i < 5; i++) h.restartStarted(t + 1000 * i);
  assert.equal(h.nextRestartAt - (t + 4000), 6000); // capped: 4000 + 0.5 · 4000
  assert.equal(h.state, 'reconnecting');
});

test('a restart that brings ICE back but no bytes is followed by another once the backoff passed', () => {
  const { h, t, inbound } = connected();
  h.iceChanged('failed', t);
  h.restartStarted(t);
  h.negotiationCompleted();
  assert.deepEqual(h.sampled(bytes(inbound), up, t + 700), []);
  assert.deepEqual(h.sampled(bytes(inbound), up, t + 750), [{ do: 'restart-ice' }]);
});

test('a stalled path (ICE disconnected, no bytes for stallMs) restarts; a short blip does not', () => {
  const { h, t, inbound } = connected();
  // Bytes stop at t; ICE says disconnected.
  assert.deepEqual(h.sampled(bytes(inbound), down('disconnected'), t + 500), []);
  assert.deepEqual(h.sampled(bytes(inbound), down('disconnected'), t + 2000), []);
  assert.equal(h.state, 'connected');
  const stalled = h.sampled(bytes(inbound), down('disconnected'), t - 500 + HEALTH_DEFAULTS.stallMs);
  assert.deepEqual(kinds(stalled), ['state', 'reconnecting', 'restart-ice']);
  assert.deepEqual(stalled[1], { do: 'reconnecting', reason: 'stalled', attempt: 1 });
});

test('restored only when ICE is up, renegotiated and bytes flow again', () => {
  const { h, t, inbound } = connected();
  h.iceChanged('failed', t);
  h.restartStarted(t + 10);
  // ICE back up but no negotiation since the restart: not yet.
  assert.deepEqual(h.sampled(bytes(inbound), up, t + 500), []);
  h.negotiationCompleted();
  // Negotiated, but no byte has arrived since media broke: not yet (and the backoff
  // of the next attempt, t + 10 + 750, has not passed).
  assert.deepEqual(h.sampled(bytes(inbound), up, t + 700), []);
  const back = h.sampled(bytes(inbound + 900), up, t + 1500);
  assert.deepEqual(back, [
    { do: 'state', state: 'connected' },
    { do: 'restored', afterMs: 1500, attempts: 1 },
  ]);
  assert.equal(h.restartAttempts, 0);
  assert.equal(h.nextRestartAt, 0);
});

test('nothing is restarted while the peer is away; its return checks and restarts if still down', () => {
  const { h, t } = connected();
  h.setPeerAway(true);
  const broke = h.iceChanged('failed', t);
  assert.deepEqual(kinds(broke), ['state', 'reconnecting']); // no restart-ice: nobody to negotiate with
  assert.deepEqual(h.sampled(bytes(0), down('failed'), t + 5000), []);
  assert.deepEqual(h.peerReturned(), [{ do: 'check-peer', afterMs: HEALTH_DEFAULTS.peerCheckMs }]);
  assert.deepEqual(h.peerCheckDue(up, t + 6500), []); // the peer's own restart fixed it
  assert.deepEqual(h.peerCheckDue(down('disconnected'), t + 6500), [{ do: 'restart-ice' }]);
  assert.deepEqual(h.peerCheckDue({ ...down('disconnected'), makingOffer: true }, t + 6500), []);
});

test('a manual restart runs even while the peer is away, with the backoff from the start', () => {
  const { h, t } = connected();
  h.iceChanged('failed', t);
  for (let i = 0; i < 3; i++) h.restartStarted(t + i);
  h.setPeerAway(true);
  assert.deepEqual(h.manualRestart(t + 10), [{ do: 'restart-ice' }]);
  h.restartStarted(t + 10);
  assert.equal(h.restartAttempts, 1);
  assert.equal(h.nextRestartAt, t + 10 + 750);
});

test("the polite peer's restart request is served by our own restart when it just ran", () => {
  const { h, t } = connected(false);
  h.iceChanged('failed', t);
  h.restartStarted(t);
  assert.deepEqual(h.peerRequestedRestart(true, t + HEALTH_DEFAULTS.peerRequestDedupeMs - 1), []);
  assert.deepEqual(h.peerRequestedRestart(true, t + HEALTH_DEFAULTS.peerRequestDedupeMs), [{ do: 'restart-ice' }]);
  // While healthy a request always restarts.
  const fresh = connected(false).h;
  assert.deepEqual(kinds(fresh.peerRequestedRestart(false, 100)), ['state', 'reconnecting', 'restart-ice']);
});

test('the polite side repeats its hello until offered; a first connection that never comes up is restarted', () => {
  const h = new MediaHealth(true);
  h.connectionOpened(0);
  h.helloSent(0);
  const waiting = { ...down('new'), negotiated: false };
  assert.deepEqual(h.sampled(bytes(0, 0), waiting, 2500), []);
  assert.deepEqual(h.sampled(bytes(0, 0), waiting, 3000), [{ do: 'hello' }]);
  h.helloSent(3000);
  assert.deepEqual(h.sampled(bytes(0, 0), waiting, 3500), []);
  // Negotiated but ICE never connects: restarted like a broken connection.
  const stuck = { ...down('checking'), negotiated: true };
  assert.deepEqual(h.sampled(bytes(0, 0), stuck, 9500), []);
  assert.deepEqual(kinds(h.sampled(bytes(0, 0), stuck, 10_000)), ['state', 'reconnecting', 'restart-ice']);
});

test('a renewed connection (the peer rejoined) is reconnecting until restored', () => {
  const { h, t, inbound } = connected();
  assert.deepEqual(h.renewed('peer-rejoined', t), [
    { do: 'state', state: 'reconnecting' },
    { do: 'reconnecting', reason: 'peer-rejoined', attempt: 1 },
  ]);
  assert.deepEqual(h.connectionOpened(t), []); // stays reconnecting
  h.negotiationCompleted();
  h.sampled(bytes(0), up, t + 500);
  assert.deepEqual(kinds(h.sampled(bytes(inbound), up, t + 1000)), ['state', 'restored']);
});

test('after close, nothing more is decided', () => {
  const { h, t } = connected();
  assert.deepEqual(h.close(), [{ do: 'state', state: 'closed' }]);
  assert.deepEqual(h.close(), []);
  assert.deepEqual(h.iceChanged('failed', t), []);
  assert.deepEqual(h.sampled(bytes(0), down('failed'), t + 10_000), []);
  assert.deepEqual(h.manualRestart(t), []);
});
