/**
 * The client's state logic: a pure reducer, server messages and connection changes in, state
 * out. No I/O, no DOM, no clock: `connection.ts` feeds it, the views read it, and
 * `state.test.ts` drives it directly.
 *
 * Resume: `lastSeq` is the highest event `seq` applied; the connection sends it as
 * `resume_from` on reconnect, and any event at or below it (a replay overlapping what we have)
 * is ignored, so no chat line or note appears twice.
 */
import type {
  CaucusView,
  ConsentKind,
  ErrorCode,
  Event,
  NoteScope,
  Outcome,
  ParticipantStatus,
  Role,
  RosterEntry,
  ServerMessage,
  Visibility,
} from './protocol';
import { FATAL_CODES, isStaff } from './protocol';

export type ConnState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface Person {
  participant: string;
  /** Unknown when the server told us only an id (e.g. another party admitted later). */
  role?: Role;
  name?: string;
  status: ParticipantStatus;
  online: boolean;
}

export interface ChatLine {
  seq: number;
  ts: number;
  from: string;
  text: string;
  /** Set when the line was said inside a caucus (only its members receive it). */
  caucus?: string;
}

export interface Note {
  seq: number;
  ts: number;
  author: string;
  scope: NoteScope;
  text: string;
  caucus?: string;
}

export interface Terms {
  terms: string;
  by: string;
  text: string;
  text_hash: string;
  seq: number;
  accepted: Record<string, string>;
  rejected: Record<string, string>;
  confirmedBy?: string;
}

export interface Caucus {
  caucus: string;
  /** Empty when we are not a member (the server does not tell outsiders who is inside). */
  members: string[];
}

export interface State {
  conn: ConnState;
  /** A code that ends this link (token_*, case_not_found, denied, removed): show the link page. */
  fatal?: ErrorCode;
  me?: { participant: string; role: Role; name: string; status: ParticipantStatus };
  caseId?: string;
  title?: string;
  lastSeq: number;
  people: Record<string, Person>;
  /** Order of first appearance, for stable lists. */
  order: string[];
  caucuses: Caucus[];
  chat: ChatLine[];
  notes: Note[];
  /** Every terms proposal, oldest first; the last one is current. */
  terms: Terms[];
  outcome?: { outcome: Outcome; by: string; reason?: string };
  /** Every event we applied (the case timeline, shown to staff). */
  timeline: Event[];
  /**
   * What each participant said about consent (`consent_given`), by kind; ours also from what
   * we sent (`my_consent`), since consent given from the lobby reaches only staff.
   */
  consents: Record<string, Partial<Record<ConsentKind, boolean>>>;
  /** The last refused request, shown briefly. */
  lastError?: { code: ErrorCode; message: string };
}

export type Action =
  | { type: 'connecting' }
  | { type: 'open' }
  | { type: 'disconnected' }
  | { type: 'server'; msg: ServerMessage }
  | { type: 'dismiss_error' }
  /** We told the server our consent (or it is remembered from earlier on this tab). */
  | { type: 'my_consent'; kind: ConsentKind; given: boolean };

export const initialState: State = {
  conn: 'idle',
  lastSeq: 0,
  people: {},
  order: [],
  caucuses: [],
  chat: [],
  notes: [],
  terms: [],
  timeline: [],
  consents: {},
};

export function reduce(state: State, action: Action): State {
  switch (action.type) {
    case 'connecting':
      return { ...state, conn: state.me ? 'reconnecting' : 'connecting' };
    case 'open':
      return state;
    case 'disconnected':
      if (state.fatal || state.conn === 'closed') return { ...state, conn: 'closed' };
      return { ...state, conn: 'reconnecting' };
    case 'dismiss_error':
      return { ...state, lastError: undefined };
    case 'my_consent':
      return state.me ? setConsent(state, state.me.participant, action.kind, action.given) : state;
    case 'server':
      return onServer(state, action.msg);
  }
}

