// Perfect negotiation of one call's RTCPeerConnection over the call's signaling relay.
//
// - The polite peer (the participant with the greater user id) yields on offer
//   collisions. The impolite side makes the first offer as soon as tracks are added;
//   the polite side says `hello` and waits for that offer, so the two never race to
//   offer (a rolled-back first offer can leave Chrome's ICE agent without candidates).
// - Every peer connection has a generation id. A page that rejoins a call builds a
//   fresh connection; the other side sees a new generation in its first offer (or
//   hello) and renews its own connection.
// - Payloads on the relay are namespaced (`{ holdfast: 'media', … }`); apps may send
//   their own payloads through `client.send()` alongside, and media ignores them.

/** What media puts on the relay. Anything else on the relay is the app's. */
export interface Wire {
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

export type WireBody = Pick<Wire, 'description' | 'candidate' | 'hello' | 'restart'>;

export function isWire(p: unknown): p is Wire {
  const w = p as Partial<Wire> | null;
  return !!w && typeof w === 'object' && w.holdfast === 'media' && w.v === 1 && typeof w.from === 'string';
}

const randomId = (): string => Math.random().toString(36).slice(2, 10) + Date.now().toString(36).slice(-4);

/** What the negotiation tells the rest of the call's media. */
export interface NegotiationHooks {
  /** Put a wire message on the relay. */
  send(wire: Wire): void;
  /** A remote track arrived on the current connection (`stream` holds them all). */
  remoteStream(stream: MediaStream): void;
  /** An offer/answer exchange completed. */
  negotiated(): void;
  /** The current connection's ICE state changed. */
  iceChanged(ice: RTCIceConnectionState): void;
  /** A hello went out. */
  helloSent(): void;
  /** The peer came back with a new connection: replace ours (`renew()` with
   *  `hello: false`, the peer opens). Called from inside `handle()`. */
  peerRejoined(): void;
  /** (Impolite side) the polite peer asks for an ICE restart. `immediate`: nothing is
   *  being negotiated, so a restart may start now. */
  restartRequested(immediate: boolean): void;
  /** A negotiation step failed. */
  error(e: unknown): void;
}

/** The peer connection of one call and its offer/answer bookkeeping. */
export class Negotiation {
  private current: RTCPeerConnection | null = null;
  private remote: MediaStream | null = null;
  private gen = '';
  private remoteGen: string | null = null;
  private retired = new Set<string>();
  private offering = false;
  private ignoreOffer = false;
  /** The current peer connection completed an offer/answer at least once. */
  private done = false;

  constructor(
    readonly polite: boolean,
    private readonly rtcConfig: RTCConfiguration,
    private readonly hooks: NegotiationHooks,
  ) {}

  get pc(): RTCPeerConnection | null {
    return this.current;
  }

  get remoteStream(): MediaStream | null {
    return this.remote;
  }

  get negotiated(): boolean {
    return this.done;
  }

  get makingOffer(): boolean {
    return this.offering;
  }

  /** A fresh peer connection with a new generation id, sending `local`'s tracks. */
  open(local: MediaStream | null): void {
    const pc = new RTCPeerConnection(this.rtcConfig);
    this.current = pc;
    this.gen = randomId();
    this.offering = false;
    this.ignoreOffer = false;
    this.done = false;
    const remote = new MediaStream();
    this.remote = remote;
    const current = () => this.current === pc;

    pc.ontrack = (ev) => {
      if (!current()) return;
      if (!remote.getTracks().includes(ev.track)) remote.addTrack(ev.track);
      this.hooks.remoteStream(remote);
    };
    pc.onicecandidate = (ev) => {
      if (current() && ev.candidate) this.post({ candidate: ev.candidate.toJSON() });
    };
    pc.onnegotiationneeded = async () => {
      if (!current()) return;
      if (this.polite && !this.done) return; // the impolite side makes the first offer
      try {
        this.offering = true;
        await pc.setLocalDescription();
        if (current() && pc.localDescription) this.post({ description: pc.localDescription.toJSON() });
      } catch (e) {
        this.hooks.error(e);
      } finally {
        this.offering = false;
      }
    };
    let was: RTCSignalingState = pc.signalingState;
    pc.onsignalingstatechange = () => {
      if (!current()) return;
      const now = pc.signalingState;
      if (now === 'stable' && was !== 'stable' && pc.remoteDescription) {
        this.done = true;
        this.hooks.negotiated();
      }
      was = now;
    };
    pc.oniceconnectionstatechange = () => {
      if (current()) this.hooks.iceChanged(pc.iceConnectionState);
    };

    if (local && local.getTracks().length > 0) {
      for (const track of local.getTracks()) pc.addTrack(track, local);
    } else if (!this.polite) {
      // Receive only: transceivers still make an offer happen (the polite side answers
      // whatever the impolite side offers).
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
    }
  }

