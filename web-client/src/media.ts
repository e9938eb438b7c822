/**
 * The media session: our one RTCPeerConnection with the server's SFU, the local camera and
 * microphone, and the remote tracks of whoever we may receive.
 *
 * Flow (docs/protocol.md, "Media"):
 * 1. A `welcome` with `status: admitted` (first join, admission from the lobby, or a resumed
 *    connection) starts a fresh peer connection: capture (audio + video, else audio only, else
 *    nothing and receive only), add the tracks, offer (`media_offer`), apply `media_answer`.
 *    The server closes our peer when the websocket drops, so every new welcome starts anew.
 * 2. The server renegotiates with `media_offer`; we answer with `media_answer`. If our own offer
 *    is outstanding, ours wins and the server's is dropped (it offers again after).
 * 3. `media_tracks` says which mid carries whose track; the remote track of a mid is its
 *    transceiver's receiver track. Only flowing tracks are listed: someone hidden by a caucus
 *    drops out of the list, and so out of the tiles.
 * 4. Muting sets `track.enabled = false` (the line keeps flowing, silence or black) and sends
 *    `mute`; newcomers who start receiving us are told our state again.
 * 5. Video that cannot be captured, or that once connected leaves too slowly to be of use
 *    (`videoTooPoor`: under a frame a second, not only none at all), falls back to audio only
 *    (and says so: `degraded`); the microphone goes on as before.
 * 6. The peer connection fails while the websocket stays up: ICE restart, and if that does not
 *    do, a fresh peer connection through a new websocket (`media-recovery.ts`).
 * 7. The server says how much video our downlink carries (`media_downlink`): when it pauses the
 *    others' video to keep their voices clear on a lossy link, their tiles show no video and a
 *    notice says why, until it is given back.
 *
 * Everything the views need is in `snapshot`; `subscribe` tells them when it changed.
 */
import type { DownlinkVideo, IceServer, Request, ServerMessage, TrackInfo } from './protocol';
import type { Action } from './state';
import { camerasToTry, flowing, newSenders, nextCamera, onServerOffer, videoTooPoor, type MuteStates, type SendSample } from './media-logic';
import { fingerprintOf, initialRecovery, recover, type Recovery, type RecoveryInput } from './media-recovery';

export type CaptureProblem = 'no_camera' | 'no_devices';

export interface MediaSnapshot {
  local?: MediaStream;
  micMuted: boolean;
  camOff: boolean;
  /** We have a camera track at all. */
  hasVideo: boolean;
  hasAudio: boolean;
  /** More than one camera: switching makes sense. */
  canSwitch: boolean;
  capture?: CaptureProblem;
  /** Video was being captured but could not be sent: we went audio-only. */
  degraded: boolean;
  connection: RTCPeerConnectionState | 'none';
  /** How much of the others' video the server sends us now (`media_downlink`). */
  downlink: DownlinkVideo;
  tracks: TrackInfo[];
  /** mid → the remote track on it. */
  remote: Record<string, MediaStreamTrack>;
  mutes: MuteStates;
}

type Send = (r: Request) => string | undefined;

const STATS_EVERY_MS = 2_000;
/** How long a newly chosen camera has to get video out before the next one is tried. */
const CAMERA_CHECK_MS = 3_000;
/**
 * Samples (at STATS_EVERY_MS, so a window of 10 s) of too little video leaving, while connected
 * with the camera on, before going audio-only.
 */
export const STALL_SAMPLES = 6;

