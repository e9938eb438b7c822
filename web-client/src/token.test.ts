import { describe, expect, it } from 'vitest';
import { forgetToken, takeToken } from './token';

/** A history that records what the page did to it. */
function fakeHistory() {
  const calls: { kind: 'push' | 'replace'; url: string }[] = [];
  const hist = {
    replaceState: (_d: unknown, _t: string, url?: string | URL | null) => calls.push({ kind: 'replace', url: String(url) }),
    pushState: (_d: unknown, _t: string, url?: string | URL | null) => calls.push({ kind: 'push', url: String(url) }),
  } as unknown as History;
  return { hist, calls };
}

function fakeStorage(fail = false) {
  const m = new Map<string, string>();
  const s = {
    getItem: (k: string) => {
      if (fail) throw new Error('SecurityError');
      return m.get(k) ?? null;
    },
    setItem: (k: string, v: string) => {
      if (fail) throw new Error('QuotaExceededError');
      m.set(k, v);
    },
    removeItem: (k: string) => {
      if (fail) throw new Error('SecurityError');
      m.delete(k);
    },
  } as unknown as Storage;
  return { s, m };
}

const at = (hash: string, pathname = '/join', search = '') => ({ hash, pathname, search }) as Location;

describe('takeToken', () => {
  it('reads the token from the fragment and replaces the history entry without it at once', () => {
    const { hist, calls } = fakeHistory();
    const { s, m } = fakeStorage();
    expect(takeToken(at('#token=eyJabc.def.ghi'), hist, s)).toBe('eyJabc.def.ghi');
    // Replaced, never pushed: the link with the token does not stay in the history.
    expect(calls).toEqual([{ kind: 'replace', url: '/join' }]);
    expect(calls.some((c) => c.url.includes('token') || c.url.includes('#'))).toBe(false);
    // Kept for a reload of this tab only.
    expect([...m.values()]).toEqual(['eyJabc.def.ghi']);
  });

  it('keeps the query string but drops the whole fragment', () => {
    const { hist, calls } = fakeHistory();
    expect(takeToken(at('#lang=en&token=t1', '/join', '?x=1'), hist, undefined)).toBe('t1');
    expect(calls).toEqual([{ kind: 'replace', url: '/join?x=1' }]);
  });

  it('after a reload (no fragment) the tab gets its token back from sessionStorage', () => {
    const { s } = fakeStorage();
    takeToken(at('#token=t2'), fakeHistory().hist, s);
    const { hist, calls } = fakeHistory();
    expect(takeToken(at(''), hist, s)).toBe('t2');
    expect(calls).toEqual([]);
  });

  it('no token anywhere: undefined (the page says to use the invite link)', () => {
    const { hist, calls } = fakeHistory();
    expect(takeToken(at(''), hist, fakeStorage().s)).toBeUndefined();
    expect(takeToken(at('#other=1'), hist, undefined)).toBeUndefined();
    expect(calls).toEqual([]);
  });

  it('an empty token in the link is no token, and still leaves the address bar', () => {
    const { hist, calls } = fakeHistory();
    expect(takeToken(at('#token='), hist, fakeStorage().s)).toBeUndefined();
    expect(calls).toEqual([{ kind: 'replace', url: '/join' }]);
  });

  it('storage that refuses (private mode): the token still works, from memory', () => {
    const { hist, calls } = fakeHistory();
    const { s } = fakeStorage(true);
    expect(takeToken(at('#token=t3'), hist, s)).toBe('t3');
    expect(calls).toEqual([{ kind: 'replace', url: '/join' }]);
    expect(takeToken(at(''), hist, s)).toBeUndefined();
  });

  it('forgetToken removes what a reload would have used', () => {
    const { s, m } = fakeStorage();
    takeToken(at('#token=t4'), fakeHistory().hist, s);
    forgetToken(s);
    expect(m.size).toBe(0);
    expect(takeToken(at(''), fakeHistory().hist, s)).toBeUndefined();
    expect(() => forgetToken(fakeStorage(true).s)).not.toThrow();
  });
});
