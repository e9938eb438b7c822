/**
 * The pure part of the media plane: which transceiver `mid` carries whose audio or video, the
 * list of video tiles to show, who newly receives us, which camera comes next, and when video
 * that should flow does not. No DOM, no WebRTC: `media.ts` feeds it, `media-logic.test.ts`
 * drives it directly.
 *
 * The media flow in short (docs/protocol.md, "Media"): once admitted the client offers its
 * microphone and camera on its one peer connection with the server (`media_offer`, answered by
 * `media_answer`); the server adds a send-only line per track we may receive and renegotiates
 * (`media_offer` from the server, our `media_answer`), and says in `media_tracks` which `mid`
 * carries whose `audio`/`video`. `media_tracks` lists only the tracks flowing now: a caucus
 * that hides someone from us removes their entries, so their tile goes away; they come back
 * (same mids) when the caucus ends.
 */
import type { DownlinkVideo, MediaKind, TrackInfo } from './protocol';

/** What someone told us about their microphone and camera (`mute` messages). */
export type MuteStates = Record<string, { audio?: boolean; video?: boolean }>;

export interface Tile {
  participant: string;
  audioMid?: string;
  videoMid?: string;
  /** They muted their microphone (or send no audio at all). */
  micMuted: boolean;
  /** They turned their camera off (or send no video at all). */
  camOff: boolean;
  /** They send no video at all (voice only, or no camera): an audio-only tile. */
  audioOnly: boolean;
}

/** mid → whose track, of which kind. */
export function midMap(tracks: readonly TrackInfo[]): Map<string, { participant: string; kind: MediaKind }> {
  const m = new Map<string, { participant: string; kind: MediaKind }>();
  for (const t of tracks) m.set(t.mid, { participant: t.participant, kind: t.kind });
  return m;
}

/** Everyone whose media we receive now, in the order the server lists them. */
export function senders(tracks: readonly TrackInfo[]): string[] {
  const out: string[] = [];
  for (const t of tracks) if (!out.includes(t.participant)) out.push(t.participant);
  return out;
}

/**
 * One tile per participant whose media we receive (never ourselves), with the mids of their
 * audio and video and their mute states. Someone who publishes several tracks of one kind
 * (not done by this client) is shown with the first.
 */
export function tiles(tracks: readonly TrackInfo[], mutes: MuteStates, me?: string): Tile[] {
  const byWho = new Map<string, Tile>();
  for (const t of tracks) {
    if (t.participant === me) continue;
    let tile = byWho.get(t.participant);
    if (!tile) {
      tile = { participant: t.participant, micMuted: false, camOff: false, audioOnly: false };
      byWho.set(t.participant, tile);
    }
    if (t.kind === 'audio' && tile.audioMid === undefined) tile.audioMid = t.mid;
    if (t.kind === 'video' && tile.videoMid === undefined) tile.videoMid = t.mid;
  }
  return [...byWho.values()].map((tile) => {
    const m = mutes[tile.participant] ?? {};
    return {
      ...tile,
      micMuted: tile.audioMid === undefined || !!m.audio,
      camOff: tile.videoMid === undefined || !!m.video,
      audioOnly: tile.videoMid === undefined,
    };
  });
}

/**
 * Who receives us now but did not before. The room's rule is symmetric (whoever we receive
 * receives us), so these are the people who have not heard our `mute` state yet: the server
 * sends `mute` only to those receiving us at the time.
 */
export function newSenders(before: readonly TrackInfo[], after: readonly TrackInfo[]): string[] {
  const had = new Set(senders(before));
  return senders(after).filter((p) => !had.has(p));
}

/**
 * What to do with a `media_offer` from the server. Our own offer outstanding (we sent it and
 * await the answer): the server treats ours as the winner and offers again after it
 * (docs/protocol.md, "Media" point 5), so its offer is dropped. No connection: nothing to
 * answer.
 */
export function onServerOffer(signalingState: RTCSignalingState | undefined, makingOffer: boolean): 'answer' | 'ignore' {
  if (signalingState === undefined || signalingState === 'closed') return 'ignore';
  if (makingOffer || signalingState === 'have-local-offer') return 'ignore';
  return 'answer';
}

/** The camera after `current` in the list (wrapping), or undefined when there is no other. */
export function nextCamera(devices: readonly { kind: string; deviceId: string }[], current?: string): string | undefined {
  const cams = devices.filter((d) => d.kind === 'videoinput' && d.deviceId !== '');
  if (cams.length < 2) return undefined;
  const i = cams.findIndex((d) => d.deviceId === current);
  return cams[(i + 1) % cams.length]!.deviceId;
}

/**
 * The cameras to try, in order, when switching away from `current`: every other camera, starting
 * with the next one and wrapping round. A switch tries them in turn until one actually sends
 * (some cameras cannot be encoded at all, e.g. a laptop's infrared face-login camera, listed
 * like any other), and goes back to `current` if none does.
 */
