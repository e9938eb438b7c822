/**
 * Signaling protocol v1, as TypeScript types.
 *
 * Hand-written (with the helpers and comments the views use), mirroring `signaling/src/protocol.rs`
 * (messages, error codes) and `signaling/src/event.rs` (events); docs/protocol.md documents them.
 * They cannot drift from the server unnoticed: `generated/protocol.ts` is generated from the Rust
 * definitions with ts-rs (signaling/src/typescript.rs, checked by the Rust tests), and
 * `protocol-check.ts` makes `tsc` (so `npm run build`) fail when these types and the generated
 * ones disagree.
 */

export const PROTOCOL_VERSION = 1;

export type Role = 'consumer' | 'merchant' | 'mediator' | 'judge';

export function isStaff(role: Role | undefined): boolean {
  return role === 'mediator' || role === 'judge';
}

export type ErrorCode =
  | 'malformed_json'
  | 'invalid_message'
  | 'unknown_type'
  | 'frame_too_large'
  | 'rate_limited'
  | 'not_joined'
  | 'already_joined'
  | 'wrong_case'
  | 'forbidden'
  | 'not_admitted'
  | 'not_found'
  | 'conflict'
  | 'case_closed'
  | 'token_malformed'
  | 'token_signature'
  | 'token_algorithm'
  | 'token_expired'
  | 'token_not_yet_valid'
  | 'token_audience'
  | 'token_issuer'
  | 'token_revoked'
  | 'token_unknown'
  | 'token_role'
  | 'case_not_found'
  | 'denied'
  | 'removed'
  | 'unauthorized'
  | 'store_unavailable'
  | 'internal';

/** `room::ParticipantStatus`. */
export type ParticipantStatus = 'invited' | 'lobby' | 'admitted' | 'denied' | 'left' | 'removed';

export type NoteScope = 'shared' | 'staff' | 'private';
export type Outcome = 'settled' | 'partially_settled' | 'failed' | 'withdrawn' | 'referred_to_court';
export type ConsentKind = 'online_mediation' | 'recording';
export type MediaKind = 'audio' | 'video';
export type JoinedAs = 'lobby' | 'admitted';

// ---- client messages (`protocol::Request`, with the envelope of `ClientMessage`) ----

export type Request =
  | { type: 'join'; token: string; resume_from?: number }
  | { type: 'ping' }
  | { type: 'chat'; text: string }
  | { type: 'admit'; participant: string }
  | { type: 'deny'; participant: string; reason?: string }
  | { type: 'remove'; participant: string; reason?: string }
  | { type: 'leave' }
  | { type: 'caucus_start'; members: string[] }
  | { type: 'caucus_end'; caucus: string }
  | { type: 'note'; text: string; scope: NoteScope }
  | { type: 'propose_terms'; text?: string; document?: string }
  | { type: 'accept_terms'; terms: string; text_hash?: string }
  | { type: 'reject_terms'; terms: string; reason?: string }
  | { type: 'confirm_terms'; terms: string }
  | { type: 'record_outcome'; outcome: Outcome; reason?: string }
  | { type: 'consent'; kind: ConsentKind; given: boolean }
  | { type: 'media_offer'; sdp: string }
  | { type: 'media_answer'; sdp: string }
  | { type: 'ice_candidate'; candidate: string }
  | { type: 'mute'; kind: MediaKind; muted: boolean }
  | { type: 'doc_permission'; doc: string; participant: string; write: boolean };

export type ClientMessage = Request & { id?: string; case?: string };

// ---- server messages (`protocol::ServerMessage`) ----

export interface RosterEntry {
  participant: string;
  role: Role;
  name: string;
  status: ParticipantStatus;
  online: boolean;
}

export interface CaucusView {
  caucus: string;
  /** Listed only to the caucus's own members (absent otherwise). */
  members?: string[];
}

export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

export interface Welcome {
  protocol: number;
  case: string;
  title: string;
  participant: string;
  role: Role;
  name: string;
  status: ParticipantStatus;
  head_seq: number;
  roster: RosterEntry[];
  caucuses: CaucusView[];
  ice_servers?: IceServer[];
}

export interface TrackInfo {
  mid: string;
  participant: string;
  kind: MediaKind;
}

export type ServerMessage =
  | { type: 'ack'; id?: string; seq?: number }
  | { type: 'error'; id?: string; code: ErrorCode; message: string }
  | ({ type: 'welcome'; id?: string } & Welcome)
  | ({ type: 'event' } & Event)
  | { type: 'presence'; participant: string; online: boolean }
  | { type: 'pong'; id?: string }
  | { type: 'closed'; code: ErrorCode; message: string }
  | { type: 'media_answer'; id?: string; sdp: string }
  | { type: 'media_offer'; sdp: string }
  | { type: 'media_tracks'; tracks: TrackInfo[] }
  | { type: 'mute'; participant: string; kind: MediaKind; muted: boolean }
  | { type: 'media_downlink'; video: DownlinkVideo };

/** How much video our downlink carries (`media_downlink`): the server takes video away from a
 * link that loses packets so that the voices stay clear, and gives it back when it recovers. */
export type DownlinkVideo = 'full' | 'reduced' | 'paused';

// ---- events (`event::Event`, `event::EventBody`) ----

export type Visibility =
  | { to: 'everyone' }
  | { to: 'staff' }
  | { to: 'caucus'; caucus: string }
  | { to: 'participant'; participant: string };

export interface CaseParticipant {
  participant: string;
  role: Role;
  name: string;
}

export type EventBody =
  | { kind: 'case_created'; case: string; title: string; participants: CaseParticipant[] }
  | { kind: 'invite_issued'; jti: string; participant: string; role: Role; name: string; expires_at: number }
  | { kind: 'invite_revoked'; jti: string }
  | { kind: 'participant_joined'; participant: string; role: Role; name: string; joined_as: JoinedAs }
  | { kind: 'admitted'; participant: string; by: string; role?: Role; name?: string }
  | { kind: 'denied'; participant: string; by: string; reason?: string }
  | { kind: 'left'; participant: string }
  | { kind: 'removed'; participant: string; by: string; reason?: string }
  | { kind: 'chat'; from: string; text: string }
  | { kind: 'caucus_started'; caucus: string; by?: string; members?: string[] }
  | { kind: 'caucus_ended'; caucus: string; by?: string }
  | { kind: 'note_added'; author: string; scope: NoteScope; text: string }
  | {
      kind: 'terms_proposed';
      terms: string;
      by: string;
      text: string;
      text_hash: string;
      document?: string;
      doc_state?: string;
    }
  | { kind: 'terms_accepted'; terms: string; by: string; text_hash: string }
  | { kind: 'terms_rejected'; terms: string; by: string; reason?: string }
  | { kind: 'terms_confirmed'; terms: string; by: string; text_hash: string }
  | { kind: 'outcome_recorded'; outcome: Outcome; by: string; reason?: string; terms?: string }
  | { kind: 'consent_given'; participant: string; consent: ConsentKind; given: boolean }
  | { kind: 'doc_permission'; doc: string; participant: string; write: boolean; by: string };

export type Event = {
  seq: number;
  ts: number;
  visibility: Visibility;
  prev_hash: string;
  hash: string;
} & EventBody;

/** Error codes that mean this link can no longer be used: show the "link problem" page. */
export const FATAL_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'token_malformed',
  'token_signature',
  'token_algorithm',
  'token_expired',
  'token_not_yet_valid',
  'token_audience',
  'token_issuer',
  'token_revoked',
  'token_unknown',
  'token_role',
  'case_not_found',
  'denied',
  'removed',
]);
