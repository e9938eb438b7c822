import { describe, expect, it } from 'vitest';
import type { Event, EventBody, ServerMessage, Welcome } from './protocol';
import { noteLabel } from './notes';
import { STRINGS, fatalText, fatalTitle, initialLang } from './i18n';
import { answerers, consentOf, initialState, inRoom, lobby, mustAskConsent, outsideCaucus, myCaucus, reduce, removable, currentTerms, type Action, type State } from './state';
import { consentKey, rememberConsent, rememberedConsent } from './consent';

const GENESIS = '0'.repeat(64);

function ev(seq: number, body: EventBody, visibility: Event['visibility'] = { to: 'everyone' }): ServerMessage {
  return { type: 'event', seq, ts: 1_700_000_000_000 + seq, visibility, prev_hash: GENESIS, hash: GENESIS, ...body } as ServerMessage;
}

function welcome(w: Partial<Welcome>): ServerMessage {
  return {
    type: 'welcome',
    protocol: 1,
    case: 'c1',
    title: '网购退款纠纷',
    participant: 'p_me',
    role: 'consumer',
    name: '张三',
    status: 'lobby',
    head_seq: 0,
    roster: [],
    caucuses: [],
    ...w,
  };
}

function run(msgs: (ServerMessage | Action)[], from: State = initialState): State {
  return msgs.reduce<State>((s, m) => reduce(s, isAction(m) ? m : { type: 'server', msg: m }), from);
}

function isAction(m: ServerMessage | Action): m is Action {
  return m.type === 'connecting' || m.type === 'open' || m.type === 'disconnected' || m.type === 'dismiss_error' || m.type === 'server' || m.type === 'my_consent';
}

const mediator = { participant: 'p_med', role: 'mediator' as const, name: '王调解员', status: 'admitted' as const, online: true };

describe('lobby and admit', () => {
  it('a party waits in the lobby, then enters when admitted', () => {
    let s = run([
      { type: 'connecting' },
      welcome({ roster: [mediator, { participant: 'p_me', role: 'consumer', name: '张三', status: 'lobby', online: true }] }),
    ]);
    expect(s.conn).toBe('open');
    expect(s.me?.status).toBe('lobby');
    expect(s.title).toBe('网购退款纠纷');
    expect(s.people['p_med']?.name).toBe('王调解员');
    // Admitted: a fresh welcome, then the events this party may see.
    s = run([welcome({ status: 'admitted', head_seq: 5, roster: [mediator, { participant: 'p_me', role: 'consumer', name: '张三', status: 'admitted', online: true }] }), ev(5, { kind: 'admitted', participant: 'p_me', by: 'p_med' })], s);
    expect(s.me?.status).toBe('admitted');
    expect(inRoom(s).map((p) => p.participant)).toEqual(['p_med', 'p_me']);
  });

  it('staff see the lobby from participant_joined and it empties on admit and deny', () => {
    let s = run([
      welcome({ participant: 'p_med', role: 'mediator', name: '王调解员', status: 'admitted', roster: [mediator] }),
      ev(3, { kind: 'participant_joined', participant: 'p_c', role: 'consumer', name: '张三', joined_as: 'lobby' }, { to: 'staff' }),
      ev(4, { kind: 'participant_joined', participant: 'p_m', role: 'merchant', name: '某店', joined_as: 'lobby' }, { to: 'staff' }),
      { type: 'presence', participant: 'p_c', online: true },
    ]);
    expect(lobby(s).map((p) => p.name)).toEqual(['张三', '某店']);
    expect(s.people['p_c']?.online).toBe(true);
    s = run([ev(5, { kind: 'admitted', participant: 'p_c', by: 'p_med' }), ev(6, { kind: 'denied', participant: 'p_m', by: 'p_med' }, { to: 'staff' })], s);
    expect(lobby(s)).toEqual([]);
    expect(s.people['p_c']?.status).toBe('admitted');
    expect(s.people['p_m']?.status).toBe('denied');
  });

  it('a denied link ends in the link-problem state, not a retry', () => {
    const s = run([{ type: 'connecting' }, { type: 'error', id: 'join1', code: 'denied', message: 'denied' }, { type: 'disconnected' }]);
    expect(s.fatal).toBe('denied');
    expect(s.conn).toBe('closed');
    const expired = run([{ type: 'error', code: 'token_expired', message: 'expired' }]);
    expect(expired.fatal).toBe('token_expired');
    // An ordinary refusal is not fatal.
    const refused = run([{ type: 'error', code: 'forbidden', message: 'no' }]);
    expect(refused.fatal).toBeUndefined();
    expect(refused.lastError?.code).toBe('forbidden');
  });
});

