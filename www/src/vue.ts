// `holdfast/vue`: composables over the page-global client. No plugin: every component
// reads the same client, before and after `connect()` resolves. Each composable must run
// inside `setup()` (or an `effectScope`); when that scope ends it removes exactly what it
// added, so mounting, unmounting and HMR never open a second socket or close the first.

import {
  computed,
  defineComponent,
  h,
  isRef,
  onScopeDispose,
  shallowRef,
  watch,
  type ComputedRef,
  type DefineComponent,
  type Ref,
  type ShallowRef,
} from 'vue';
import {
  callActions,
  declineRejoinCall,
  endOf,
  everySecondUntil,
  getState,
  inBrowser,
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
  type MediaViewState,
  type UseMediaOptions,
} from './media-bindings.js';
import type { Call, Peer, RejoinOffer } from './index.js';

export type { CallActions, CallEndReason, CallStatus, EventFor, EventName, HoldfastState } from './bindings.js';
export type { MediaControls, MediaSnapshot, MediaViewState, UseMediaOptions } from './media-bindings.js';

/** The page's client state as a shallow ref: connection `state` (`idle` until
 *  `connect()` resolves), `user`, `calls`, `presence`, `pendingRejoin`, and the
 *  `client` for actions. */
export function useHoldfast(): Readonly<ShallowRef<HoldfastState>> {
  const state = shallowRef(getState());
  // Server-side rendering: no client, nothing to follow (and no scope disposal).
  if (!inBrowser) return state;
  onScopeDispose(subscribeState(() => {
    state.value = getState();
  }));
  return state;
}

/** A call id, a ref to one, or a getter. */
export type CallIdSource = string | null | undefined | Ref<string | null | undefined> | (() => string | null | undefined);

function read(source: CallIdSource): string | null {
  const v = typeof source === 'function' ? source() : isRef(source) ? source.value : source;
  return v ?? null;
}

/** A call as a view shows it; destructure freely, every field is a ref or an action. */
export interface CallRefs extends CallActions {
  /** The call while it is in the page's active-call map. */
  call: ComputedRef<Call | null>;
  /** The call's id (also once it ended). */
  id: ComputedRef<string | null>;
  /** `none`, `outgoing`, `incoming`, `active`, or `ended`. */
  status: ComputedRef<CallStatus>;
  /** The other participant (also once the call ended). */
  peer: ComputedRef<Peer | null>;
  /** The other participant's link: `reconnecting` while they are away. */
  peerLink: ComputedRef<Call['peerLink'] | null>;
  /** While the other participant is away: when their grace window closes (epoch ms). */
  peerDeadline: ComputedRef<number | null>;
  /** …and the whole seconds left, updated every second. */
  peerRemainingSeconds: ComputedRef<number | null>;
  /** While ringing: when the call ends `no-answer` (epoch ms). */
  ringDeadline: ComputedRef<number | null>;
  /** Why the call ended, when `status` is `ended`. */
  endReason: ComputedRef<CallEndReason | null>;
}

/** The call `callId` (a value, ref or getter), or the page's current call (active, else
 *  ringing here, else ringing out), with its actions. After it ends, `status` is
 *  `ended` with the reason until another call comes along. */
