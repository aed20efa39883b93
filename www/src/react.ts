// `holdfast/react`: hooks over the page-global client. No provider: every component
// reads the same client, before and after `connect()` resolves, and unmounting a
// component removes exactly what it added (StrictMode, HMR and route changes never
// open a second socket or close the first).

import {
  createElement,
  useCallback,
  useEffect,
  useLayoutEffect,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactElement,
  type VideoHTMLAttributes,
} from 'react';
import {
  callActions,
  declineRejoinCall,
  endOf,
  everySecondUntil,
  getServerState,
  getState,
  onEvent,
  pickCall,
  rejoinCall,
  secondsUntil,
  subscribeState,
  type CallActions,
  type CallEndReason,
  type CallStatus,
  type EventFor,
  type EventName,
  type HoldfastState,
} from './bindings.js';
import {
  NO_MEDIA,
  holdMedia,
  mediaControls,
  type MediaControls,
  type MediaHold,
  type MediaSnapshot,
  type UseMediaOptions,
} from './media-bindings.js';
import type { Call, Peer, RejoinOffer } from './index.js';

export type { CallActions, CallEndReason, CallStatus, EventFor, EventName, HoldfastState } from './bindings.js';
export type { MediaControls, MediaSnapshot, MediaViewState, UseMediaOptions } from './media-bindings.js';

/** The page's client state: connection `state` (`idle` until `connect()` resolves),
 *  `user`, `calls`, `presence`, `pendingRejoin`, and the `client` for actions. The same
 *  object until something changes. */
export function useHoldfast(): HoldfastState {
  return useSyncExternalStore(subscribeState, getState, getServerState);
}

/** A call as a view shows it. */
export interface CallView extends CallActions {
  /** The call while it is in the page's active-call map. */
  call: Call | null;
  /** The call's id (also once it ended). */
  id: string | null;
  /** `none`, `outgoing`, `incoming`, `active`, or `ended`. */
  status: CallStatus;
  /** The other participant (also once the call ended). */
  peer: Peer | null;
  /** The other participant's link: `reconnecting` while they are away. */
  peerLink: Call['peerLink'] | null;
  /** While the other participant is away: when their grace window closes (epoch ms). */
  peerDeadline: number | null;
  /** …and the whole seconds left, updated every second. */
  peerRemainingSeconds: number | null;
  /** While ringing: when the call ends `no-answer` (epoch ms). */
  ringDeadline: number | null;
  /** Why the call ended, when `status` is `ended`. */
  endReason: CallEndReason | null;
}

/** The call `callId`, or the page's current call (active, else ringing here, else
 *  ringing out), with its actions. After it ends, `status` is `ended` with the reason
 *  until another call comes along. */
export function useCall(callId?: string | null): CallView {
  const { calls } = useHoldfast();
  const call = pickCall(calls, callId);
  // The call this view last showed, so its end can be shown too.
  const shown = useRef<Call | null>(null);
  if (call) shown.current = call;
  else if (callId && shown.current?.id !== callId) shown.current = null;
  const shownId = call?.id ?? callId ?? shown.current?.id ?? null;
  const shownIdRef = useRef(shownId);
  shownIdRef.current = shownId;

  const [ended, setEnded] = useState<{ call: string; reason: CallEndReason } | null>(null);
  useHoldfastEvent('*', (ev) => {
    const end = endOf(ev);
    if (end && end.call === shownIdRef.current) setEnded(end);
  });

  const peerDeadline = call?.peerLink === 'reconnecting' ? call.peerDeadline : null;
  const peerRemainingSeconds = useSecondsLeft(peerDeadline);
  const isEnded = !call && ended !== null && ended.call === shownId;
  const actions = useActions(shownIdRef);
  return {
    ...actions,
    call,
    id: shownId,
    status: call ? call.phase : isEnded ? 'ended' : 'none',
    peer: call?.peer ?? (isEnded ? shown.current?.peer ?? null : null),
    peerLink: call?.peerLink ?? null,
    peerDeadline,
    peerRemainingSeconds,
    ringDeadline: call?.ringDeadline ?? null,
    endReason: isEnded ? ended.reason : null,
  };
}

function useActions(id: { current: string | null }): CallActions {
  const [actions] = useState(() => callActions(() => id.current));
  return actions;
}

/** Re-renders each time the whole seconds left until `deadline` change. */
function useSecondsLeft(deadline: number | null): number | null {
  const [, setTick] = useState(0);
  useEffect(() => {
    if (deadline == null) return undefined;
    return everySecondUntil(deadline, () => setTick((t) => t + 1));
  }, [deadline]);
  return deadline == null ? null : secondsUntil(deadline, Date.now());
}