describe('another party admitted later', () => {
  it('appears in the room, online, and their answer to the terms is shown', () => {
    const s = run([
      welcome({ status: 'admitted', roster: [mediator, { participant: 'p_me', role: 'consumer', name: '张三', status: 'admitted', online: true }] }),
      ev(6, { kind: 'admitted', participant: 'p_m', by: 'p_med' }),
      ev(7, { kind: 'terms_proposed', terms: 't1', by: 'p_med', text: '退款', text_hash: 'h' }),
      ev(8, { kind: 'terms_accepted', terms: 't1', by: 'p_m', text_hash: 'h' }),
    ]);
    expect(s.people['p_m']).toMatchObject({ status: 'admitted', online: true });
    expect(answerers(s, currentTerms(s)!)).toEqual(['p_me', 'p_m']);
  });
});

describe('caucus banner', () => {
  const admittedMerchant = welcome({ participant: 'p_m', role: 'merchant', name: '某店', status: 'admitted', roster: [mediator] });

  it('the side outside a caucus sees the banner until it ends', () => {
    let s = run([admittedMerchant, ev(7, { kind: 'caucus_started', caucus: 'k1' })]);
    expect(outsideCaucus(s)).toBe(true);
    expect(myCaucus(s)).toBeUndefined();
    s = run([ev(9, { kind: 'caucus_ended', caucus: 'k1' })], s);
    expect(outsideCaucus(s)).toBe(false);
  });

  it('members see no banner, and their caucus chat is tagged', () => {
    const s = run([
      welcome({ participant: 'p_c', status: 'admitted', roster: [mediator] }),
      ev(7, { kind: 'caucus_started', caucus: 'k1', by: 'p_med', members: ['p_med', 'p_c'] }),
      ev(8, { kind: 'chat', from: 'p_med', text: '私下说' }, { to: 'caucus', caucus: 'k1' }),
    ]);
    expect(outsideCaucus(s)).toBe(false);
    expect(myCaucus(s)?.caucus).toBe('k1');
    expect(s.chat[0]?.caucus).toBe('k1');
  });

  it('a caucus already running at join (from welcome) shows the banner', () => {
    const s = run([welcome({ participant: 'p_m', role: 'merchant', status: 'admitted', caucuses: [{ caucus: 'k2' }] })]);
    expect(outsideCaucus(s)).toBe(true);
  });
});

describe('resume without duplicates', () => {
  it('replayed events at or below the last seq are ignored', () => {
    let s = run([
      welcome({ status: 'admitted', roster: [mediator] }),
      ev(1, { kind: 'chat', from: 'p_med', text: '一' }),
      ev(2, { kind: 'chat', from: 'p_me', text: '二' }),
    ]);
    expect(s.lastSeq).toBe(2);
    s = run([{ type: 'disconnected' }], s);
    expect(s.conn).toBe('reconnecting');
    s = run([{ type: 'connecting' }], s);
    expect(s.conn).toBe('reconnecting');
    // The server replays after resume_from=2, but an overlap (seq 2) must not double a line.
    s = run([
      welcome({ status: 'admitted', roster: [mediator], head_seq: 3 }),
      ev(2, { kind: 'chat', from: 'p_me', text: '二' }),
      ev(3, { kind: 'chat', from: 'p_med', text: '三' }),
      ev(3, { kind: 'chat', from: 'p_med', text: '三' }),
    ], s);
    expect(s.conn).toBe('open');
    expect(s.chat.map((c) => c.text)).toEqual(['一', '二', '三']);
    expect(s.timeline.map((e) => e.seq)).toEqual([1, 2, 3]);
  });
});

