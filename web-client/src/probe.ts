/**
 * The measured connection check of the device check: the round-trip time over the signaling
 * websocket (`ping`/`pong`, the median of a few) and the throughput of a small timed download
 * from the server (`GET /probe?bytes=N`, pseudo-random bytes, never cached). Together with what
 * the browser says (`navigator.connection`, where it exists) they decide whether to warn that
 * video may stutter and to suggest taking part by voice only.
 *
 * `runProbe` and `connectionVerdict` are pure (the measurements are passed in), so
 * `probe.test.ts` drives them directly.
 */

export interface NetworkInformationLike {
  effectiveType?: string;
  downlink?: number;
}

export interface ProbeResult {
  /** Median round trip over the signaling websocket, ms. */
  rttMs?: number;
  /** Download throughput, kbit/s. */
  downKbps?: number;
}

export type Quality = 'good' | 'weak' | 'poor';

export interface Verdict {
  quality: Quality;
  /** What made it weak or poor. */
  reasons: ('rtt' | 'throughput' | 'browser')[];
}

/** Round trips above these (ms): weak (video lags), poor (video hardly usable). */
export const RTT_WEAK_MS = 400;
export const RTT_POOR_MS = 1_000;
/**
 * Throughput below these (kbit/s): weak (below what 360p video at 15 fps from each of three
 * others needs), poor (voice only: Opus needs ~32 kbit/s per speaker).
 */
export const DOWN_WEAK_KBPS = 1_000;
export const DOWN_POOR_KBPS = 250;

/** Whether the browser itself reports a connection too slow for video. */
export function browserSaysWeak(info: NetworkInformationLike | undefined): boolean {
  if (!info) return false;
  if (info.effectiveType && ['slow-2g', '2g'].includes(info.effectiveType)) return true;
  return typeof info.downlink === 'number' && info.downlink > 0 && info.downlink < 0.5;
}

export function connectionVerdict(info: NetworkInformationLike | undefined, probe: ProbeResult): Verdict {
  const reasons: Verdict['reasons'] = [];
  let quality: Quality = 'good';
  const worse = (q: Quality) => {
    if (q === 'poor' || (q === 'weak' && quality === 'good')) quality = q;
  };
  if (probe.rttMs !== undefined && probe.rttMs > RTT_WEAK_MS) {
    reasons.push('rtt');
    worse(probe.rttMs > RTT_POOR_MS ? 'poor' : 'weak');
  }
  if (probe.downKbps !== undefined && probe.downKbps < DOWN_WEAK_KBPS) {
    reasons.push('throughput');
    worse(probe.downKbps < DOWN_POOR_KBPS ? 'poor' : 'weak');
  }
  if (browserSaysWeak(info)) {
    reasons.push('browser');
    worse('weak');
  }
  return { quality, reasons };
}

export function median(xs: readonly number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Bytes of the timed download: about 1 s on a 1 Mbit/s link, a fraction of the page itself. */
export const PROBE_BYTES = 128 * 1024;

export interface Probes {
  /** One round trip over the signaling websocket, ms; undefined when not connected. */
  ping: () => Promise<number | undefined>;
  /** Downloads `bytes` from the server; resolves to the bytes received and the ms it took. */
  download: (bytes: number) => Promise<{ bytes: number; ms: number }>;
}

/**
 * Measures: three pings one after another (the median, so one slow answer does not decide),
 * then the download. The round trip is taken off the download's time (the request's own trip),
 * so a small download on a long link is not mistaken for a slow one. A probe that fails leaves
 * its figure out.
 */
export async function runProbe(p: Probes, pings = 3): Promise<ProbeResult> {
  const rtts: number[] = [];
  for (let i = 0; i < pings; i++) {
    try {
      const r = await p.ping();
      if (r !== undefined) rtts.push(r);
    } catch {
      // not counted
    }
  }
  const rttMs = median(rtts);
  let downKbps: number | undefined;
  try {
    const d = await p.download(PROBE_BYTES);
    if (d.bytes > 0) {
      const ms = Math.max(1, d.ms - (rttMs ?? 0));
      downKbps = (d.bytes * 8) / ms;
    }
  } catch {
    downKbps = undefined;
  }
  return { rttMs, downKbps };
}

/** The browser's download probe: `GET /probe?bytes=N` on the page's own server. */
export async function fetchProbe(bytes: number): Promise<{ bytes: number; ms: number }> {
  const t0 = performance.now();
  const r = await fetch(`/probe?bytes=${bytes}&t=${Date.now()}`, { cache: 'no-store' });
  if (!r.ok) throw new Error(`probe: HTTP ${r.status}`);
  const body = await r.arrayBuffer();
  return { bytes: body.byteLength, ms: performance.now() - t0 };
}
