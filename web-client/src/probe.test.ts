import { describe, expect, it } from 'vitest';
import { browserSaysWeak, connectionVerdict, median, PROBE_BYTES, runProbe } from './probe';

describe('connection verdict', () => {
  it('a fast link is good', () => {
    expect(connectionVerdict(undefined, { rttMs: 40, downKbps: 20_000 })).toEqual({ quality: 'good', reasons: [] });
    // Nothing measured and nothing reported: no warning.
    expect(connectionVerdict(undefined, {})).toEqual({ quality: 'good', reasons: [] });
  });

  it('a long round trip is weak, a very long one poor', () => {
    expect(connectionVerdict(undefined, { rttMs: 600, downKbps: 20_000 })).toEqual({ quality: 'weak', reasons: ['rtt'] });
    expect(connectionVerdict(undefined, { rttMs: 1_500 }).quality).toBe('poor');
  });

  it('a slow download is weak, a very slow one poor', () => {
    expect(connectionVerdict(undefined, { rttMs: 50, downKbps: 600 })).toEqual({ quality: 'weak', reasons: ['throughput'] });
    expect(connectionVerdict(undefined, { rttMs: 50, downKbps: 120 }).quality).toBe('poor');
  });

  it('the worst finding decides, and every reason is kept', () => {
    expect(connectionVerdict({ effectiveType: '2g' }, { rttMs: 500, downKbps: 100 })).toEqual({
      quality: 'poor',
      reasons: ['rtt', 'throughput', 'browser'],
    });
    expect(connectionVerdict({ effectiveType: '3g', downlink: 0.3 }, { rttMs: 30, downKbps: 50_000 })).toEqual({ quality: 'weak', reasons: ['browser'] });
  });

  it('what the browser reports, alone', () => {
    expect(browserSaysWeak(undefined)).toBe(false);
    expect(browserSaysWeak({ effectiveType: '4g', downlink: 10 })).toBe(false);
    expect(browserSaysWeak({ effectiveType: '2g' })).toBe(true);
    expect(browserSaysWeak({ effectiveType: 'slow-2g' })).toBe(true);
    expect(browserSaysWeak({ effectiveType: '3g', downlink: 0.3 })).toBe(true);
    expect(browserSaysWeak({ downlink: 0 })).toBe(false);
  });
});

describe('running the probe', () => {
  it('takes the median of the pings and the round trip off the download time', async () => {
    const rtts = [100, 900, 120];
    const asked: number[] = [];
    const r = await runProbe({
      ping: async () => rtts.shift(),
      download: async (bytes) => {
        asked.push(bytes);
        return { bytes, ms: 1_120 };
      },
    });
    expect(asked).toEqual([PROBE_BYTES]);
    expect(r.rttMs).toBe(120);
    // 128 KiB in 1,000 ms (1,120 less one round trip): ~1,049 kbit/s.
    expect(r.downKbps).toBeCloseTo((PROBE_BYTES * 8) / 1_000, 5);
  });

  it('leaves out what could not be measured', async () => {
    const r = await runProbe({
      ping: async () => undefined,
      download: async () => {
        throw new Error('offline');
      },
    });
    expect(r).toEqual({ rttMs: undefined, downKbps: undefined });
    const noBody = await runProbe({ ping: async () => 10, download: async () => ({ bytes: 0, ms: 5 }) });
    expect(noBody.downKbps).toBeUndefined();
  });

  it('median', () => {
    expect(median([])).toBeUndefined();
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
  });
});