export class MediaSession {
  private pc?: RTCPeerConnection;
  private iceServers: RTCIceServer[] = [];
  private makingOffer = false;
  private chain: Promise<void> = Promise.resolve();
  private listeners = new Set<() => void>();
  private capturing?: Promise<void>;
  private statsTimer?: ReturnType<typeof setInterval>;
  private videoSent: SendSample[] = [];
  private closed = false;
  private switching = false;
  /** Media-only recovery (media-recovery.ts). */
  private recovery: Recovery = initialRecovery;
  /** The server's DTLS fingerprint in its first answer on this peer connection. */
  private remoteFingerprint?: string;
  /** Until the person has checked their devices (precheck.tsx), media waits. */
  private gated = true;
  private startWhenReady = false;
  snapshot: MediaSnapshot = {
    micMuted: false,
    camOff: false,
    hasVideo: false,
    hasAudio: false,
    canSwitch: false,
    degraded: false,
    connection: 'none',
    downlink: 'full',
    tracks: [],
    remote: {},
    mutes: {},
  };

  /**
   * `resignal`: close and reopen the signaling websocket (it resumes; the server drops our peer
   * with the old one, and the new welcome starts a fresh peer connection).
   */
  constructor(
    private readonly send: Send,
    private readonly resignal: () => void = () => undefined,
  ) {}

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private update(patch: Partial<MediaSnapshot>): void {
    this.snapshot = { ...this.snapshot, ...patch };
    for (const fn of this.listeners) fn();
  }

  /** Everything the signaling connection produces passes through here (see app.tsx). */
  onAction(a: Action): void {
    if (this.closed) return;
    if (a.type === 'disconnected') {
      // The server drops our peer with the websocket; a new welcome starts a new one.
      this.closePc();
      return;
    }
    if (a.type === 'server') this.onServer(a.msg);
  }

  private onServer(msg: ServerMessage): void {
    switch (msg.type) {
      case 'welcome':
        if (msg.status !== 'admitted') {
          this.closePc();
          return;
        }
        this.iceServers = (msg.ice_servers ?? []).map(toRtcIceServer);
        if (this.gated) this.startWhenReady = true;
        else this.start();
        return;
      case 'media_answer': {
        const pc = this.pc;
        this.enqueue(async () => {
          if (pc !== this.pc || !pc || pc.signalingState !== 'have-local-offer') return;
          await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
          this.makingOffer = false;
          this.refreshRemote();
          const fp = fingerprintOf(msg.sdp);
          if (this.remoteFingerprint === undefined) this.remoteFingerprint = fp;
          else if (fp !== undefined && fp !== this.remoteFingerprint) this.feed(pc, { type: 'fingerprint_changed', now: Date.now() });
        });
        return;
      }
      case 'media_offer': {
        const pc = this.pc;
        this.enqueue(async () => {
          if (pc !== this.pc || !pc) return;
          if (onServerOffer(pc.signalingState, this.makingOffer) === 'ignore') return;
          await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
          const answer = await pc.createAnswer();
          await pc.setLocalDescription(answer);
          this.send({ type: 'media_answer', sdp: pc.localDescription?.sdp ?? answer.sdp ?? '' });
          this.refreshRemote();
        });
        return;
      }
      case 'media_tracks': {
        const fresh = newSenders(this.snapshot.tracks, msg.tracks);
        this.update({ tracks: msg.tracks });
        this.refreshRemote();
        if (fresh.length > 0) this.announceMutes();
        return;
      }
      case 'media_downlink':
        this.update({ downlink: msg.video });
        return;
      case 'mute': {
        const old = this.snapshot.mutes[msg.participant] ?? {};
        this.update({ mutes: { ...this.snapshot.mutes, [msg.participant]: { ...old, [msg.kind]: msg.muted } } });
        return;
      }
      case 'error':
        // A refused offer or answer leaves the connection half-negotiated: start over once.
        return;
      default:
        return;
    }
  }

  /** Runs SDP steps one after the other, so offers and answers never interleave. */
  private enqueue(step: () => Promise<void>): void {
    this.chain = this.chain.then(step).catch(() => {
      // A step that failed (a stale description, a closed connection) is dropped; the next
      // welcome or server offer starts from a consistent state.
    });
  }

  /** Captures once: audio + video, else audio only, else nothing (receive only). */
  private capture(): Promise<void> {
    if (!this.capturing) this.capturing = this.doCapture();
    return this.capturing;
  }

