/**
 * The page's one AudioContext, for the microphone level in the device check and the speaking
 * indicators in the session.
 *
 * Browsers start an AudioContext suspended until the person interacts with the page (autoplay
 * policy; WebKit, as in WeChat's browser on iOS, insists that `resume()` be called inside the
 * gesture's own event handler). So the context is resumed synchronously in the click on
 * "enter" (`unlock`), and on the first touch or key press anywhere (`unlockOnGesture`), so the
 * device check's meter moves as soon as the person has touched the page, and the session's
 * indicators work without a further touch.
 */

/** The part of AudioContext this module uses (a fake in `audio.test.ts`). */
export interface AudioContextLike {
  readonly state: string;
  resume(): Promise<void>;
}

export class SharedAudio<C extends AudioContextLike> {
  private ctx?: C;
  private failed = false;

  constructor(private readonly make: () => C | undefined) {}

  /** The context, created on first use (suspended if no gesture happened yet). */
  get(): C | undefined {
    if (this.ctx || this.failed) return this.ctx;
    try {
      this.ctx = this.make();
    } catch {
      this.failed = true;
    }
    if (!this.ctx) this.failed = true;
    return this.ctx;
  }

  /** Call inside a user gesture's handler: creates the context if needed and resumes it. */
  unlock(): C | undefined {
    const ctx = this.get();
    if (ctx && ctx.state !== 'running' && ctx.state !== 'closed') void ctx.resume().catch(() => undefined);
    return ctx;
  }

  /** Whether the context runs (analysers then see real levels). */
  running(): boolean {
    return this.ctx?.state === 'running';
  }
}

const GESTURES = ['pointerdown', 'keydown', 'touchend'] as const;

/** Resumes `audio` on the next touch, click or key press on `target`; returns a remover. */
export function unlockOnGesture(target: Pick<EventTarget, 'addEventListener' | 'removeEventListener'>, audio: SharedAudio<AudioContextLike>): () => void {
  const handler = () => {
    audio.unlock();
    remove();
  };
  const remove = () => {
    for (const g of GESTURES) target.removeEventListener(g, handler, true);
  };
  for (const g of GESTURES) target.addEventListener(g, handler, true);
  return remove;
}

/** The page's one context (none where Web Audio is missing). */
export const pageAudio = new SharedAudio<AudioContext>(() => (typeof AudioContext === 'undefined' ? undefined : new AudioContext()));

/** An analyser on one audio track, on the page's AudioContext; `stop` disconnects it. */
export interface TrackTap {
  analyser: AnalyserNode;
  stop: () => void;
}

/**
 * Taps `track` for level readings (the device check's meter, the tiles' speaking indicator), or
 * returns undefined when there is no AudioContext or the track cannot be tapped.
 */
export function tapTrack(track: MediaStreamTrack, fftSize: number): TrackTap | undefined {
  const ctx = pageAudio.get();
  if (!ctx) return undefined;
  let src: MediaStreamAudioSourceNode;
  try {
    src = ctx.createMediaStreamSource(new MediaStream([track]));
  } catch {
    return undefined;
  }
  const analyser = ctx.createAnalyser();
  analyser.fftSize = fftSize;
  src.connect(analyser);
  return { analyser, stop: () => src.disconnect() };
}
