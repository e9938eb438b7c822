import { describe, expect, it } from 'vitest';
// The server's event kinds, as generated from the Rust definitions (signaling/src/event.rs).
import generated from './generated/protocol.ts?raw';
import type { EventBody } from './protocol';
import { STRINGS, eventLabel, excerpt, type EventKind, type Lang } from './i18n';

/** Every `"kind": "…"` of the generated `EventBody` union: what the server can send. */
function serverKinds(): string[] {
  const start = generated.indexOf('export type EventBody =');
  if (start < 0) throw new Error('generated/protocol.ts has no EventBody');
  const end = generated.indexOf('export type', start + 1);
  const union = generated.slice(start, end < 0 ? undefined : end);
  return [...new Set([...union.matchAll(/"kind": "([a-z_]+)"/g)].map((m) => m[1]!))];
}

const names: Record<string, string> = { p_c: '张三', p_m: '某某电器店', p_med: '王调解员', p_j: '李法官' };
const who = (id: string | undefined) => (id ? names[id] ?? '?' : '?');

/** One sample event per kind; the test checks this covers the server's kinds too. */
const samples: { [K in EventKind]: Extract<EventBody, { kind: K }> } = {
  case_created: { kind: 'case_created', case: 'c1', title: '网购退款纠纷', participants: [{ participant: 'p_c', role: 'consumer', name: '张三' }] },
  invite_issued: { kind: 'invite_issued', jti: 'j1', participant: 'p_c', role: 'consumer', name: '张三', expires_at: 1 },
  invite_revoked: { kind: 'invite_revoked', jti: 'j1' },
  participant_joined: { kind: 'participant_joined', participant: 'p_c', role: 'consumer', name: '张三', joined_as: 'lobby' },
  admitted: { kind: 'admitted', participant: 'p_c', by: 'p_med' },
  denied: { kind: 'denied', participant: 'p_m', by: 'p_med', reason: '身份不符' },
  left: { kind: 'left', participant: 'p_m' },
  removed: { kind: 'removed', participant: 'p_m', by: 'p_med' },
  chat: { kind: 'chat', from: 'p_c', text: '我要求全额退款' },
  caucus_started: { kind: 'caucus_started', caucus: 'k1', by: 'p_med', members: ['p_med', 'p_c'] },
  caucus_ended: { kind: 'caucus_ended', caucus: 'k1', by: 'p_med' },
  note_added: { kind: 'note_added', author: 'p_med', scope: 'staff', text: '…' },
  terms_proposed: { kind: 'terms_proposed', terms: 't1', by: 'p_med', text: '退款', text_hash: 'h' },
  terms_accepted: { kind: 'terms_accepted', terms: 't1', by: 'p_c', text_hash: 'h' },
  terms_rejected: { kind: 'terms_rejected', terms: 't1', by: 'p_m' },
  terms_confirmed: { kind: 'terms_confirmed', terms: 't1', by: 'p_j', text_hash: 'h' },
  outcome_recorded: { kind: 'outcome_recorded', outcome: 'settled', by: 'p_med' },
  consent_given: { kind: 'consent_given', participant: 'p_c', consent: 'online_mediation', given: true },
  doc_permission: { kind: 'doc_permission', doc: 'agreement', participant: 'p_c', write: true, by: 'p_med' },
};

/** The participant ids an event names (who acted, who it concerns). */
function named(e: EventBody): string[] {
  const ids: string[] = [];
  for (const key of ['participant', 'by', 'from', 'author'] as const) {
    const v = (e as Record<string, unknown>)[key];
    if (typeof v === 'string') ids.push(v);
  }
  return ids;
}

describe('timeline labels', () => {
  const kinds = serverKinds();

  it('finds the event kinds in the generated types', () => {
    expect(kinds.length).toBeGreaterThanOrEqual(19);
    expect(kinds).toContain('terms_proposed');
  });

  for (const lang of ['zh', 'en'] as Lang[]) {
    it(`every event kind the server has gets a plain ${lang} label`, () => {
      const missing = kinds.filter((k) => typeof (STRINGS[lang].events as Record<string, unknown>)[k] !== 'function');
      expect(missing, `no ${lang} timeline label for these event kinds`).toEqual([]);
      const untested = kinds.filter((k) => !(k in samples));
      expect(untested, 'no sample event for these kinds in i18n.test.ts').toEqual([]);
      for (const k of kinds) {
        const e = samples[k as EventKind];
        const label = eventLabel(STRINGS[lang], e, who);
        // Never the raw kind (`terms_proposed`) or any other snake_case identifier.
        expect(label, k).not.toBe(k);
        expect(label, k).not.toMatch(/[a-z]+_[a-z]+/);
        expect(label.length, k).toBeGreaterThan(3);
        // Who did it and whom it concerns are named.
        for (const id of named(e)) expect(label, `${lang} ${k} names ${id}`).toContain(names[id]);
      }
    });
  }

  it('says what happened, with the detail', () => {
    const zh = STRINGS.zh;
    const en = STRINGS.en;
    expect(eventLabel(zh, samples.terms_proposed, who)).toBe('王调解员提出调解方案');
    expect(eventLabel(en, samples.terms_proposed, who)).toBe('王调解员 proposed terms');
    expect(eventLabel(zh, samples.consent_given, who)).toBe('张三同意在线调解');
    expect(eventLabel(en, { ...samples.consent_given, given: false }, who)).toBe('张三 did not agree to online mediation');
    expect(eventLabel(zh, samples.outcome_recorded, who)).toBe('王调解员记录调解结果：调解成功');
    expect(eventLabel(zh, samples.denied, who)).toBe('王调解员拒绝某某电器店进入（原因：身份不符）');
    expect(eventLabel(en, samples.caucus_started, who)).toBe('王调解员 started a private talk with 王调解员, 张三');
    // Outside a caucus the members are not known: no names, still plain words.
    expect(eventLabel(zh, { kind: 'caucus_started', caucus: 'k1' }, who)).toBe('调解员开始与另一方单独沟通');
    expect(eventLabel(zh, { ...samples.participant_joined, joined_as: 'admitted' }, who)).toBe('张三（消费者）进入调解');
  });

  it('cuts long chat lines in the timeline', () => {
    expect(excerpt('a'.repeat(50), 40)).toBe(`${'a'.repeat(40)}…`);
    expect(excerpt('  短  消息 ')).toBe('短 消息');
  });
});
