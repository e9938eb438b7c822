// Generated from the Rust definitions in signaling/src by ts-rs; do not edit.
// Regenerate: UPDATE_TS=1 cargo test -p yuntiao-signaling typescript

export type Role = "consumer" | "merchant" | "mediator" | "judge";

export type ErrorCode = "malformed_json" | "invalid_message" | "unknown_type" | "frame_too_large" | "rate_limited" | "not_joined" | "already_joined" | "wrong_case" | "forbidden" | "not_admitted" | "not_found" | "conflict" | "case_closed" | "token_malformed" | "token_signature" | "token_algorithm" | "token_expired" | "token_not_yet_valid" | "token_audience" | "token_issuer" | "token_revoked" | "token_unknown" | "token_role" | "case_not_found" | "denied" | "removed" | "unauthorized" | "store_unavailable" | "internal";

export type ProtocolError = { code: ErrorCode, message: string, };

export type MediaKind = "audio" | "video";

export type LayerQuality = "high" | "medium" | "low";

export type DownlinkVideo = "full" | "reduced" | "paused";

export type NoteScope = "shared" | "staff" | "private";

export type Outcome = "settled" | "partially_settled" | "failed" | "withdrawn" | "referred_to_court";

export type ConsentKind = "online_mediation" | "recording";

export type JoinedAs = "lobby" | "admitted";

export type ParticipantStatus = "invited" | "lobby" | "admitted" | "denied" | "left" | "removed";

export type Visibility = { "to": "everyone" } | { "to": "staff" } | { "to": "caucus", caucus: string, } | { "to": "participant", participant: string, };

export type CaseParticipant = { participant: string, role: Role, name: string, };

export type DocAccess = "none" | "read" | "write";

export type DocVersion = { text: string, 
/**
 * The document's state vector (Yjs v1 encoding), base64: which edits the text includes.
 */
state_vector: string, };

export type Request = { "type": "join", token: string, resume_from?: number, } | { "type": "ping", } | { "type": "chat", text: string, } | { "type": "admit", participant: string, } | { "type": "deny", participant: string, reason?: string, } | { "type": "remove", participant: string, reason?: string, } | { "type": "leave", } | { "type": "caucus_start", members: Array<string>, } | { "type": "caucus_end", caucus: string, } | { "type": "note", text: string, scope: NoteScope, } | { "type": "propose_terms", text?: string, document?: string, } | { "type": "accept_terms", terms: string, text_hash?: string, } | { "type": "reject_terms", terms: string, reason?: string, } | { "type": "confirm_terms", terms: string, } | { "type": "record_outcome", outcome: Outcome, reason?: string, } | { "type": "consent", kind: ConsentKind, given: boolean, } | { "type": "media_offer", sdp: string, } | { "type": "media_answer", sdp: string, } | { "type": "ice_candidate", candidate: string, } | { "type": "mute", kind: MediaKind, muted: boolean, } | { "type": "media_layer", mid: string, quality: LayerQuality, } | { "type": "doc_permission", doc: string, participant: string, write: boolean, };

export type ClientMessage = { 
/**
 * Request id chosen by the client, echoed in the reply.
 */
id?: string, 
/**
 * If present, must equal the joined case.
 */
case?: string, } & ({ "type": "join", token: string, resume_from?: number, } | { "type": "ping", } | { "type": "chat", text: string, } | { "type": "admit", participant: string, } | { "type": "deny", participant: string, reason?: string, } | { "type": "remove", participant: string, reason?: string, } | { "type": "leave", } | { "type": "caucus_start", members: Array<string>, } | { "type": "caucus_end", caucus: string, } | { "type": "note", text: string, scope: NoteScope, } | { "type": "propose_terms", text?: string, document?: string, } | { "type": "accept_terms", terms: string, text_hash?: string, } | { "type": "reject_terms", terms: string, reason?: string, } | { "type": "confirm_terms", terms: string, } | { "type": "record_outcome", outcome: Outcome, reason?: string, } | { "type": "consent", kind: ConsentKind, given: boolean, } | { "type": "media_offer", sdp: string, } | { "type": "media_answer", sdp: string, } | { "type": "ice_candidate", candidate: string, } | { "type": "mute", kind: MediaKind, muted: boolean, } | { "type": "media_layer", mid: string, quality: LayerQuality, } | { "type": "doc_permission", doc: string, participant: string, write: boolean, });

