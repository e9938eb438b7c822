/**
 * Media-only recovery: the peer connection with the server fails (ICE `disconnected` for too
 * long, or `failed`) while the signaling websocket stays up. A pure state machine: `media.ts`
 * feeds it the connection's state changes, a clock tick and what the answers say, and does
 * what it returns. `media-recovery.test.ts` drives it directly.
 *
 * What the server supports (docs/protocol.md "Media", server/src/media/engine.rs): one peer
 * connection per participant; a later `media_offer` renegotiates it, and new ICE credentials in
 * that offer are an ICE restart (str0m, ICE-lite), answered with new credentials of its own,
 * keeping the DTLS session. So:
 *
 * 1. `disconnected`: ICE often comes back by itself (a moment of packet loss, a Wi-Fi
 *    handover); wait `GRACE_MS`.
 * 2. Still not back, or `failed`: **ICE restart** on the same peer connection (a new offer with
 *    `iceRestart`), as many times as needed while each gets its `RESTART_TIMEOUT_MS`.
 * 3. An ICE restart is only right while the server still holds our peer. The server drops a
 *    peer whose ICE went quiet; our restart offer then makes it create a *new* one, with a new
 *    DTLS certificate (the answer's `a=fingerprint` changes), which our old connection cannot
 *    talk to. Then, and when restarts do not bring the media back within
 *    `RESTART_TIMEOUT_MS`, **resignal**: close and reopen the signaling websocket (it resumes
 *    where it was, nothing is lost); the server closes our peer with the old websocket, and the
 *    `welcome` on the new one starts a fresh peer connection. At most once per
 *    `RESIGNAL_EVERY_MS`; in between, ICE restarts continue.
 *
 * The server also takes an offer from a fresh RTCPeerConnection on the same websocket (another
 * DTLS fingerprint) as replacing the old connection (docs/protocol.md, `media_offer`); this
 * client still goes through the websocket in step 3, which also resumes the signaling side in
 * one step and was written before the server could do that.
 */

export const GRACE_MS = 4_000;
export const RESTART_TIMEOUT_MS = 8_000;
export const RESIGNAL_EVERY_MS = 30_000;

export type Phase = 'ok' | 'waiting' | 'restarting';

export interface Recovery {
  phase: Phase;
  /** When the current phase began (ms, the caller's clock). */
  since: number;
  /** ICE restarts since the media was last connected. */
  restarts: number;
  /** When we last resignalled, if ever. */
  lastResignal?: number;
}

export type RecoveryInput =
  /** The peer connection's `connectionState` changed. */
  | { type: 'state'; state: RTCPeerConnectionState; now: number }
  /** Time passes (called every few seconds). */
  | { type: 'tick'; now: number }
  /** The server answered our offer; its DTLS fingerprint differs from the one we started with. */
  | { type: 'fingerprint_changed'; now: number }
  /** A fresh peer connection was started (a new welcome): start over. */
  | { type: 'new_pc'; now: number };

export type RecoveryAct = 'ice_restart' | 'resignal';

export const initialRecovery: Recovery = { phase: 'ok', since: 0, restarts: 0 };

export function recover(r: Recovery, input: RecoveryInput): { next: Recovery; act?: RecoveryAct } {
  const now = input.now;
  const restart = (): { next: Recovery; act: RecoveryAct } => ({
    next: { ...r, phase: 'restarting', since: now, restarts: r.restarts + 1 },
    act: 'ice_restart',
  });
  const resignal = (): { next: Recovery; act?: RecoveryAct } => {
    if (r.lastResignal !== undefined && now - r.lastResignal < RESIGNAL_EVERY_MS) return restart();
    return { next: { ...r, phase: 'restarting', since: now, lastResignal: now }, act: 'resignal' };
  };
  switch (input.type) {
    case 'new_pc':
      return { next: { ...initialRecovery, lastResignal: r.lastResignal } };
    case 'state':
      switch (input.state) {
        case 'connected':
          return { next: { ...r, phase: 'ok', since: now, restarts: 0 } };
        case 'disconnected':
          return r.phase === 'ok' ? { next: { ...r, phase: 'waiting', since: now } } : { next: r };
        case 'failed':
          // Already restarting: let that attempt run its time (the tick decides).
          return r.phase === 'restarting' ? { next: r } : restart();
        default:
          // new, connecting, closed: nothing to decide yet.
          return { next: r };
      }
    case 'tick':
      if (r.phase === 'waiting' && now - r.since >= GRACE_MS) return restart();
      if (r.phase === 'restarting' && now - r.since >= RESTART_TIMEOUT_MS) return resignal();
      return { next: r };
    case 'fingerprint_changed':
      // The server made a new peer for us: our connection cannot be repaired.
      return resignal();
  }
}

/** The DTLS fingerprint an SDP announces (`a=fingerprint:…`), session or first media level. */
export function fingerprintOf(sdp: string): string | undefined {
  const m = /^a=fingerprint:(.+)$/m.exec(sdp);
  return m?.[1]?.trim().toLowerCase();
}
