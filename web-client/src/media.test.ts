/**
 * The media session's fall-back to voice only (media.ts, `checkVideoFlow` → `goAudioOnly`), with
 * a fake RTCPeerConnection whose outbound video counters we control and fake timers for the
 * 2-second stats ticks.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MediaSession, STALL_SAMPLES } from './media';
import type { Request } from './protocol';
import type { Action } from './state';

class FakeTrack {
  enabled = true;
  readyState: 'live' | 'ended' = 'live';
  stop = vi.fn(() => {
    this.readyState = 'ended';
  });
  constructor(
    readonly kind: 'audio' | 'video',
    readonly id: string,
  ) {}
  getSettings() {
    return { deviceId: `${this.kind}-device` };
  }
}

class FakeStream {
  constructor(private readonly tracks: FakeTrack[] = []) {}
  getTracks() {
    return [...this.tracks];
  }
  getAudioTracks() {
    return this.tracks.filter((t) => t.kind === 'audio');
  }
  getVideoTracks() {
    return this.tracks.filter((t) => t.kind === 'video');
  }
}

class FakeSender {
  replaceTrack = vi.fn(async (t: FakeTrack | null) => {
    this.track = t;
  });
  constructor(public track: FakeTrack | null) {}
}

/** What the outbound video counters say at each getStats; the test moves them. */
interface Counters {
  videoBytes: number;
  videoFrames: number;
  audioBytes: number;
}

const pcs: FakePc[] = [];

class FakePc {
  connectionState: RTCPeerConnectionState = 'new';
  signalingState: RTCSignalingState = 'stable';
  localDescription?: { type: string; sdp: string };
  onconnectionstatechange: (() => void) | null = null;
  ontrack: (() => void) | null = null;
  senders: FakeSender[] = [];
  counters: Counters = { videoBytes: 0, videoFrames: 0, audioBytes: 0 };
  constructor(readonly config: unknown) {
    pcs.push(this);
  }
  addTrack(track: FakeTrack) {
    const s = new FakeSender(track);
    this.senders.push(s);
    return s;
  }
  addTransceiver() {
    return {};
  }
  getSenders() {
    return this.senders;
  }
  getTransceivers() {
    return [];
  }
  async createOffer() {
    return { type: 'offer', sdp: 'v=0 fake offer' };
  }
  async setLocalDescription(d: { type: string; sdp: string }) {
    this.localDescription = d;
    this.signalingState = 'have-local-offer';
  }
  async getStats() {
    const c = this.counters;
    return new Map<string, object>([
      ['v', { type: 'outbound-rtp', kind: 'video', bytesSent: c.videoBytes, framesSent: c.videoFrames }],
      ['a', { type: 'outbound-rtp', kind: 'audio', bytesSent: c.audioBytes }],
    ]);
  }
  close() {
    this.connectionState = 'closed';
  }
  /** The ICE/DTLS connection comes up. */
  connect() {
    this.connectionState = 'connected';
    this.onconnectionstatechange?.();
  }
}

const welcome = {
  type: 'server',
  msg: {
    type: 'welcome',
    protocol: 1,
    case: 'c1',
    title: 'case',
    participant: 'p_con',
    role: 'consumer',
    name: '张三',
    status: 'admitted',
    head_seq: 1,
    roster: [],
    caucuses: [],
  },
} as unknown as Action;

/** A session that has entered (device check done), been admitted and is connected. */
async function connectedSession() {
  const sent: Request[] = [];
  const media = new MediaSession((r) => {
    sent.push(r);
    return `r${sent.length}`;
  });
  const audio = new FakeTrack('audio', 'mic');
  const video = new FakeTrack('video', 'cam');
  media.ready(new FakeStream([audio, video]) as unknown as MediaStream);
  media.onAction(welcome);
  // Let the queued capture → addTrack → offer steps run.
  await vi.advanceTimersByTimeAsync(0);
  const pc = pcs[pcs.length - 1]!;
  expect(sent.some((r) => r.type === 'media_offer')).toBe(true);
  pc.connect();
  const audioSender = pc.senders.find((s) => s.track === audio)!;
  const videoSender = pc.senders.find((s) => s.track === video)!;
  expect(audioSender && videoSender).toBeTruthy();
  return { media, sent, pc, audio, video, audioSender, videoSender };
}

/** `seconds` of stats ticks, the counters moving by `perTick` each tick (2 s). */
async function ticks(pc: FakePc, seconds: number, perTick: Partial<Counters>) {
  for (let t = 0; t < seconds; t += 2) {
    pc.counters.videoBytes += perTick.videoBytes ?? 0;
    pc.counters.videoFrames += perTick.videoFrames ?? 0;
    pc.counters.audioBytes += perTick.audioBytes ?? 0;
    await vi.advanceTimersByTimeAsync(2_000);
  }
}

const muteVideo = (sent: Request[]) => sent.filter((r) => r.type === 'mute' && r.kind === 'video' && r.muted);

