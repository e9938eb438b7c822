/**
 * The check before entering (issue 5, "device and network check"): a camera preview, a
 * microphone level meter, a choice of camera and microphone, a warning when the connection
 * looks weak, and a way to take part by voice only. Nothing leaves the page here: the stream
 * the person settles on is handed to the media session (`MediaSession.ready`) when they enter.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import type { Lang } from './i18n';
import { pageAudio, tapTrack, unlockOnGesture } from './audio';
import { meterLevel } from './media-logic';
import { connectionVerdict, type NetworkInformationLike, type ProbeResult } from './probe';

const STRINGS = {
  zh: {
    title: '进入前检查设备',
    intro: '请确认能看到自己的画面，说话时音量条会跳动。',
    camera: '摄像头',
    microphone: '麦克风',
    preview: '摄像头画面预览',
    level: '麦克风音量',
    audioOnly: '仅语音参加（不开摄像头）',
    noCamera: '没有找到可用的摄像头，您将仅以语音参加。',
    noDevices: '无法使用摄像头和麦克风。您仍可以进入，看到和听到其他人，并用文字聊天。',
    weak: '您的网络较慢，视频可能卡顿。建议勾选下面的“仅语音参加”。',
    poor: '您的网络很慢，视频很可能无法正常进行。请勾选下面的“仅语音参加”，声音会更清楚。',
    measuring: '正在检测网络…',
    measured: (rtt?: number, kbps?: number) =>
      `网络检测：${rtt !== undefined ? `往返延迟约 ${Math.round(rtt)} 毫秒` : '延迟未测出'}，${kbps !== undefined ? `下载速度约 ${fmtRate(kbps)}` : '下载速度未测出'}。`,
    enter: '进入调解',
    checking: '正在打开摄像头和麦克风…',
    consentTitle: '同意在线调解',
    consentText:
      '本次调解通过网络进行：您将与调解员和另一方通过视频、语音和文字交流，调解方案在网上确认和签署，与到场调解具有同等效力。',
    consentKept: '音视频不会录音录像。聊天内容、调解记录、调解方案及签署情况会保存在案件记录中。',
    consentCheck: '我同意通过网络进行本次调解',
    consentNeeded: '请先勾选同意，才能进入调解。',
    refuse: '我不同意在线调解',
  },
  en: {
    title: 'Check your devices before entering',
    intro: 'Make sure you can see yourself; the bar moves when you speak.',
    camera: 'Camera',
    microphone: 'Microphone',
    preview: 'Camera preview',
    level: 'Microphone level',
    audioOnly: 'Take part by voice only (camera off)',
    noCamera: 'No camera could be used: you will take part by voice.',
    noDevices: 'Camera and microphone cannot be used. You can still enter, see and hear the others, and chat.',
    weak: 'Your connection is slow; video may stutter. We suggest ticking “voice only” below.',
    poor: 'Your connection is very slow; video will probably not work. Please tick “voice only” below: your voice will come through more clearly.',
    measuring: 'Checking your connection…',
    measured: (rtt?: number, kbps?: number) =>
      `Connection check: ${rtt !== undefined ? `round trip about ${Math.round(rtt)} ms` : 'round trip not measured'}, ${kbps !== undefined ? `download about ${fmtRate(kbps)}` : 'download not measured'}.`,
    enter: 'Enter the mediation',
    checking: 'Opening camera and microphone…',
    consentTitle: 'Consent to online mediation',
    consentText:
      'This mediation takes place online: you talk with the mediator and the other side by video, voice and text, and the terms are agreed and signed online, with the same effect as in person.',
    consentKept: 'Audio and video are not recorded. The chat, the case notes, the proposed terms and who signed them are kept in the case record.',
    consentCheck: 'I agree to take part in this mediation online',
    consentNeeded: 'Please tick the box to agree before entering.',
    refuse: 'I do not agree to online mediation',
  },
};

/** A rate for people: "1.2 Mbps" or "300 kbps". */
function fmtRate(kbps: number): string {
  if (kbps >= 1000) return `${(kbps / 1000).toFixed(kbps >= 10_000 ? 0 : 1)} Mbps`;
  return `${Math.round(kbps)} kbps`;
}

