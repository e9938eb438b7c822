import { describe, expect, it } from 'vitest';
import { weakConnection } from './precheck';

describe('weakConnection', () => {
  it('warns on 2G-class or very slow links only', () => {
    expect(weakConnection(undefined)).toBe(false);
    expect(weakConnection({ effectiveType: '4g', downlink: 10 })).toBe(false);
    expect(weakConnection({ effectiveType: '2g' })).toBe(true);
    expect(weakConnection({ effectiveType: 'slow-2g' })).toBe(true);
    expect(weakConnection({ effectiveType: '3g', downlink: 0.3 })).toBe(true);
    expect(weakConnection({ downlink: 0 })).toBe(false);
  });
});