export function useCall(callId?: CallIdSource): CallRefs {
  const hf = useHoldfast();
  const call = computed(() => pickCall(hf.value.calls, read(callId)));
  // The call this view last showed, so its end can be shown too.
  const shown = shallowRef<Call | null>(null);
  watch(
    [call, () => read(callId)],
    ([c, wanted]) => {
      if (c) shown.value = c;
      else if (wanted && shown.value?.id !== wanted) shown.value = null;
    },
    { immediate: true, flush: 'sync' },
  );
  const id = computed(() => call.value?.id ?? read(callId) ?? shown.value?.id ?? null);

  const ended = shallowRef<{ call: string; reason: CallEndReason } | null>(null);
  useHoldfastEvent('*', (ev) => {
    const end = endOf(ev);
    if (end && end.call === id.value) ended.value = end;
  });
  const isEnded = computed(() => !call.value && ended.value !== null && ended.value.call === id.value);

  const peerDeadline = computed(() => (call.value?.peerLink === 'reconnecting' ? call.value.peerDeadline : null));
  const now = shallowRef(Date.now());
  let stopTicking = () => {};
  watch(
    peerDeadline,
    (deadline) => {
      stopTicking();
      stopTicking = () => {};
      now.value = Date.now();
      if (deadline != null) stopTicking = everySecondUntil(deadline, () => (now.value = Date.now()));
    },
    { immediate: true, flush: 'sync' },
  );
  onScopeDispose(() => stopTicking());

  return {
    ...callActions(() => id.value),
    call,
    id,
    status: computed(() => (call.value ? call.value.phase : isEnded.value ? 'ended' : 'none')),
    peer: computed(() => call.value?.peer ?? (isEnded.value ? shown.value?.peer ?? null : null)),
    peerLink: computed(() => call.value?.peerLink ?? null),
    peerDeadline,
    peerRemainingSeconds: computed(() => (peerDeadline.value == null ? null : secondsUntil(peerDeadline.value, now.value))),
    ringDeadline: computed(() => call.value?.ringDeadline ?? null),
    endReason: computed(() => (isEnded.value ? ended.value!.reason : null)),
  };
}

/** The rejoin prompt after a reload, crash or closed tab. */
export interface RejoinPromptRefs {
  /** The call this page may take back, or `null`. */
  offer: ComputedRef<RejoinOffer | null>;
  /** Whole seconds left to rejoin, updated every second (0 without an offer). */
  remainingSeconds: ComputedRef<number>;
  /** Takes the call back (same call, same peer). */
  rejoin(): void;
  /** Forgets the offer. */
  decline(): void;
}

/** The page's pending rejoin with a live countdown, `rejoin()` and `decline()`. */
export function useRejoinPrompt(): RejoinPromptRefs {
  const hf = useHoldfast();
  // Once answered, hide the offer at once (the answer takes a round trip to show).
  const answered = shallowRef<string | null>(null);
  watch(
    () => hf.value.pendingRejoin,
    (p) => {
      if (answered.value !== null && p?.call !== answered.value) answered.value = null;
    },
    { flush: 'sync' },
  );
  const offer = computed(() => {
    const p = hf.value.pendingRejoin;
    return p && p.call !== answered.value ? p : null;
  });
  const answer = (act: (call: string) => void) => {
    const o = offer.value;
    if (!o) return;
    act(o.call);
    answered.value = o.call;
  };
  return {
    offer,
    remainingSeconds: computed(() => (offer.value ? Math.ceil(offer.value.remainingMs / 1000) : 0)),
    rejoin: () => answer(rejoinCall),
    decline: () => answer(declineRejoinCall),
  };
}

/** Calls `handler` for each event of type `name` (`'*'`: every event) until the
 *  current scope ends, on whichever client the page has. For toasts and logs. */
export function useHoldfastEvent<K extends EventName>(name: K, handler: (event: EventFor<K>) => void): void {
  if (inBrowser) onScopeDispose(onEvent(name, handler));
}