export function DeviceCheck({
  lang,
  title,
  askConsent,
  onEnter,
  onRefuse,
  measure,
}: {
  lang: Lang;
  /** The case, so the person knows which mediation this is. */
  title?: string;
  /** A party who has not agreed to online mediation yet: ask, and enter only after a yes. */
  askConsent: boolean;
  /** `consented`: the person ticked the consent box (only when asked). */
  onEnter: (stream: MediaStream | undefined, audioOnly: boolean, consented: boolean) => void;
  onRefuse: () => void;
  /** The measured connection check (probe.ts): round trip and download. */
  measure: () => Promise<ProbeResult>;
}) {
  const t = STRINGS[lang];
  const [stream, setStream] = useState<MediaStream>();
  const [devices, setDevices] = useState<MediaDeviceInfo[]>([]);
  const [camera, setCamera] = useState<string>('');
  const [mic, setMic] = useState<string>('');
  const [audioOnly, setAudioOnly] = useState(false);
  const [problem, setProblem] = useState<'no_camera' | 'no_devices'>();
  const [busy, setBusy] = useState(true);
  const [level, setLevel] = useState(0);
  const [agreed, setAgreed] = useState(false);
  const video = useRef<HTMLVideoElement>(null);
  const handedOver = useRef(false);
  const [probe, setProbe] = useState<ProbeResult>();
  const verdict = connectionVerdict((navigator as Navigator & { connection?: NetworkInformationLike }).connection, probe ?? {});

  // The connection check, once, while the person looks at the preview.
  useEffect(() => {
    let live = true;
    void measure().then((r) => {
      if (live) setProbe(r);
    });
    return () => {
      live = false;
    };
  }, []);

  // (Re)capture with the chosen devices.
  useEffect(() => {
    let live = true;
    let got: MediaStream | undefined;
    const md = navigator.mediaDevices;
    setBusy(true);
    void (async () => {
      let p: 'no_camera' | 'no_devices' | undefined;
      const audio: MediaTrackConstraints | boolean = mic ? { deviceId: { exact: mic } } : true;
      const wantVideo: MediaTrackConstraints = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 15 } };
      if (camera) wantVideo.deviceId = { exact: camera };
      try {
        got = await md.getUserMedia({ audio, video: audioOnly ? false : wantVideo });
      } catch {
        try {
          got = await md.getUserMedia({ audio });
          if (!audioOnly) p = 'no_camera';
        } catch {
          p = 'no_devices';
        }
      }
      if (!live) {
        for (const tr of got?.getTracks() ?? []) tr.stop();
        return;
      }
      setStream(got);
      setProblem(p);
      setBusy(false);
      try {
        setDevices(await md.enumerateDevices());
      } catch {
        setDevices([]);
      }
    })();
    return () => {
      live = false;
      if (!handedOver.current) for (const tr of got?.getTracks() ?? []) tr.stop();
    };
  }, [camera, mic, audioOnly]);

  useEffect(() => {
    if (video.current) video.current.srcObject = stream && stream.getVideoTracks().length ? stream : null;
  }, [stream]);

  // Microphone level: an analyser on the audio track, on the page's one AudioContext. It runs
  // from the first touch or key press (browsers keep it suspended until then; audio.ts).
  useEffect(() => unlockOnGesture(document, pageAudio), []);
  useEffect(() => {
    const track = stream?.getAudioTracks()[0];
    const tap = track ? tapTrack(track, 512) : undefined;
    if (!tap) return;
    const { analyser } = tap;
    const data = new Uint8Array(analyser.fftSize);
    let raf = 0;
    const tick = () => {
      analyser.getByteTimeDomainData(data);
      let peak = 0;
      for (const v of data) peak = Math.max(peak, Math.abs(v - 128));
      setLevel((old) => meterLevel(old, peak / 64));
      raf = requestAnimationFrame(tick);
    };
    tick();
    return () => {
      cancelAnimationFrame(raf);
      tap.stop();
    };
  }, [stream]);

  const cams = devices.filter((d) => d.kind === 'videoinput');
  const mics = devices.filter((d) => d.kind === 'audioinput');
  // Until the person picks one, the selects show the devices actually in use.
  const camInUse = camera || stream?.getVideoTracks()[0]?.getSettings().deviceId || '';
  const micInUse = mic || stream?.getAudioTracks()[0]?.getSettings().deviceId || '';
  return (
    <section class="card precheck" data-testid="precheck" aria-labelledby="h-precheck">
      <h2 id="h-precheck">{t.title}</h2>
      {title && (
        <p>
          <strong data-testid="case-title">{title}</strong>
        </p>
      )}
      <p>{busy ? t.checking : t.intro}</p>
      <p class="small" role="status" data-testid="connection-check" data-state={probe ? 'done' : 'measuring'}>
        {probe ? t.measured(probe.rttMs, probe.downKbps) : t.measuring}
      </p>
      {verdict.quality !== 'good' && (
        <p class="warning" role="alert" data-testid="weak-connection" data-quality={verdict.quality} data-reasons={verdict.reasons.join(' ')}>
          {verdict.quality === 'poor' ? t.poor : t.weak}
        </p>
      )}
      {problem === 'no_camera' && <p class="warning">{t.noCamera}</p>}
      {problem === 'no_devices' && <p class="warning">{t.noDevices}</p>}
      {!audioOnly && !problem && <video ref={video} class="precheck-video" autoplay muted playsInline aria-label={t.preview} data-testid="precheck-preview" />}
      <p>
        <label for="precheck-level">{t.level}</label>{' '}
        <meter id="precheck-level" min={0} max={1} value={level} data-testid="precheck-level" />
      </p>
      {cams.length > 1 && !audioOnly && (
        <p>
          <label for="precheck-camera">{t.camera}</label>{' '}
          <select id="precheck-camera" value={camInUse} onChange={(e) => setCamera(e.currentTarget.value)}>
            {cams.map((d, i) => (
              <option key={d.deviceId} value={d.deviceId}>
                {d.label || `${t.camera} ${i + 1}`}
              </option>
            ))}
          </select>
        </p>
      )}
      {mics.length > 1 && (
        <p>
          <label for="precheck-mic">{t.microphone}</label>{' '}
          <select id="precheck-mic" value={micInUse} onChange={(e) => setMic(e.currentTarget.value)}>
            {mics.map((d, i) => (
              <option key={d.deviceId} value={d.deviceId}>
                {d.label || `${t.microphone} ${i + 1}`}
              </option>
            ))}
          </select>
        </p>
      )}
      <p>
        <label class="toggle">
          <input type="checkbox" checked={audioOnly} onChange={(e) => setAudioOnly(e.currentTarget.checked)} data-testid="precheck-audio-only" />
          {t.audioOnly}
        </label>
      </p>
      {askConsent && (
        <fieldset class="consent" data-testid="consent">
          <legend>{t.consentTitle}</legend>
          <p>{t.consentText}</p>
          <p>{t.consentKept}</p>
          <label class="check">
            <input type="checkbox" checked={agreed} onChange={(e) => setAgreed(e.currentTarget.checked)} data-testid="consent-check" />
            {t.consentCheck}
          </label>
          {!agreed && (
            <p class="small" id="consent-needed">
              {t.consentNeeded}
            </p>
          )}
        </fieldset>
      )}
      <div class="row">
        <button
          type="button"
          class="primary big"
          data-testid="precheck-enter"
          disabled={busy || (askConsent && !agreed)}
          aria-describedby={askConsent && !agreed ? 'consent-needed' : undefined}
          onClick={() => {
            // A user gesture: resume the audio context now, inside its handler, so the speaking
            // indicators in the session work without another touch (audio.ts).
            pageAudio.unlock();
            handedOver.current = true;
            onEnter(stream, audioOnly, askConsent && agreed);
          }}
        >
          {t.enter}
        </button>
        {askConsent && (
          <button type="button" data-testid="consent-refuse" onClick={onRefuse}>
            {t.refuse}
          </button>
        )}
      </div>
    </section>
  );
}
