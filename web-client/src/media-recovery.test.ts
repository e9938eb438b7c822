import { describe, expect, it } from 'vitest';
import {
  GRACE_MS,
  RESIGNAL_EVERY_MS,
  RESTART_TIMEOUT_MS,
  fingerprintOf,
  initialRecovery,
  recover,
  type Recovery,
  type RecoveryAct,
  type RecoveryInput,
} from './media-recovery';

/** Feeds the inputs in order; returns the final state and every act. */
function run(inputs: RecoveryInput[], from: Recovery = initialRecovery): { r: Recovery; acts: RecoveryAct[] } {
  let r = from;
  const acts: RecoveryAct[] = [];
  for (const i of inputs) {
    const out = recover(r, i);
    r = out.next;
    if (out.act) acts.push(out.act);
  }
  return { r, acts };
}

const st = (state: RTCPeerConnectionState, now: number): RecoveryInput => ({ type: 'state', state, now });
const tick = (now: number): RecoveryInput => ({ type: 'tick', now });

describe('media-only recovery', () => {
  it('a short disconnection that heals by itself needs nothing', () => {
    const { r, acts } = run([st('connected', 0), st('disconnected', 1_000), tick(3_000), st('connected', 3_500), tick(20_000)]);
    expect(acts).toEqual([]);
    expect(r.phase).toBe('ok');
  });

  it('disconnected for longer than the grace: one ICE restart', () => {
    const { r, acts } = run([st('connected', 0), st('disconnected', 1_000), tick(1_000 + GRACE_MS - 1), tick(1_000 + GRACE_MS)]);
    expect(acts).toEqual(['ice_restart']);
    expect(r).toMatchObject({ phase: 'restarting', restarts: 1 });
  });

  it('failed: ICE restart at once, not twice for the same attempt', () => {
    const { acts } = run([st('connected', 0), st('failed', 5_000), st('failed', 5_100), tick(6_000)]);
    expect(acts).toEqual(['ice_restart']);
  });

  it('the restart brings the media back: all clear', () => {
    const { r, acts } = run([st('connected', 0), st('failed', 5_000), st('connecting', 5_200), st('connected', 5_600), tick(5_000 + RESTART_TIMEOUT_MS + 1)]);
    expect(acts).toEqual(['ice_restart']);
    expect(r).toMatchObject({ phase: 'ok', restarts: 0 });
  });

  it('a restart that does not help: resignal (fresh peer through a new websocket), then restarts until the next resignal is due', () => {
    const t0 = 5_000;
    const { r, acts } = run([
      st('connected', 0),
      st('failed', t0),
      tick(t0 + RESTART_TIMEOUT_MS),
      // A new welcome started a fresh peer connection; it fails too.
      { type: 'new_pc', now: t0 + RESTART_TIMEOUT_MS + 1_000 },
      st('failed', t0 + RESTART_TIMEOUT_MS + 3_000),
      tick(t0 + 2 * RESTART_TIMEOUT_MS + 3_000),
      tick(t0 + 3 * RESTART_TIMEOUT_MS + 3_000),
    ]);
    // Too soon for a second resignal: ICE restarts instead.
    expect(acts).toEqual(['ice_restart', 'resignal', 'ice_restart', 'ice_restart', 'ice_restart']);
    expect(r.lastResignal).toBe(t0 + RESTART_TIMEOUT_MS);
    const later = run([tick(t0 + RESTART_TIMEOUT_MS + RESIGNAL_EVERY_MS + 10_000)], r);
    expect(later.acts).toEqual(['resignal']);
  });

  it('the server answered with a new DTLS certificate (it had dropped our peer): resignal at once', () => {
    const { acts } = run([st('connected', 0), st('failed', 5_000), { type: 'fingerprint_changed', now: 5_300 }]);
    expect(acts).toEqual(['ice_restart', 'resignal']);
  });

  it('new, connecting and closed decide nothing', () => {
    const { r, acts } = run([st('new', 0), st('connecting', 10), st('closed', 20), tick(100_000)]);
    expect(acts).toEqual([]);
    expect(r.phase).toBe('ok');
  });
});

describe('fingerprintOf', () => {
  it('reads the DTLS fingerprint of an SDP', () => {
    const sdp = 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=fingerprint:sha-256 AB:CD:EF\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n';
    expect(fingerprintOf(sdp)).toBe('sha-256 ab:cd:ef');
    expect(fingerprintOf('v=0\r\n')).toBeUndefined();
  });
});