export function camerasToTry(devices: readonly { kind: string; deviceId: string }[], current?: string): string[] {
  const cams = devices.filter((d) => d.kind === 'videoinput' && d.deviceId !== '').map((d) => d.deviceId);
  if (cams.length < 2) return [];
  const i = cams.indexOf(current ?? '');
  const out: string[] = [];
  for (let k = 1; k <= cams.length; k++) {
    const id = cams[(i + k + cams.length) % cams.length]!;
    if (id !== current && !out.includes(id)) out.push(id);
  }
  return out;
}

/** A counter (bytes sent) moved between the first and the last sample: something flows. */
export function flowing(samples: readonly number[]): boolean {
  return samples.length >= 2 && samples[samples.length - 1]! > samples[0]!;
}

/**
 * Video that should flow but does not: the counter (bytes sent, or frames decoded) has not
 * moved over the last `window` samples, taken while the connection was up. Fewer samples than
 * that: too early to tell.
 */
export function stalled(samples: readonly number[], window: number): boolean {
  if (samples.length < window) return false;
  const recent = samples.slice(-window);
  return recent[recent.length - 1]! <= recent[0]!;
}

/** One look at the video we send: when (ms), and the bytes and frames sent so far. */
export interface SendSample {
  at: number;
  bytes: number;
  /** Undefined where the browser does not count frames sent. */
  frames?: number;
}

/**
 * Below these, averaged over a whole window, the video we send is no use to the others: under
 * one frame a second is a still picture now and then, and under 1 kB/s no picture at all. (A
 * camera pointed at a wall still sends its full frame rate, only smaller frames; Chromium's
 * own minimum for a video stream is about 30 kbit/s.)
 */
export const MIN_VIDEO_FPS = 1;
export const MIN_VIDEO_BPS = 8_000;

/**
 * Video we send that the others cannot use: over the last `window` samples (taken while the
 * connection was up and the camera on), fewer than `minFps` frames a second or fewer than
 * `minBps` bits a second left. Not only none at all: a phone on a weak uplink trickles a frame
 * now and then (a key frame the server asked for), the others see a frozen face, and that video
 * still takes the bandwidth the voice needs. Fewer samples than the window: too early to tell.
 */
export function videoTooPoor(samples: readonly SendSample[], window: number, minFps = MIN_VIDEO_FPS, minBps = MIN_VIDEO_BPS): boolean {
  if (window < 2 || samples.length < window) return false;
  const recent = samples.slice(-window);
  const first = recent[0]!;
  const last = recent[recent.length - 1]!;
  const secs = (last.at - first.at) / 1000;
  if (secs <= 0) return false;
  const bps = ((last.bytes - first.bytes) * 8) / secs;
  if (bps < minBps) return true;
  if (first.frames === undefined || last.frames === undefined) return false;
  return (last.frames - first.frames) / secs < minFps;
}

/** Speaking, from an analyser's time-domain bytes (128 = silence): RMS above a threshold. */
export function speakingLevel(bytes: ArrayLike<number>): number {
  if (bytes.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) {
    const v = (bytes[i]! - 128) / 128;
    sum += v * v;
  }
  return Math.sqrt(sum / bytes.length);
}

export const SPEAKING_THRESHOLD = 0.04;

/** How long the speaking indicator stays on after the last loud sample (no flicker between words). */
export const SPEAKING_HOLD_MS = 700;

/** Speaking now: a sample above the threshold within the last `SPEAKING_HOLD_MS`. */
export function speakingNow(lastLoudAt: number | undefined, now: number, holdMs = SPEAKING_HOLD_MS): boolean {
  return lastLoudAt !== undefined && now - lastLoudAt < holdMs;
}

/**
 * The device check's level meter, as a falling peak: a new peak shows at once, then the bar
 * sinks by `fall` per frame, so a short sound stays visible long enough to be seen.
 */
export function meterLevel(previous: number, peak: number, fall = 0.92): number {
  return Math.min(1, Math.max(peak, previous * fall));
}

/** A notice the media card shows: the key of its text under `media` in i18n.ts. */
export type MediaNotice = 'noDevices' | 'noCamera' | 'degraded' | 'downlinkPaused' | 'downlinkReduced' | 'connLost';

/**
 * The notices the media card shows, in order: our own devices, our own video, what the server
 * holds back on a weak link (`media_downlink`: the others' video paused or at lower quality, so
 * that their voices get through), and a lost connection.
 */
export function mediaNotices(s: {
  capture?: 'no_camera' | 'no_devices';
  degraded: boolean;
  downlink: DownlinkVideo;
  connection: string;
}): MediaNotice[] {
  const out: MediaNotice[] = [];
  if (s.capture === 'no_devices') out.push('noDevices');
  else if (s.capture === 'no_camera') out.push('noCamera');
  if (s.degraded) out.push('degraded');
  if (s.downlink === 'paused') out.push('downlinkPaused');
  else if (s.downlink === 'reduced') out.push('downlinkReduced');
  if (s.connection === 'failed' || s.connection === 'disconnected') out.push('connLost');
  return out;
}

/**
 * Whether the others' tiles show their video: not while the server has paused it on our weak
 * link (their last frame would stay frozen on the tile; their avatar shows instead).
 */
export function othersVideoShown(downlink: DownlinkVideo): boolean {
  return downlink !== 'paused';
}