/** A call's media as refs, with its controls; destructure freely. */
export interface MediaRefs extends MediaControls {
  /** The call whose media this is (`null`: no active call). */
  call: ComputedRef<string | null>;
  /** `none` without an active call, else the media's state. */
  state: ComputedRef<MediaViewState>;
  /** The camera and microphone being sent. */
  localStream: ComputedRef<MediaStream | null>;
  /** The other participant's audio and video, once a track arrived. */
  remoteStream: ComputedRef<MediaStream | null>;
  /** The microphone is muted. */
  audioMuted: ComputedRef<boolean>;
  /** The camera is off. */
  videoMuted: ComputedRef<boolean>;
  /** The cameras the browser lists. */
  cameras: ComputedRef<readonly MediaDeviceInfo[]>;
  /** The microphones the browser lists. */
  microphones: ComputedRef<readonly MediaDeviceInfo[]>;
  /** The `deviceId` of the camera being sent. */
  camera: ComputedRef<string | null>;
  /** The `deviceId` of the microphone being sent. */
  microphone: ComputedRef<string | null>;
  /** The last failure (`media-unavailable`, `media-failed`, …). */
  error: ComputedRef<MediaSnapshot['error']>;
}

/** The media of the active call `callId` (a value, ref or getter; default: the page's
 *  active call): it opens the camera and microphone when the call is active (also after a
 *  rejoin), attaches them (`attachMedia()`), and gives the `localStream`, the
 *  `remoteStream`, the media `state`, mute and device choice, and `reconnectMedia()`.
 *  Every component showing the same call shares one session; when the last scope ends,
 *  or the call ends, the media closes and the tracks it opened stop. */
export function useMedia(callId?: CallIdSource, options: UseMediaOptions = {}): MediaRefs {
  const hf = useHoldfast();
  const active = computed(() => {
    const c = pickCall(hf.value.calls, read(callId));
    return c?.phase === 'active' ? c.id : null;
  });
  const snap = shallowRef<MediaSnapshot>(NO_MEDIA);
  if (inBrowser) {
    let hold: MediaHold | null = null;
    let unsubscribe = () => {};
    const drop = () => {
      unsubscribe();
      unsubscribe = () => {};
      hold?.release();
      hold = null;
    };
    watch(
      active,
      (id) => {
        drop();
        snap.value = NO_MEDIA;
        if (!id) return;
        const held = holdMedia(id, options);
        hold = held;
        snap.value = held.snapshot();
        unsubscribe = held.subscribe(() => (snap.value = held.snapshot()));
      },
      { immediate: true, flush: 'sync' },
    );
    onScopeDispose(drop);
  }
  const field = <K extends keyof MediaSnapshot>(k: K) => computed(() => snap.value[k]);
  return {
    ...mediaControls(() => active.value),
    call: field('call'),
    state: field('state'),
    localStream: field('localStream'),
    remoteStream: field('remoteStream'),
    audioMuted: field('audioMuted'),
    videoMuted: field('videoMuted'),
    cameras: field('cameras'),
    microphones: field('microphones'),
    camera: field('camera'),
    microphone: field('microphone'),
    error: field('error'),
  };
}

/** The props of `<CallVideo>`. */
export interface CallVideoProps {
  /** The call (default: the page's active call). */
  callId?: string;
  /** Show this page's camera (muted, a preview) instead of the other participant. */
  local?: boolean;
}

/** A `<video>` playing the other participant of the active call (or, with `local`, this
 *  page's camera). It starts the call's media like `useMedia()`. */
export const CallVideo: DefineComponent<CallVideoProps> = defineComponent({
  name: 'CallVideo',
  props: {
    /** The call (default: the page's active call). */
    callId: { type: String, default: undefined },
    /** Show this page's camera (muted, a preview) instead of the other participant. */
    local: { type: Boolean, default: false },
  },
  setup(props) {
    const { localStream, remoteStream } = useMedia(() => props.callId);
    const el = shallowRef<HTMLVideoElement | null>(null);
    watch(
      [() => (props.local ? localStream.value : remoteStream.value), el],
      ([stream, video]) => {
        if (!video) return;
        if (props.local) video.muted = true;
        if (video.srcObject !== stream) video.srcObject = stream;
      },
      { flush: 'post', immediate: true },
    );
    return () =>
      h('video', {
        ref: el,
        autoplay: true,
        playsinline: true,
        muted: props.local,
        'data-holdfast-video': props.local ? 'local' : 'remote',
      });
  },
});
