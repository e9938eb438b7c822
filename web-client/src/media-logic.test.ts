import { describe, expect, it } from 'vitest';
import type { TrackInfo } from './protocol';
import { camerasToTry, flowing, mediaNotices, meterLevel, midMap, newSenders, nextCamera, onServerOffer, othersVideoShown, senders, speakingLevel, speakingNow, stalled, tiles, videoTooPoor, type SendSample } from './media-logic';
import { STRINGS } from './i18n';

const tracks: TrackInfo[] = [
  { mid: '2', participant: 'p_med', kind: 'audio' },
  { mid: '3', participant: 'p_med', kind: 'video' },
  { mid: '4', participant: 'p_con', kind: 'audio' },
  { mid: '5', participant: 'p_con', kind: 'video' },
  { mid: '6', participant: 'p_judge', kind: 'audio' },
];

describe('media_tracks → participants', () => {
  it('maps every mid to its participant and kind', () => {
    const m = midMap(tracks);
    expect(m.get('3')).toEqual({ participant: 'p_med', kind: 'video' });
    expect(m.get('6')).toEqual({ participant: 'p_judge', kind: 'audio' });
    expect(m.get('1')).toBeUndefined();
  });

  it('lists senders once each, in order', () => {
    expect(senders(tracks)).toEqual(['p_med', 'p_con', 'p_judge']);
  });

  it('makes one tile per participant with audio and video mids and mute state', () => {
    const list = tiles(tracks, { p_con: { audio: true }, p_med: { video: true } });
    expect(list).toEqual([
      { participant: 'p_med', audioMid: '2', videoMid: '3', micMuted: false, camOff: true, audioOnly: false },
      { participant: 'p_con', audioMid: '4', videoMid: '5', micMuted: true, camOff: false, audioOnly: false },
      // No video line at all (voice only): an audio-only tile, camera off.
      { participant: 'p_judge', audioMid: '6', micMuted: false, camOff: true, audioOnly: true },
    ]);
  });

  it('an unmute after a mute shows the track again', () => {
    expect(tiles(tracks, { p_con: { audio: false } })[1]!.micMuted).toBe(false);
  });

  it('never shows ourselves', () => {
    expect(tiles(tracks, {}, 'p_con').map((x) => x.participant)).toEqual(['p_med', 'p_judge']);
  });

  it('a caucus that hides the others removes their tiles; its end brings them back', () => {
    const inCaucus = tracks.filter((t) => t.participant === 'p_judge');
    expect(tiles(inCaucus, {}).map((x) => x.participant)).toEqual(['p_judge']);
    expect(newSenders(tracks, inCaucus)).toEqual([]);
    expect(newSenders(inCaucus, tracks)).toEqual(['p_med', 'p_con']);
  });
});

describe('glare', () => {
  it('answers a server offer when stable', () => {
    expect(onServerOffer('stable', false)).toBe('answer');
  });
  it('drops the server offer while ours is outstanding (ours wins)', () => {
    expect(onServerOffer('have-local-offer', false)).toBe('ignore');
    expect(onServerOffer('stable', true)).toBe('ignore');
  });
  it('ignores offers without a connection', () => {
    expect(onServerOffer(undefined, false)).toBe('ignore');
    expect(onServerOffer('closed', false)).toBe('ignore');
  });
});

describe('cameras', () => {
  const devs = [
    { kind: 'audioinput', deviceId: 'a' },
    { kind: 'videoinput', deviceId: 'front' },
    { kind: 'videoinput', deviceId: 'back' },
  ];
  it('cycles through the cameras', () => {
    expect(nextCamera(devs, 'front')).toBe('back');
    expect(nextCamera(devs, 'back')).toBe('front');
    expect(nextCamera(devs, undefined)).toBe('front');
  });
  it('a switch tries every other camera, the next first', () => {
    const three = [...devs, { kind: 'videoinput', deviceId: 'ir' }];
    expect(camerasToTry(three, 'front')).toEqual(['back', 'ir']);
    expect(camerasToTry(three, 'back')).toEqual(['ir', 'front']);
    expect(camerasToTry(three, 'ir')).toEqual(['front', 'back']);
    // The current one unknown (settings without an id): every camera, in order.
    expect(camerasToTry(three, undefined)).toEqual(['front', 'back', 'ir']);
    expect(camerasToTry(devs.slice(0, 2), 'front')).toEqual([]);
  });
  it('a camera counts as working once bytes flow', () => {
    expect(flowing([100, 100, 100])).toBe(false);
    expect(flowing([100, 100, 180])).toBe(true);
    expect(flowing([100])).toBe(false);
  });
  it('no switch with one camera, or labels hidden (empty ids)', () => {
    expect(nextCamera(devs.slice(0, 2), 'front')).toBeUndefined();
    expect(nextCamera([{ kind: 'videoinput', deviceId: '' }, { kind: 'videoinput', deviceId: '' }])).toBeUndefined();
  });
});