/** The rejoin prompt after a reload, crash or closed tab. */
export interface RejoinPrompt {
  /** The call this page may take back, or `null`. */
  offer: RejoinOffer | null;
  /** Whole seconds left to rejoin, updated every second (0 without an offer). */
  remainingSeconds: number;
  /** Takes the call back (same call, same peer). */
  rejoin(): void;
  /** Forgets the offer. */
  decline(): void;
}

/** The page's pending rejoin with a live countdown, `rejoin()` and `decline()`. */
export function useRejoinPrompt(): RejoinPrompt {
  const { pendingRejoin } = useHoldfast();
  // Once answered, hide the offer at once (the answer takes a round trip to show).
  const [answered, setAnswered] = useState<string | null>(null);
  const offer = pendingRejoin && pendingRejoin.call !== answered ? pendingRejoin : null;
  useEffect(() => {
    if (answered !== null && pendingRejoin?.call !== answered) setAnswered(null);
  }, [answered, pendingRejoin]);
  const offerRef = useRef(offer);
  offerRef.current = offer;
  const answer = useCallback((act: (call: string) => void) => {
    const o = offerRef.current;
    if (!o) return;
    act(o.call);
    setAnswered(o.call);
  }, []);
  const rejoin = useCallback(() => answer(rejoinCall), [answer]);
  const decline = useCallback(() => answer(declineRejoinCall), [answer]);
  return {
    offer,
    remainingSeconds: offer ? Math.ceil(offer.remainingMs / 1000) : 0,
    rejoin,
    decline,
  };
}

const useIsomorphicLayoutEffect = typeof document === 'undefined' ? useEffect : useLayoutEffect;

/** Calls `handler` for each event of type `name` (`'*'`: every event) while the
 *  component is mounted, on whichever client the page has. For toasts and logs. */
export function useHoldfastEvent<K extends EventName>(name: K, handler: (event: EventFor<K>) => void): void {
  const latest = useRef(handler);
  useIsomorphicLayoutEffect(() => {
    latest.current = handler;
  });
  useEffect(() => onEvent(name, (ev) => latest.current(ev)), [name]);
}

/** A call's media as a view shows it, with its controls. */
export interface MediaView extends MediaSnapshot, MediaControls {}

const noSubscription = () => () => {};
const noMedia = () => NO_MEDIA;

/** The media of the active call `callId` (or of the page's active call): it opens the
 *  camera and microphone when the call is active (also after a rejoin), attaches them
 *  (`attachMedia()`), and gives the `localStream`, the `remoteStream`, the media `state`,
 *  mute and device choice, and `reconnectMedia()`. Every component showing the same call
 *  shares one session; when the last unmounts, or the call ends, the media closes and the
 *  tracks it opened stop. `options` are read when a call's media starts. */
export function useMedia(callId?: string | null, options: UseMediaOptions = {}): MediaView {
  const { calls } = useHoldfast();
  const call = pickCall(calls, callId);
  const active = call?.phase === 'active' ? call.id : null;
  const activeRef = useRef(active);
  activeRef.current = active;
  const optionsRef = useRef(options);
  optionsRef.current = options;

  const [hold, setHold] = useState<MediaHold | null>(null);
  useEffect(() => {
    if (!active) return undefined;
    const h = holdMedia(active, optionsRef.current);
    setHold(h);
    return () => {
      h.release();
      setHold((current) => (current === h ? null : current));
    };
  }, [active]);
  const current = hold && hold.call === active ? hold : null;
  const subscribe = useCallback((l: () => void) => (current ? current.subscribe(l) : noSubscription()), [current]);
  const getSnapshot = useCallback(() => (current ? current.snapshot() : NO_MEDIA), [current]);
  const snapshot = useSyncExternalStore(subscribe, getSnapshot, noMedia);
  const [controls] = useState(() => mediaControls(() => activeRef.current));
  return { ...snapshot, ...controls };
}

/** The props of `<CallVideo>`: a `<video>`'s, plus which call and which side. */
export interface CallVideoProps extends VideoHTMLAttributes<HTMLVideoElement> {
  /** The call (default: the page's active call). */
  callId?: string | null;
  /** Show this page's camera (muted, a preview) instead of the other participant. */
  local?: boolean;
}

/** A `<video>` playing the other participant of the active call (or, with `local`, this
 *  page's camera). It starts the call's media like `useMedia()`. */
export function CallVideo({ callId, local = false, ...props }: CallVideoProps): ReactElement {
  const { localStream, remoteStream } = useMedia(callId);
  const stream = local ? localStream : remoteStream;
  const ref = useRef<HTMLVideoElement>(null);
  useIsomorphicLayoutEffect(() => {
    const video = ref.current;
    if (!video) return;
    if (local) video.muted = true;
    if (video.srcObject !== stream) video.srcObject = stream;
  }, [stream, local]);
  return createElement('video', {
    autoPlay: true,
    playsInline: true,
    ...props,
    muted: local || props.muted,
    ref,
    'data-holdfast-video': local ? 'local' : 'remote',
  });
}