  private async doCapture(): Promise<void> {
    const md = navigator.mediaDevices;
    let stream: MediaStream | undefined;
    let problem: CaptureProblem | undefined;
    if (md?.getUserMedia) {
      try {
        stream = await md.getUserMedia({ audio: true, video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 15 } } });
      } catch {
        try {
          stream = await md.getUserMedia({ audio: true });
          problem = 'no_camera';
        } catch {
          problem = 'no_devices';
        }
      }
    } else problem = 'no_devices';
    const hasVideo = !!stream?.getVideoTracks().length;
    const hasAudio = !!stream?.getAudioTracks().length;
    this.update({ local: stream, hasVideo, hasAudio, capture: problem });
    await this.countCameras();
  }

  private async countCameras(): Promise<void> {
    try {
      const devices = await navigator.mediaDevices.enumerateDevices();
      this.update({ canSwitch: nextCamera(devices, this.currentCameraId()) !== undefined });
    } catch {
      this.update({ canSwitch: false });
    }
  }

  private currentCameraId(): string | undefined {
    return this.snapshot.local?.getVideoTracks()[0]?.getSettings().deviceId;
  }

  /** A fresh peer connection and our offer. */
  private start(): void {
    this.closePc();
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.pc = pc;
    this.videoSent = [];
    // Others tell a new receiver their mute state again (they see us arrive in media_tracks).
    this.update({ connection: pc.connectionState, downlink: 'full', tracks: [], remote: {}, mutes: {} });
    this.remoteFingerprint = undefined;
    this.feed(pc, { type: 'new_pc', now: Date.now() });
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      this.update({ connection: pc.connectionState });
      this.feed(pc, { type: 'state', state: pc.connectionState, now: Date.now() });
    };
    pc.ontrack = () => {
      if (pc === this.pc) this.refreshRemote();
    };
    this.enqueue(async () => {
      await this.capture();
      if (pc !== this.pc) return;
      const local = this.snapshot.local;
      const audio = local?.getAudioTracks()[0];
      const video = local?.getVideoTracks()[0];
      if (audio && local) pc.addTrack(audio, local);
      if (video && local) pc.addTrack(video, local);
      // Nothing to send: still one line, so the server has something to answer and can add
      // the lines we receive on.
      if (!audio && !video) pc.addTransceiver('audio', { direction: 'recvonly' });
      this.makingOffer = true;
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      this.send({ type: 'media_offer', sdp: pc.localDescription?.sdp ?? offer.sdp ?? '' });
      // Tell the room what it would otherwise not know: we start muted.
      this.announceMutes();
    });
    this.statsTimer = setInterval(() => {
      this.feed(pc, { type: 'tick', now: Date.now() });
      void this.checkVideoFlow(pc);
    }, STATS_EVERY_MS);
  }

  /** One input to the recovery state machine, and what it says to do. */
  private feed(pc: RTCPeerConnection, input: RecoveryInput): void {
    if (pc !== this.pc) return;
    const { next, act } = recover(this.recovery, input);
    this.recovery = next;
    if (act === 'ice_restart') this.restartIce(pc);
    else if (act === 'resignal') this.resignal();
  }

  /** A new offer with fresh ICE credentials on the same peer connection. */
  private restartIce(pc: RTCPeerConnection): void {
    this.enqueue(async () => {
      if (pc !== this.pc) return;
      // An offer of ours never answered (lost with the network): take it back first.
      if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' });
      // A server offer being answered: the next tick tries again.
      if (pc.signalingState !== 'stable') return;
      pc.restartIce();
      this.makingOffer = true;
      const offer = await pc.createOffer({ iceRestart: true });
      await pc.setLocalDescription(offer);
      this.send({ type: 'media_offer', sdp: pc.localDescription?.sdp ?? offer.sdp ?? '' });
    });
  }

  private closePc(): void {
    clearInterval(this.statsTimer);
    this.statsTimer = undefined;
    const pc = this.pc;
    this.pc = undefined;
    this.makingOffer = false;
    if (pc) {
      pc.ontrack = null;
      pc.onconnectionstatechange = null;
      pc.close();
    }
    if (this.snapshot.connection !== 'none' || this.snapshot.tracks.length > 0)
      this.update({ connection: 'none', tracks: [], remote: {} });
  }

  /** mid → remote track, from the transceivers as negotiated now. */
  private refreshRemote(): void {
    const pc = this.pc;
    if (!pc) return;
    const remote: Record<string, MediaStreamTrack> = {};
    for (const tr of pc.getTransceivers()) if (tr.mid !== null && tr.receiver.track) remote[tr.mid] = tr.receiver.track;
    this.update({ remote });
  }

  private announceMutes(): void {
    const s = this.snapshot;
    if (s.micMuted || !s.hasAudio) this.send({ type: 'mute', kind: 'audio', muted: true });
    if (s.camOff || !s.hasVideo) this.send({ type: 'mute', kind: 'video', muted: true });
  }

  toggleMic(): void {
    const muted = !this.snapshot.micMuted;
    for (const t of this.snapshot.local?.getAudioTracks() ?? []) t.enabled = !muted;
    this.update({ micMuted: muted });
    this.send({ type: 'mute', kind: 'audio', muted });
  }

  toggleCamera(): void {
    if (!this.snapshot.hasVideo) return;
    const off = !this.snapshot.camOff;
    for (const t of this.snapshot.local?.getVideoTracks() ?? []) t.enabled = !off;
    this.update({ camOff: off });
    this.send({ type: 'mute', kind: 'video', muted: off });
  }

  /**
   * The next camera, swapped in on the same line (no renegotiation). A camera whose video does
   * not leave within `CAMERA_CHECK_MS` (one that cannot be encoded, like an infrared camera) is
   * skipped for the one after; if none works, the camera in use stays.
   */
  async switchCamera(): Promise<void> {
    const local = this.snapshot.local;
    const old = local?.getVideoTracks()[0];
    if (!local || !old || this.switching) return;
    this.switching = true;
    try {
      const devices = await navigator.mediaDevices.enumerateDevices();
      for (const id of camerasToTry(devices, old.getSettings().deviceId)) {
        let fresh: MediaStream;
        try {
          fresh = await navigator.mediaDevices.getUserMedia({ video: { deviceId: { exact: id } } });
        } catch {
          continue;
        }
        const track = fresh.getVideoTracks()[0];
        if (!track) continue;
        track.enabled = !this.snapshot.camOff;
        const sender = this.pc?.getSenders().find((s) => s.track === old || s.track?.kind === 'video');
        if (sender) await sender.replaceTrack(track);
        if (!sender || this.snapshot.camOff || (await this.videoLeaves())) {
          old.stop();
          this.update({ local: new MediaStream([...local.getAudioTracks(), track]) });
          return;
        }
        // Nothing leaves with this camera: put the old one back and try the next.
        await sender.replaceTrack(old);
        track.stop();
      }
    } finally {
      this.switching = false;
    }
  }

  /** Whether video bytes leave our peer connection within `CAMERA_CHECK_MS` (true when not connected: nothing to tell). */
  private async videoLeaves(): Promise<boolean> {
    const pc = this.pc;
    if (!pc || pc.connectionState !== 'connected') return true;
    const samples: number[] = [];
    const deadline = Date.now() + CAMERA_CHECK_MS;
    while (Date.now() < deadline) {
      samples.push((await videoSentSoFar(pc)).bytes);
      if (flowing(samples) && samples[samples.length - 1]! - samples[0]! > 2_000) return true;
      await new Promise((r) => setTimeout(r, 250));
    }
    return false;
  }

  /** Video captured but not leaving (or only a trickle of it): stop it and go audio-only. */
  private async checkVideoFlow(pc: RTCPeerConnection): Promise<void> {
    if (pc !== this.pc || pc.connectionState !== 'connected' || this.snapshot.degraded) return;
    if (!this.snapshot.hasVideo || this.snapshot.camOff || this.switching) {
      this.videoSent = [];
      return;
    }
    let sent: { bytes: number; frames?: number };
    try {
      sent = await videoSentSoFar(pc);
    } catch {
      return;
    }
    if (pc !== this.pc) return;
    const last = this.videoSent[this.videoSent.length - 1];
    // Counters that went back belong to another sender: start the window again.
    if (last && (sent.bytes < last.bytes || (sent.frames ?? 0) < (last.frames ?? 0))) this.videoSent = [];
    this.videoSent = [...this.videoSent.slice(-(STALL_SAMPLES - 1)), { at: Date.now(), ...sent }];
    if (videoTooPoor(this.videoSent, STALL_SAMPLES)) await this.goAudioOnly();
  }

  /**
   * Voice only from now on: the camera is stopped and its line sends nothing (the others are
   * told, as for a camera turned off); the microphone and everything we receive go on.
   */
  async goAudioOnly(): Promise<void> {
    const local = this.snapshot.local;
    const video = local?.getVideoTracks()[0];
    if (!local || !video || this.snapshot.degraded) return;
    const sender = this.pc?.getSenders().find((s) => s.track === video);
    if (sender) await sender.replaceTrack(null);
    video.stop();
    this.videoSent = [];
    this.update({ local: new MediaStream(local.getAudioTracks()), hasVideo: false, degraded: true, canSwitch: false });
    this.send({ type: 'mute', kind: 'video', muted: true });
  }

  /**
   * The device check is done: use `stream` (the devices the person chose; audio only if they
   * chose so; none if nothing could be captured) and start if the room already let us in.
   */
  ready(stream: MediaStream | undefined, chosenAudioOnly = false): void {
    this.gated = false;
    if (stream) {
      const hasVideo = stream.getVideoTracks().length > 0;
      const hasAudio = stream.getAudioTracks().length > 0;
      this.capturing = Promise.resolve();
      const problem: CaptureProblem | undefined = !hasAudio ? 'no_devices' : hasVideo || chosenAudioOnly ? undefined : 'no_camera';
      this.update({ local: stream, hasVideo, hasAudio, capture: problem });
      void this.countCameras();
    }
    if (this.startWhenReady) {
      this.startWhenReady = false;
      this.start();
    }
  }

  /** Hangs up and turns the camera and microphone off; a later welcome starts again. */
  release(): void {
    this.closePc();
    for (const t of this.snapshot.local?.getTracks() ?? []) t.stop();
    this.capturing = undefined;
    this.update({ local: undefined, hasAudio: false, hasVideo: false });
  }

  /** For good (the page is going away). */
  close(): void {
    this.release();
    this.closed = true;
    this.listeners.clear();
  }
}

/** Video bytes and frames our peer connection has sent so far. */
async function videoSentSoFar(pc: RTCPeerConnection): Promise<{ bytes: number; frames?: number }> {
  let bytes = 0;
  let frames: number | undefined;
  const stats = await pc.getStats();
  stats.forEach((r: { type?: string; kind?: string; bytesSent?: number; framesSent?: number }) => {
    if (r.type === 'outbound-rtp' && r.kind === 'video') {
      bytes += r.bytesSent ?? 0;
      // Not every browser counts frames: then the bytes alone decide.
      if (r.framesSent !== undefined) frames = (frames ?? 0) + r.framesSent;
    }
  });
  return { bytes, frames };
}

function toRtcIceServer(s: IceServer): RTCIceServer {
  const out: RTCIceServer = { urls: s.urls };
  if (s.username !== undefined) out.username = s.username;
  if (s.credential !== undefined) out.credential = s.credential;
  return out;
}