describe('notes visibility display', () => {
  it('keeps each note with its scope and labels it in both languages', () => {
    const s = run([
      welcome({ participant: 'p_med', role: 'mediator', status: 'admitted', roster: [mediator] }),
      ev(4, { kind: 'note_added', author: 'p_med', scope: 'shared', text: '双方同意退货' }),
      ev(5, { kind: 'note_added', author: 'p_med', scope: 'staff', text: '商家态度积极' }, { to: 'staff' }),
      ev(6, { kind: 'note_added', author: 'p_med', scope: 'private', text: '下次核对发票' }, { to: 'participant', participant: 'p_med' }),
    ]);
    expect(s.notes.map((n) => n.scope)).toEqual(['shared', 'staff', 'private']);
    expect(s.notes.map((n) => noteLabel(STRINGS.zh, n.scope))).toEqual(['所有人可见', '仅调解员和法官', '仅自己']);
    expect(noteLabel(STRINGS.en, 'staff')).toBe('Mediators and judges only');
    // A shared note written in a caucus reached only the caucus: it does not say "everyone".
    expect(noteLabel(STRINGS.zh, 'shared', 'k1')).toBe('单独沟通');
    expect(noteLabel(STRINGS.en, 'shared', 'k1')).toBe('private talk');
    expect(noteLabel(STRINGS.zh, 'staff', 'k1')).toBe('仅调解员和法官');
  });
});

describe('terms', () => {
  it('tracks acceptances and the confirmation of the current terms', () => {
    const s = run([
      welcome({ status: 'admitted', roster: [mediator, { participant: 'p_me', role: 'consumer', name: '张三', status: 'admitted', online: true }, { participant: 'p_m', role: 'merchant', name: '某店', status: 'admitted', online: true }] }),
      ev(10, { kind: 'terms_proposed', terms: 't1', by: 'p_med', text: '退款500元', text_hash: 'h' }),
      ev(11, { kind: 'terms_accepted', terms: 't1', by: 'p_me', text_hash: 'h' }),
      ev(12, { kind: 'terms_accepted', terms: 't1', by: 'p_m', text_hash: 'h' }),
      ev(13, { kind: 'terms_confirmed', terms: 't1', by: 'p_j', text_hash: 'h' }),
    ]);
    const t = currentTerms(s)!;
    expect(Object.keys(t.accepted)).toEqual(['p_me', 'p_m']);
    expect(t.confirmedBy).toBe('p_j');
  });
});

describe('language', () => {
  it('is Chinese unless the browser asks for English, and a saved choice wins', () => {
    expect(initialLang(undefined, 'zh-CN')).toBe('zh');
    expect(initialLang(undefined, 'en-US')).toBe('en');
    expect(initialLang(undefined, 'fr')).toBe('zh');
    expect(initialLang({ getItem: () => 'en' }, 'zh-CN')).toBe('en');
    expect(STRINGS.zh.lobbyTitle).toContain('调解员将很快让您进入');
  });
});