function onServer(state: State, msg: ServerMessage): State {
  switch (msg.type) {
    case 'welcome': {
      let s: State = {
        ...state,
        conn: 'open',
        me: { participant: msg.participant, role: msg.role, name: msg.name, status: msg.status },
        caseId: msg.case,
        title: msg.title,
      };
      for (const r of msg.roster) s = upsert(s, fromRoster(r));
      s = { ...s, caucuses: msg.caucuses.map(fromCaucusView) };
      return s;
    }
    case 'event':
      return onEvent(state, msg);
    case 'presence':
      return upsert(state, { participant: msg.participant, online: msg.online });
    case 'error':
      if (FATAL_CODES.has(msg.code)) return { ...state, fatal: msg.code, conn: 'closed' };
      return { ...state, lastError: { code: msg.code, message: msg.message } };
    case 'closed':
      if (FATAL_CODES.has(msg.code)) return { ...state, fatal: msg.code, conn: 'closed' };
      return { ...state, lastError: { code: msg.code, message: msg.message } };
    default:
      // ack, pong and the media messages change nothing this slice shows.
      return state;
  }
}

function fromRoster(r: RosterEntry): Person {
  return { participant: r.participant, role: r.role, name: r.name, status: r.status, online: r.online };
}

function fromCaucusView(c: CaucusView): Caucus {
  return { caucus: c.caucus, members: c.members ?? [] };
}

/** Merges what we learned about a participant into the state (unknown fields are kept). */
function upsert(state: State, p: Partial<Person> & { participant: string }): State {
  const old = state.people[p.participant];
  const merged: Person = {
    participant: p.participant,
    role: p.role ?? old?.role,
    name: p.name ?? old?.name,
    status: p.status ?? old?.status ?? 'admitted',
    online: p.online ?? old?.online ?? false,
  };
  const order = old ? state.order : [...state.order, p.participant];
  let me = state.me;
  if (me && me.participant === p.participant && p.status) me = { ...me, status: p.status };
  return { ...state, people: { ...state.people, [p.participant]: merged }, order, me };
}

function caucusOf(v: Visibility): string | undefined {
  return v.to === 'caucus' ? v.caucus : undefined;
}

function onEvent(state: State, e: Event): State {
  // A replay overlapping what we already have: ignore it (no duplicate lines).
  if (e.seq <= state.lastSeq) return state;
  let s: State = { ...state, lastSeq: e.seq, timeline: [...state.timeline, e] };
  switch (e.kind) {
    case 'case_created':
      for (const p of e.participants)
        if (!s.people[p.participant]) s = upsert(s, { ...p, status: 'invited' });
      return s;
    case 'invite_issued':
      return s.people[e.participant] ? s : upsert(s, { participant: e.participant, role: e.role, name: e.name, status: 'invited' });
    case 'participant_joined':
      return upsert(s, { participant: e.participant, role: e.role, name: e.name, status: e.joined_as });
    case 'admitted':
      // Someone we had not heard of was waiting in the lobby, so was connected: show them online
      // (their presence message went out while we could not receive it).
      // The event names who came in (role, name), for those who never saw them in the lobby.
      return upsert(s, {
        participant: e.participant,
        ...(e.role ? { role: e.role } : {}),
        ...(e.name ? { name: e.name } : {}),
        status: 'admitted',
        online: s.people[e.participant]?.online ?? true,
      });
    case 'denied':
      return upsert(s, { participant: e.participant, status: 'denied', online: false });
    case 'left':
      return upsert(s, { participant: e.participant, status: 'left' });
    case 'removed':
      return upsert(s, { participant: e.participant, status: 'removed', online: false });
    case 'chat':
      return { ...s, chat: [...s.chat, { seq: e.seq, ts: e.ts, from: e.from, text: e.text, caucus: caucusOf(e.visibility) }] };
    case 'caucus_started':
      return {
        ...s,
        caucuses: [...s.caucuses.filter((c) => c.caucus !== e.caucus), { caucus: e.caucus, members: e.members ?? [] }],
      };
    case 'caucus_ended':
      return { ...s, caucuses: s.caucuses.filter((c) => c.caucus !== e.caucus) };
    case 'note_added':
      return {
        ...s,
        notes: [...s.notes, { seq: e.seq, ts: e.ts, author: e.author, scope: e.scope, text: e.text, caucus: caucusOf(e.visibility) }],
      };
    case 'terms_proposed':
      return {
        ...s,
        terms: [...s.terms, { terms: e.terms, by: e.by, text: e.text, text_hash: e.text_hash, seq: e.seq, accepted: {}, rejected: {} }],
      };
    case 'terms_accepted':
      return updateTerms(s, e.terms, (t) => ({ ...t, accepted: { ...t.accepted, [e.by]: e.text_hash } }));
    case 'terms_rejected':
      return updateTerms(s, e.terms, (t) => ({ ...t, rejected: { ...t.rejected, [e.by]: e.reason ?? '' } }));
    case 'terms_confirmed':
      return updateTerms(s, e.terms, (t) => ({ ...t, confirmedBy: e.by }));
    case 'outcome_recorded':
      return { ...s, outcome: { outcome: e.outcome, by: e.by, reason: e.reason } };
    case 'consent_given':
      return setConsent(s, e.participant, e.consent, e.given);
    default:
      return s;
  }
}

