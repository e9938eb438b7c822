/**
 * The video area of the session page: our own preview, a tile per participant whose media we
 * receive (name, role, microphone and camera state, a speaking indicator), and the microphone,
 * camera and switch-camera buttons. The media itself lives in `media.ts`; which tiles to show
 * comes from `media-logic.ts` (`tiles`), fed by the server's `media_tracks` and `mute`.
 *
 * Everyone else in the room whose media we do not receive (a caucus hides them, or their
 * connection is not up yet) gets a small "not available" card instead of a video.
 */
import { createContext } from 'preact';
import { useContext, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { T } from './i18n';
import type { MediaSession, MediaSnapshot } from './media';
import { SPEAKING_THRESHOLD, mediaNotices, othersVideoShown, speakingLevel, speakingNow, stalled, tiles } from './media-logic';
import { inRoom, type State } from './state';
import { pageAudio, tapTrack } from './audio';

function useSnapshot(media: MediaSession): MediaSnapshot {
  const [snap, setSnap] = useState(media.snapshot);
  useEffect(() => {
    setSnap(media.snapshot);
    return media.subscribe(() => setSnap(media.snapshot));
  }, [media]);
  return snap;
}

/** Resume the audio context after a user gesture (should the click on "enter" not have). */
function wakeAudio(): void {
  pageAudio.unlock();
}

/** Whether the audio track carries speech-like level now (analyser, polled 5 times a second). */
function useSpeaking(track: MediaStreamTrack | undefined, off: boolean): boolean {
  const [speaking, setSpeaking] = useState(false);
  useEffect(() => {
    if (!track || off) {
      setSpeaking(false);
      return;
    }
    // About 40 ms of sound per look (at 48 kHz): short syllables are not missed between looks.
    const tap = tapTrack(track, 2048);
    if (!tap) return;
    const { analyser } = tap;
    const buf = new Uint8Array(analyser.fftSize);
    let lastLoud: number | undefined;
    const timer = setInterval(() => {
      analyser.getByteTimeDomainData(buf);
      const now = performance.now();
      if (speakingLevel(buf) > SPEAKING_THRESHOLD) lastLoud = now;
      setSpeaking(speakingNow(lastLoud, now));
    }, 150);
    return () => {
      clearInterval(timer);
      tap.stop();
    };
  }, [track, off]);
  return speaking;
}

function useStream(el: { current: HTMLMediaElement | null }, track: MediaStreamTrack | undefined): void {
  useEffect(() => {
    const e = el.current;
    if (!e) return;
    e.srcObject = track ? new MediaStream([track]) : null;
    if (track) void e.play().catch(() => undefined);
  }, [track]);
}

function initial(name: string): string {
  return Array.from(name.trim())[0] ?? '?';
}

interface TileProps {
  t: T;
  name: string;
  role: string;
  video?: MediaStreamTrack;
  audio?: MediaStreamTrack;
  micMuted: boolean;
  camOff: boolean;
  /** No video line at all: voice only. */
  audioOnly?: boolean;
  self?: boolean;
  participant?: string;
  roleKey?: string;
}

function VideoTile({ t, name, role, video, audio, micMuted, camOff, audioOnly, self, participant, roleKey }: TileProps) {
  const vref = useRef<HTMLVideoElement>(null);
  const aref = useRef<HTMLAudioElement>(null);
  useStream(vref, video);
  useStream(aref, self ? undefined : audio);
  const speaking = useSpeaking(audio, micMuted);
  // Remote video that should play but shows no new frames: say "audio only".
  const [frozen, setFrozen] = useState(false);
  useEffect(() => {
    if (self || !video || camOff) {
      setFrozen(false);
      return;
    }
    const frames: number[] = [];
    const timer = setInterval(() => {
      const v = vref.current;
      if (!v) return;
      frames.push(v.getVideoPlaybackQuality?.().totalVideoFrames ?? 0);
      if (frames.length > 4) frames.shift();
      setFrozen(stalled(frames, 4));
    }, 1_500);
    return () => clearInterval(timer);
  }, [video, camOff, self]);
  const showVideo = !!video && !camOff && !frozen;
  const label = `${name}${self ? t.you : ''} · ${role}`;
  return (
    <figure
      class={`tile${speaking ? ' speaking' : ''}`}
      data-testid={self ? 'self-tile' : 'remote-tile'}
      data-participant={participant}
      data-role={roleKey}
      data-video={audioOnly ? 'none' : 'line'}
      aria-label={label}
    >
      <video ref={vref} class={showVideo ? '' : 'hidden-video'} autoPlay playsInline muted aria-hidden="true" />
      {!self && <audio ref={aref} autoPlay />}
      {!showVideo && (
        <div class="avatar" aria-hidden="true">
          {initial(name)}
        </div>
      )}
      <figcaption>
        <span class="tile-name">
          {name}
          {self ? t.you : ''}
        </span>{' '}
        <span class="tile-role">{role}</span>
        {speaking && <span class="badge speak">{t.media.speaking}</span>}
        {micMuted && <span class="badge">{t.media.micMutedBadge}</span>}
        {audioOnly && <span class="badge">{t.media.audioOnlyBadge}</span>}
        {camOff && !audioOnly && <span class="badge">{t.media.camOffBadge}</span>}
        {!camOff && frozen && <span class="badge">{t.media.audioOnlyBadge}</span>}
      </figcaption>
    </figure>
  );
}

/** The page's one media session (app.tsx provides it; it is fed by the signaling connection). */
export const MediaContext = createContext<MediaSession | undefined>(undefined);

export function MediaArea({ t, s }: { t: T; s: State }) {
  const media = useContext(MediaContext);
  return media ? <MediaView t={t} s={s} media={media} /> : null;
}

function MediaView({ t, s, media }: { t: T; s: State; media: MediaSession }) {
  const snap = useSnapshot(media);
  const me = s.me?.participant;
  useEffect(() => () => media.release(), [media]);
  const list = useMemo(() => tiles(snap.tracks, snap.mutes, me), [snap.tracks, snap.mutes, me]);
  const shown = new Set(list.map((x) => x.participant));
  const absent = inRoom(s).filter((p) => p.participant !== me && !shown.has(p.participant) && p.online);
  const local = snap.local;
  const who = (id: string) => s.people[id];
  const notices = mediaNotices(snap).map((n) => t.media[n]);
  const videoPaused = !othersVideoShown(snap.downlink);
  return (
    <section class="card media" data-testid="media" aria-labelledby="h-media" onClick={wakeAudio} onKeyDown={wakeAudio}>
      <h2 id="h-media">{t.media.title}</h2>
      {notices.map((n) => (
        <p key={n} class="media-notice" role="status">
          {n}
        </p>
      ))}
      <div class="tiles">
        <VideoTile
          t={t}
          self
          name={s.me?.name ?? ''}
          role={s.me ? t.roles[s.me.role] : ''}
          video={local?.getVideoTracks()[0]}
          audio={local?.getAudioTracks()[0]}
          micMuted={snap.micMuted || !snap.hasAudio}
          camOff={snap.camOff || !snap.hasVideo}
          audioOnly={!snap.hasVideo}
        />
        {list.map((tile) => {
          const p = who(tile.participant);
          return (
            <VideoTile
              key={tile.participant}
              t={t}
              participant={tile.participant}
              roleKey={p?.role}
              name={p?.name ?? t.unknownPerson}
              role={p?.role ? t.roles[p.role] : ''}
              video={tile.videoMid !== undefined && !videoPaused ? snap.remote[tile.videoMid] : undefined}
              audio={tile.audioMid !== undefined ? snap.remote[tile.audioMid] : undefined}
              micMuted={tile.micMuted}
              camOff={tile.camOff}
              audioOnly={tile.audioOnly || videoPaused}
            />
          );
        })}
        {absent.map((p) => (
          <div key={p.participant} class="tile tile-absent" data-testid="unavailable-tile" data-role={p.role}>
            <div class="avatar" aria-hidden="true">
              {initial(p.name ?? '?')}
            </div>
            <p>
              <span class="tile-name">{p.name ?? t.unknownPerson}</span> <span class="tile-role">{p.role ? t.roles[p.role] : ''}</span>
              <br />
              <span class="badge">{t.media.notAvailable}</span>
            </p>
          </div>
        ))}
      </div>
      <div class="row media-controls">
        <button
          type="button"
          class={snap.micMuted ? 'off' : undefined}
          title={t.media.muteMic}
          disabled={!snap.hasAudio}
          data-testid="toggle-mic"
          onClick={() => media.toggleMic()}
        >
          {snap.micMuted ? t.media.micIsOff : t.media.micIsOn}
        </button>
        <button
          type="button"
          class={snap.camOff ? 'off' : undefined}
          title={t.media.camOff}
          disabled={!snap.hasVideo}
          data-testid="toggle-cam"
          onClick={() => media.toggleCamera()}
        >
          {snap.camOff || !snap.hasVideo ? t.media.camIsOff : t.media.camIsOn}
        </button>
        {snap.canSwitch && snap.hasVideo && (
          <button type="button" data-testid="switch-cam" onClick={() => void media.switchCamera()}>
            {t.media.switchCam}
          </button>
        )}
      </div>
    </section>
  );
}