describe('consent to online mediation', () => {
  const lobbyWelcome = welcome({ roster: [mediator, { participant: 'p_me', role: 'consumer', name: '张三', status: 'lobby', online: true }] });

  it('a party is asked until they agree; what they sent counts (the lobby event reaches only staff)', () => {
    let s = run([lobbyWelcome]);
    expect(mustAskConsent(s)).toBe(true);
    s = run([{ type: 'my_consent', kind: 'online_mediation', given: false }], s);
    expect(consentOf(s, 'p_me')).toBe(false);
    expect(mustAskConsent(s)).toBe(true);
    s = run([{ type: 'my_consent', kind: 'online_mediation', given: true }], s);
    expect(consentOf(s, 'p_me')).toBe(true);
    expect(mustAskConsent(s)).toBe(false);
    // Admitted later: the replay (without the staff-only consent event) does not undo it.
    s = run([welcome({ status: 'admitted', head_seq: 4 }), ev(4, { kind: 'admitted', participant: 'p_me', by: 'p_med' })], s);
    expect(mustAskConsent(s)).toBe(false);
    // Consent to recording is a different thing: it does not count as consent to online mediation.
    const rec = run([lobbyWelcome, { type: 'my_consent', kind: 'recording', given: true }]);
    expect(mustAskConsent(rec)).toBe(true);
  });

  it('staff are not asked', () => {
    const s = run([welcome({ participant: 'p_med', role: 'mediator', status: 'admitted', roster: [mediator] })]);
    expect(mustAskConsent(s)).toBe(false);
    expect(mustAskConsent(initialState)).toBe(false);
  });

  it('staff see who consented, and a later change of mind', () => {
    let s = run([
      welcome({ participant: 'p_med', role: 'mediator', name: '王调解员', status: 'admitted', roster: [mediator] }),
      ev(3, { kind: 'participant_joined', participant: 'p_c', role: 'consumer', name: '张三', joined_as: 'lobby' }, { to: 'staff' }),
      ev(4, { kind: 'consent_given', participant: 'p_c', consent: 'online_mediation', given: true }, { to: 'staff' }),
    ]);
    expect(consentOf(s, 'p_c')).toBe(true);
    expect(consentOf(s, 'p_m')).toBeUndefined();
    expect(consentOf(s, 'p_c', 'recording')).toBeUndefined();
    s = run([ev(5, { kind: 'consent_given', participant: 'p_c', consent: 'online_mediation', given: false })], s);
    expect(consentOf(s, 'p_c')).toBe(false);
    // A replayed (older) event changes nothing.
    s = run([ev(4, { kind: 'consent_given', participant: 'p_c', consent: 'online_mediation', given: true }, { to: 'staff' })], s);
    expect(consentOf(s, 'p_c')).toBe(false);
  });

  it('the tab remembers its answer per case and participant', () => {
    const mem = new Map<string, string>();
    const storage = { getItem: (k: string) => mem.get(k) ?? null, setItem: (k: string, v: string) => void mem.set(k, v) };
    const key = consentKey('c1', 'p_me');
    expect(rememberedConsent(storage, key)).toBeUndefined();
    rememberConsent(storage, key, true);
    expect(rememberedConsent(storage, key)).toBe(true);
    expect(rememberedConsent(storage, consentKey('c2', 'p_me'))).toBeUndefined();
    rememberConsent(storage, key, false);
    expect(rememberedConsent(storage, key)).toBe(false);
    // Storage that throws (private browsing): nothing remembered, no crash.
    const broken = { getItem: () => { throw new Error('denied'); }, setItem: () => { throw new Error('denied'); } };
    expect(() => rememberConsent(broken, key, true)).not.toThrow();
    expect(rememberedConsent(broken, key)).toBeUndefined();
  });
});

describe('removing a participant', () => {
  const roster = [
    mediator,
    { participant: 'p_j', role: 'judge' as const, name: '李法官', status: 'admitted' as const, online: true },
    { participant: 'p_c', role: 'consumer' as const, name: '张三', status: 'admitted' as const, online: true },
    { participant: 'p_m', role: 'merchant' as const, name: '某店', status: 'lobby' as const, online: true },
  ];

  it('staff may remove anyone in the room but themselves; the lobby is denied instead', () => {
    const s = run([welcome({ participant: 'p_med', role: 'mediator', name: '王调解员', status: 'admitted', roster })]);
    expect(removable(s).map((p) => p.participant)).toEqual(['p_j', 'p_c']);
    const judge = run([welcome({ participant: 'p_j', role: 'judge', name: '李法官', status: 'admitted', roster })]);
    expect(removable(judge).map((p) => p.participant)).toEqual(['p_med', 'p_c']);
  });

  it('parties may remove nobody', () => {
    const s = run([welcome({ participant: 'p_c', role: 'consumer', name: '张三', status: 'admitted', roster })]);
    expect(removable(s)).toEqual([]);
  });

  it('someone removed leaves the list at once', () => {
    const s = run([
      welcome({ participant: 'p_med', role: 'mediator', name: '王调解员', status: 'admitted', roster }),
      ev(9, { kind: 'removed', participant: 'p_c', by: 'p_med' }),
    ]);
    expect(removable(s).map((p) => p.participant)).toEqual(['p_j']);
    expect(s.people['p_c']).toMatchObject({ status: 'removed', online: false });
  });

  it('the removed person gets the "you were removed" page, with no retry', () => {
    const s = run([
      welcome({ status: 'admitted', roster }),
      { type: 'closed', code: 'removed', message: 'a mediator removed you' },
      { type: 'disconnected' },
    ]);
    expect(s.fatal).toBe('removed');
    expect(s.conn).toBe('closed');
    expect(fatalTitle(STRINGS.zh, 'removed')).toBe('您已被移出本次调解');
    expect(fatalText(STRINGS.en, 'removed')).toContain('asked you to leave');
    expect(fatalTitle(STRINGS.zh, 'token_expired')).toBe(STRINGS.zh.linkProblemTitle);
  });
});