function setConsent(s: State, who: string, kind: ConsentKind, given: boolean): State {
  return { ...s, consents: { ...s.consents, [who]: { ...s.consents[who], [kind]: given } } };
}

function updateTerms(s: State, id: string, f: (t: Terms) => Terms): State {
  return { ...s, terms: s.terms.map((t) => (t.terms === id ? f(t) : t)) };
}

// ---- derived views ----

export function currentTerms(s: State): Terms | undefined {
  return s.terms[s.terms.length - 1];
}

/** A caucus is running that we are not in: show the "talking privately" banner. */
export function outsideCaucus(s: State): boolean {
  const me = s.me?.participant;
  return !!me && s.caucuses.some((c) => !c.members.includes(me));
}

/** The caucus we are in, if any. */
export function myCaucus(s: State): Caucus | undefined {
  const me = s.me?.participant;
  return me ? s.caucuses.find((c) => c.members.includes(me)) : undefined;
}

export function people(s: State): Person[] {
  return s.order.map((id) => s.people[id]!).filter(Boolean);
}

/** Who waits in the lobby (staff see them). */
export function lobby(s: State): Person[] {
  return people(s).filter((p) => p.status === 'lobby');
}

/** Who is in the room (admitted). */
export function inRoom(s: State): Person[] {
  return people(s).filter((p) => p.status === 'admitted');
}

/** The parties who must accept terms: every consumer and merchant not denied or removed. */
export function parties(s: State): Person[] {
  return people(s).filter(
    (p) => (p.role === 'consumer' || p.role === 'merchant') && p.status !== 'denied' && p.status !== 'removed',
  );
}

/** Whose answer to the terms to show: the parties we know, and anyone who answered. */
export function answerers(s: State, t: Terms): string[] {
  const ids = parties(s).map((p) => p.participant);
  for (const id of [...Object.keys(t.accepted), ...Object.keys(t.rejected)]) if (!ids.includes(id)) ids.push(id);
  return ids;
}

export function amStaff(s: State): boolean {
  return isStaff(s.me?.role);
}

export function displayName(s: State, id: string): string {
  return s.people[id]?.name ?? '';
}

/** What `participant` said about `kind` of consent: true, false, or undefined (nothing yet). */
export function consentOf(s: State, participant: string, kind: ConsentKind = 'online_mediation'): boolean | undefined {
  return s.consents[participant]?.[kind];
}

/**
 * Whether we must ask this person to consent to online mediation before they enter: parties
 * (consumer, merchant) who have not agreed yet. Staff are not asked: they run the session.
 */
export function mustAskConsent(s: State): boolean {
  const me = s.me;
  if (!me || isStaff(me.role)) return false;
  return consentOf(s, me.participant) !== true;
}

/**
 * Whom we may remove from the session now: staff may remove anyone in the room but themselves
 * (the permission matrix, `signaling/src/role.rs`: mediators and judges manage participants;
 * the room refuses removing oneself). People still in the lobby are denied instead.
 */
export function removable(s: State): Person[] {
  if (!amStaff(s)) return [];
  return inRoom(s).filter((p) => p.participant !== s.me?.participant);
}