export type RosterEntry = { participant: string, role: Role, name: string, status: ParticipantStatus, 
/**
 * Whether a connection of this participant is open right now.
 */
online: boolean, };

export type CaucusView = { caucus: string, members?: Array<string>, };

export type IceServer = { urls: Array<string>, username?: string, credential?: string, };

export type Welcome = { protocol: number, case: string, title: string, participant: string, role: Role, name: string, status: ParticipantStatus, 
/**
 * Last event seq of the case when the welcome was built; replayed events follow up to it.
 */
head_seq: number, roster: Array<RosterEntry>, caucuses: Array<CaucusView>, 
/**
 * STUN/TURN servers for the peer connection (time-limited TURN credentials), set by the
 * server when TURN is configured.
 */
ice_servers?: Array<IceServer>, };

export type TrackInfo = { 
/**
 * The media line (`a=mid`) in this participant's peer connection.
 */
mid: string, participant: string, kind: MediaKind, };

export type EventBody = { "kind": "case_created", case: string, title: string, participants: Array<CaseParticipant>, } | { "kind": "invite_issued", jti: string, participant: string, role: Role, name: string, expires_at: number, } | { "kind": "invite_revoked", jti: string, } | { "kind": "participant_joined", participant: string, role: Role, name: string, joined_as: JoinedAs, } | { "kind": "admitted", participant: string, by: string, 
/**
 * The admitted participant's role and name, so that everyone in the room learns who
 * joined them (parties never saw the `participant_joined` from the lobby).
 */
role?: Role, name?: string, } | { "kind": "denied", participant: string, by: string, reason?: string, } | { "kind": "left", participant: string, } | { "kind": "removed", participant: string, by: string, reason?: string, } | { "kind": "chat", from: string, text: string, } | { "kind": "caucus_started", caucus: string, 
/**
 * Empty in the view of a non-member.
 */
by?: string, members?: Array<string>, } | { "kind": "caucus_ended", caucus: string, by?: string, } | { "kind": "note_added", author: string, scope: NoteScope, text: string, } | { "kind": "terms_proposed", terms: string, by: string, text: string, 
/**
 * SHA-256 (hex) of `text`: what an acceptance binds to.
 */
text_hash: string, 
/**
 * The shared document the text was taken from, if any.
 */
document?: string, 
/**
 * That document's state vector (Yjs v1, base64) when the text was taken.
 */
doc_state?: string, } | { "kind": "terms_accepted", terms: string, by: string, text_hash: string, } | { "kind": "terms_rejected", terms: string, by: string, reason?: string, } | { "kind": "terms_confirmed", terms: string, by: string, text_hash: string, } | { "kind": "outcome_recorded", outcome: Outcome, by: string, reason?: string, terms?: string, } | { "kind": "consent_given", participant: string, consent: ConsentKind, given: boolean, } | { "kind": "doc_permission", doc: string, participant: string, write: boolean, by: string, };

export type Event = { seq: number, 
/**
 * Milliseconds since the Unix epoch, as given by the server's clock when sealed.
 */
ts: number, visibility: Visibility, prev_hash: string, hash: string, } & ({ "kind": "case_created", case: string, title: string, participants: Array<CaseParticipant>, } | { "kind": "invite_issued", jti: string, participant: string, role: Role, name: string, expires_at: number, } | { "kind": "invite_revoked", jti: string, } | { "kind": "participant_joined", participant: string, role: Role, name: string, joined_as: JoinedAs, } | { "kind": "admitted", participant: string, by: string, 
/**
 * The admitted participant's role and name, so that everyone in the room learns who
 * joined them (parties never saw the `participant_joined` from the lobby).
 */
role?: Role, name?: string, } | { "kind": "denied", participant: string, by: string, reason?: string, } | { "kind": "left", participant: string, } | { "kind": "removed", participant: string, by: string, reason?: string, } | { "kind": "chat", from: string, text: string, } | { "kind": "caucus_started", caucus: string, 
/**
 * Empty in the view of a non-member.
 */
by?: string, members?: Array<string>, } | { "kind": "caucus_ended", caucus: string, by?: string, } | { "kind": "note_added", author: string, scope: NoteScope, text: string, } | { "kind": "terms_proposed", terms: string, by: string, text: string, 
/**
 * SHA-256 (hex) of `text`: what an acceptance binds to.
 */
text_hash: string, 
/**
 * The shared document the text was taken from, if any.
 */
document?: string, 
/**
 * That document's state vector (Yjs v1, base64) when the text was taken.
 */
doc_state?: string, } | { "kind": "terms_accepted", terms: string, by: string, text_hash: string, } | { "kind": "terms_rejected", terms: string, by: string, reason?: string, } | { "kind": "terms_confirmed", terms: string, by: string, text_hash: string, } | { "kind": "outcome_recorded", outcome: Outcome, by: string, reason?: string, terms?: string, } | { "kind": "consent_given", participant: string, consent: ConsentKind, given: boolean, } | { "kind": "doc_permission", doc: string, participant: string, write: boolean, by: string, });

