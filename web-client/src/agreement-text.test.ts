import { describe, expect, it } from 'vitest';
import { canEditAgreement, mapPosition, textChange } from './agreement-text';
import { initialState, type State } from './state';
import type { Event } from './protocol';

function apply(before: string, c: ReturnType<typeof textChange>): string {
  if (!c) return before;
  return before.slice(0, c.index) + c.insert + before.slice(c.index + c.remove);
}

describe('textChange', () => {
  it('finds typing, deleting and pasting over a selection', () => {
    expect(textChange('协议', '协议一')).toEqual({ index: 2, remove: 0, insert: '一' });
    expect(textChange('协议一', '协一')).toEqual({ index: 1, remove: 1, insert: '' });
    expect(textChange('退款100元', '退款1299元')).toEqual({ index: 3, remove: 2, insert: '299' });
    expect(textChange('same', 'same')).toBeUndefined();
    const pairs: Array<[string, string]> = [['abc', 'xabcx'], ['aaaa', 'aa'], ['', '全文'], ['全文', '']];
    for (const [a, b] of pairs) {
      expect(apply(a, textChange(a, b))).toBe(b);
    }
  });
  it('never splits an emoji (a surrogate pair)', () => {
    // Replacing one emoji by another that shares its high surrogate.
    const c = textChange('a😀b', 'a😁b')!;
    expect(c).toEqual({ index: 1, remove: 2, insert: '😁' });
    expect(apply('a😀b', c)).toBe('a😁b');
    const d = textChange('😀😀', '😀')!;
    expect(apply('😀😀', d)).toBe('😀');
    expect(d.remove).toBe(2);
  });
});

describe('mapPosition', () => {
  it('moves the caret with remote inserts and deletes before it', () => {
    expect(mapPosition(5, [{ insert: 'ab' }])).toBe(7);
    expect(mapPosition(5, [{ retain: 5 }, { insert: 'ab' }])).toBe(5);
    expect(mapPosition(5, [{ retain: 6 }, { insert: 'ab' }])).toBe(5);
    expect(mapPosition(5, [{ retain: 1 }, { delete: 2 }])).toBe(3);
    expect(mapPosition(5, [{ retain: 3 }, { delete: 10 }])).toBe(3);
    expect(mapPosition(0, [{ delete: 3 }])).toBe(0);
  });
});

describe('canEditAgreement', () => {
  const ev = (e: Partial<Event>): Event => ({ seq: 1, ts: 0, visibility: { to: 'everyone' }, prev_hash: '', hash: '', ...e }) as Event;
  const base = (role: 'mediator' | 'consumer' | 'judge'): State => ({
    ...initialState,
    me: { participant: 'p1', role, name: 'x', status: 'admitted' },
  });
  it('lets mediators edit and others only when granted, until withdrawn', () => {
    expect(canEditAgreement(base('mediator'))).toBe(true);
    expect(canEditAgreement(base('judge'))).toBe(false);
    const granted = { ...base('consumer'), timeline: [ev({ kind: 'doc_permission', doc: 'agreement', participant: 'p1', write: true, by: 'm' } as Partial<Event>)] };
    expect(canEditAgreement(granted)).toBe(true);
    const withdrawn = {
      ...granted,
      timeline: [...granted.timeline, ev({ kind: 'doc_permission', doc: 'agreement', participant: 'p1', write: false, by: 'm' } as Partial<Event>)],
    };
    expect(canEditAgreement(withdrawn)).toBe(false);
    const other = { ...base('consumer'), timeline: [ev({ kind: 'doc_permission', doc: 'agreement', participant: 'p2', write: true, by: 'm' } as Partial<Event>)] };
    expect(canEditAgreement(other)).toBe(false);
  });
});