  /** Closes the current connection (`open()` replaces it next); messages from or for
   *  its generation are ignored from now on. */
  retire(): void {
    if (this.current) detach(this.current);
    this.retired.add(this.gen);
  }

  /** Closes the current connection for good. */
  close(): void {
    const pc = this.current;
    this.current = null;
    if (pc) detach(pc);
  }

  /** (Polite side) asks the impolite side for an offer. */
  sayHello(): void {
    this.hooks.helloSent();
    this.post({ hello: true });
  }

  /** Replaces the tracks of `old` by those of `stream` on the current connection. */
  replaceLocal(old: MediaStream | null, stream: MediaStream | null): void {
    const pc = this.current;
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

  /** One ICE restart attempt. The impolite side restarts ICE (a new offer); the polite
   *  side asks it to, so the two never offer at once. */
  restartIce(): void {
    const pc = this.current;
    if (!pc) return;
    if (this.polite) {
      if (this.done) this.post({ restart: true });
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

  /** One message from the peer (run one at a time: each step awaits the connection). */
  async handle(w: Wire): Promise<void> {
    if (!this.current) return;
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
      this.hooks.peerRejoined();
      if (w.hello) return;
    }
    const pc = this.current!;
    if (w.hello) {
      // A polite peer waits for our offer: make sure one is on its way.
      if (this.polite) return;
      if (pc.signalingState === 'have-local-offer' && pc.localDescription) {
        this.post({ description: pc.localDescription.toJSON() });
      } else if (pc.signalingState === 'stable' && !this.done && !this.offering) {
        pc.restartIce(); // forces a (new) offer
      }
      return;
    }
    if (w.restart) {
      // The polite peer asks us to restart ICE (its path broke, or it resumed).
      if (this.polite) return;
      this.hooks.restartRequested(pc.signalingState === 'stable' && !this.offering);
      return;
    }
    try {
      if (w.description) {
        const d = w.description;
        // The impolite side sends its offer again when it cannot tell whether the polite
        // side had a connection for it (a hello crossing the offer, an ICE restart while
        // it waits). An offer already answered is a duplicate: its answer is on its way.
        // And an answer with no offer of ours outstanding answers such a duplicate:
        // applying either would fail ("Called in wrong state: stable").
        if (d.type === 'answer' && pc.signalingState !== 'have-local-offer') return;
        const repeated = d.type === 'offer' && pc.signalingState === 'stable'
          && pc.remoteDescription?.type === 'offer' && pc.remoteDescription.sdp === d.sdp;
        if (repeated) return;
        const collision = d.type === 'offer' && (this.offering || pc.signalingState !== 'stable');
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
      this.hooks.error(e);
    }
  }

  private post(body: WireBody): void {
    this.hooks.send({ holdfast: 'media', v: 1, from: this.gen, to: this.remoteGen, ...body });
  }
}

/** Closes `pc` without a word to its handlers. */
function detach(pc: RTCPeerConnection): void {
  pc.ontrack = pc.onicecandidate = pc.onnegotiationneeded = null;
  pc.onsignalingstatechange = pc.oniceconnectionstatechange = null;
  pc.close();
}