export type ServerMessage = { "type": "ack", id?: string, seq?: number, } | { "type": "error", id?: string, code: ErrorCode, message: string, } | { "type": "welcome", id?: string, protocol: number, case: string, title: string, participant: string, role: Role, name: string, status: ParticipantStatus, 
/**
 * Last event seq of the case when the welcome was built; replayed events follow up to it.
 */
head_seq: number, roster: Array<RosterEntry>, caucuses: Array<CaucusView>, 
/**
 * STUN/TURN servers for the peer connection (time-limited TURN credentials), set by the
 * server when TURN is configured.
 */
ice_servers?: Array<IceServer>, } | { "type": "event", seq: number, 
/**
 * Milliseconds since the Unix epoch, as given by the server's clock when sealed.
 */
ts: number, visibility: Visibility, prev_hash: string, hash: string, } & ({ "kind": "case_created", case: string, title: string, participants: Array<CaseParticipant>, } | { "kind": "invite_issued", jti: string, participant: string, role: Role, name: string, expires_at: number, } | { "kind": "invite_revoked", jti: string, } | { "kind": "participant_joined", participant: string, role: Role, name: string, joined_as: JoinedAs, } | { "kind": "admitted", participant: string, by: string, 
/**
 * The admitted participant's role and name, so that everyone in the room learns who
 * joined them (parties never saw the `participant_joined` from the lobby).
 */
role?: Role, name?: string, } | { "kind": "denied", participant: string, by: string, reason?: string, } | { "kind": "left", participant: string, } | { "kind": "removed", participant: string, by: string, reason?: string, } | { "kind": "chat", from: string, text: string, } | { "kind": "caucus_started", caucus: string, 
/**
 * Empty in the view of a non-member.
 */
by?: string, members?: Array<string>, } | { "kind": "caucus_ended", caucus: string, by?: string, } | { "kind": "note_added", author: string, scope: NoteScope, text: string, } | { "kind": "terms_proposed", terms: string, by: string, text: string, 
/**
 * SHA-256 (hex) of `text`: what an acceptance binds to.
 */
text_hash: string, 
/**
 * The shared document the text was taken from, if any.
 */
document?: string, 
/**
 * That document's state vector (Yjs v1, base64) when the text was taken.
 */
doc_state?: string, } | { "kind": "terms_accepted", terms: string, by: string, text_hash: string, } | { "kind": "terms_rejected", terms: string, by: string, reason?: string, } | { "kind": "terms_confirmed", terms: string, by: string, text_hash: string, } | { "kind": "outcome_recorded", outcome: Outcome, by: string, reason?: string, terms?: string, } | { "kind": "consent_given", participant: string, consent: ConsentKind, given: boolean, } | { "kind": "doc_permission", doc: string, participant: string, write: boolean, by: string, }) | { "type": "presence", participant: string, online: boolean, } | { "type": "pong", id?: string, } | { "type": "closed", code: ErrorCode, message: string, } | { "type": "media_answer", id?: string, sdp: string, } | { "type": "media_offer", sdp: string, } | { "type": "media_tracks", tracks: Array<TrackInfo>, } | { "type": "mute", participant: string, kind: MediaKind, muted: boolean, } | { "type": "media_downlink", video: DownlinkVideo, };