describe('flow checks', () => {
  it('stalled only when the counter has not moved over the window', () => {
    expect(stalled([1, 1], 3)).toBe(false);
    expect(stalled([5, 5, 5], 3)).toBe(true);
    expect(stalled([1, 2, 3], 3)).toBe(false);
    expect(stalled([1, 2, 9, 9, 9], 3)).toBe(true);
  });
  it('video too poor to send: none, or only a trickle, over the whole window', () => {
    // Samples every 2 s: `fps` frames and `kbps` kbit a second.
    const run = (fps: number, kbps: number, n = 6, frames = true): SendSample[] =>
      Array.from({ length: n }, (_, i) => ({ at: i * 2000, bytes: (i * 2 * kbps * 1000) / 8, ...(frames ? { frames: i * 2 * fps } : {}) }));
    // Healthy video, and a camera pointed at a wall (full frame rate, small frames): keep it.
    expect(videoTooPoor(run(15, 300), 6)).toBe(false);
    expect(videoTooPoor(run(15, 12), 6)).toBe(false);
    // Nothing at all leaves.
    expect(videoTooPoor(run(0, 0), 6)).toBe(true);
    // A weak uplink: a key frame every couple of seconds, still bytes moving. Not zero, yet useless.
    expect(videoTooPoor(run(0.5, 40), 6)).toBe(true);
    // Bytes (retransmissions, padding) but almost no picture data.
    expect(videoTooPoor(run(15, 4), 6)).toBe(true);
    // A browser that does not count frames: the bytes alone decide.
    expect(videoTooPoor(run(0, 40, 6, false), 6)).toBe(false);
    expect(videoTooPoor(run(0, 2, 6, false), 6)).toBe(true);
    // Too early to tell: fewer samples than the window.
    expect(videoTooPoor(run(0, 0, 5), 6)).toBe(false);
    // Only the last window counts: video that recovered is kept.
    const recovered = [...run(0, 0), ...run(15, 300).map((x) => ({ ...x, at: x.at + 12_000 }))];
    expect(videoTooPoor(recovered, 6)).toBe(false);
  });
  it('speaking level: silence is 0, a full-scale wave is loud', () => {
    expect(speakingLevel(new Uint8Array(64).fill(128))).toBe(0);
    const wave = Uint8Array.from({ length: 64 }, (_, i) => (i % 2 ? 255 : 1));
    expect(speakingLevel(wave)).toBeGreaterThan(0.9);
    expect(speakingLevel([])).toBe(0);
  });
});

describe('speaking indicator and level meter', () => {
  it('stays on briefly after the last loud sample', () => {
    expect(speakingNow(undefined, 1000)).toBe(false);
    expect(speakingNow(1000, 1000)).toBe(true);
    expect(speakingNow(1000, 1600)).toBe(true);
    expect(speakingNow(1000, 1800)).toBe(false);
  });

  it('the meter jumps to a peak and falls back slowly', () => {
    expect(meterLevel(0, 0.8)).toBe(0.8);
    expect(meterLevel(0.8, 0)).toBeCloseTo(0.736);
    expect(meterLevel(0.1, 0.5)).toBe(0.5);
    expect(meterLevel(0, 3)).toBe(1);
    let v = 1;
    for (let i = 0; i < 60; i++) v = meterLevel(v, 0);
    expect(v).toBeLessThan(0.01);
  });
});

describe('the media card on a weak link (media_downlink)', () => {
  const base = { degraded: false, downlink: 'full' as const, connection: 'connected' };

  it('says why the others\' video is paused or reduced, and shows avatars instead of frozen frames', () => {
    expect(mediaNotices(base)).toEqual([]);
    expect(othersVideoShown('full')).toBe(true);
    expect(mediaNotices({ ...base, downlink: 'paused' })).toEqual(['downlinkPaused']);
    expect(othersVideoShown('paused')).toBe(false);
    expect(mediaNotices({ ...base, downlink: 'reduced' })).toEqual(['downlinkReduced']);
    expect(othersVideoShown('reduced')).toBe(true);
    // With other trouble, in a fixed order: our devices, our video, the link, the connection.
    expect(mediaNotices({ capture: 'no_camera', degraded: true, downlink: 'paused', connection: 'disconnected' })).toEqual([
      'noCamera',
      'degraded',
      'downlinkPaused',
      'connLost',
    ]);
  });

  it('has the notices in both languages, telling the party that it comes back by itself', () => {
    for (const lang of ['zh', 'en'] as const) {
      for (const n of ['downlinkPaused', 'downlinkReduced'] as const) {
        expect(STRINGS[lang].media[n].length).toBeGreaterThan(10);
      }
    }
    expect(STRINGS.zh.media.downlinkPaused).toContain('自动恢复');
    expect(STRINGS.en.media.downlinkPaused).toContain('comes back by itself');
  });
});