beforeEach(() => {
  vi.useFakeTimers();
  vi.stubGlobal('RTCPeerConnection', FakePc);
  vi.stubGlobal('MediaStream', FakeStream);
  pcs.length = 0;
});

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe('graceful degradation to voice only', () => {
  it('video bytes that stay flat while connected: degraded, video line emptied, others told, voice kept', async () => {
    const { media, sent, pc, audio, video, audioSender, videoSender } = await connectedSession();
    // Healthy at first.
    await ticks(pc, 6, { videoBytes: 60_000, videoFrames: 30, audioBytes: 8_000 });
    expect(media.snapshot.degraded).toBe(false);
    // Then nothing leaves (the audio still does).
    await ticks(pc, 2 * (STALL_SAMPLES + 1), { audioBytes: 8_000 });
    expect(media.snapshot.degraded).toBe(true);
    expect(videoSender.replaceTrack).toHaveBeenCalledWith(null);
    expect(videoSender.track).toBeNull();
    expect(video.stop).toHaveBeenCalled();
    expect(media.snapshot.hasVideo).toBe(false);
    expect(muteVideo(sent)).toHaveLength(1);
    // The microphone goes on: same track, still on its line, not stopped, still in the preview.
    expect(audioSender.track).toBe(audio);
    expect(audioSender.replaceTrack).not.toHaveBeenCalled();
    expect(audio.stop).not.toHaveBeenCalled();
    expect(media.snapshot.hasAudio).toBe(true);
    expect(media.snapshot.local?.getAudioTracks()).toEqual([audio]);
    expect(media.snapshot.local?.getVideoTracks()).toEqual([]);
    // Said once, done once.
    await ticks(pc, 20, { audioBytes: 8_000 });
    expect(muteVideo(sent)).toHaveLength(1);
    expect(videoSender.replaceTrack).toHaveBeenCalledTimes(1);
    media.close();
  });

  it('a trickle (a frame every few seconds) is no better than nothing: degraded too', async () => {
    const { media, sent, pc, videoSender } = await connectedSession();
    // One 5-kB frame every 2 s (20 kbit/s): bytes keep moving, the picture is a still now and then.
    await ticks(pc, 2 * (STALL_SAMPLES + 1), { videoBytes: 5_000, videoFrames: 1, audioBytes: 8_000 });
    expect(media.snapshot.degraded).toBe(true);
    expect(videoSender.track).toBeNull();
    expect(muteVideo(sent)).toHaveLength(1);
    media.close();
  });

  it('healthy video, even small frames of a still scene, is kept', async () => {
    const { media, sent, pc, video, videoSender } = await connectedSession();
    // 15 frames a second at about 12 kbit/s.
    await ticks(pc, 40, { videoBytes: 3_000, videoFrames: 30, audioBytes: 8_000 });
    expect(media.snapshot.degraded).toBe(false);
    expect(videoSender.track).toBe(video);
    expect(muteVideo(sent)).toHaveLength(0);
    media.close();
  });

  it('a camera the person turned off, or a connection not up, is not a network problem', async () => {
    const { media, sent, pc, video, videoSender } = await connectedSession();
    media.toggleCamera();
    await ticks(pc, 30, { audioBytes: 8_000 });
    expect(media.snapshot.degraded).toBe(false);
    media.toggleCamera();
    pc.connectionState = 'disconnected';
    pc.onconnectionstatechange?.();
    await ticks(pc, 8, {});
    expect(media.snapshot.degraded).toBe(false);
    expect(videoSender.track).toBe(video);
    // Only the person's own camera-off and -on were said.
    expect(sent.filter((r) => r.type === 'mute' && r.kind === 'video').map((r) => (r as { muted: boolean }).muted)).toEqual([true, false]);
    media.close();
  });
});

describe('downlink protection (media_downlink)', () => {
  const downlink = (video: 'full' | 'reduced' | 'paused') =>
    ({ type: 'server', msg: { type: 'media_downlink', video } }) as unknown as Action;

  it('follows what the server says, and a new peer connection starts from full video', async () => {
    const { media, pc } = await connectedSession();
    expect(media.snapshot.downlink).toBe('full');
    const seen: string[] = [];
    media.subscribe(() => seen.push(media.snapshot.downlink));
    media.onAction(downlink('paused'));
    expect(media.snapshot.downlink).toBe('paused');
    media.onAction(downlink('reduced'));
    media.onAction(downlink('full'));
    expect(seen).toEqual(['paused', 'reduced', 'full']);
    // Paused again, then the peer connection is rebuilt: the server's state for the old one is gone.
    media.onAction(downlink('paused'));
    media.onAction(welcome);
    await vi.advanceTimersByTimeAsync(0);
    expect(pcs[pcs.length - 1]).not.toBe(pc);
    expect(media.snapshot.downlink).toBe('full');
    media.close();
  });
});
