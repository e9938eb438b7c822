import { describe, expect, it } from 'vitest';
import { SharedAudio, unlockOnGesture, type AudioContextLike } from './audio';

/** A context that, like a browser's, starts suspended and runs once resumed. */
class FakeContext implements AudioContextLike {
  state = 'suspended';
  resumes = 0;
  resume(): Promise<void> {
    this.resumes++;
    this.state = 'running';
    return Promise.resolve();
  }
}

class FakeTarget {
  listeners = new Map<string, Set<() => void>>();
  addEventListener(type: string, fn: () => void) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type)!.add(fn);
  }
  removeEventListener(type: string, fn: () => void) {
    this.listeners.get(type)?.delete(fn);
  }
  fire(type: string) {
    for (const fn of [...(this.listeners.get(type) ?? [])]) fn();
  }
  count() {
    return [...this.listeners.values()].reduce((n, s) => n + s.size, 0);
  }
}

describe('shared audio context', () => {
  it('the click on enter creates and resumes it, so the session needs no further touch', () => {
    let made = 0;
    const audio = new SharedAudio(() => {
      made++;
      return new FakeContext();
    });
    expect(audio.running()).toBe(false);
    const ctx = audio.unlock();
    expect(made).toBe(1);
    expect(ctx?.resumes).toBe(1);
    expect(audio.running()).toBe(true);
    // The session's speaking indicators use the same, running context.
    expect(audio.get()).toBe(ctx);
    expect(made).toBe(1);
    audio.unlock();
    expect(ctx?.resumes).toBe(1);
  });

  it('the device check meter runs after the first touch anywhere, once', () => {
    const audio = new SharedAudio(() => new FakeContext());
    const ctx = audio.get()!;
    const target = new FakeTarget();
    unlockOnGesture(target, audio);
    expect(ctx.state).toBe('suspended');
    target.fire('pointerdown');
    expect(ctx.state).toBe('running');
    expect(target.count()).toBe(0);
    // A key press works as well (keyboard users), and the remover takes the listeners away.
    const audio2 = new SharedAudio(() => new FakeContext());
    const t2 = new FakeTarget();
    unlockOnGesture(t2, audio2);
    t2.fire('keydown');
    expect(audio2.running()).toBe(true);
    const t3 = new FakeTarget();
    const remove = unlockOnGesture(t3, new SharedAudio(() => new FakeContext()));
    remove();
    expect(t3.count()).toBe(0);
  });

  it('no Web Audio (or a constructor that throws): no context, no crash, not retried', () => {
    let tries = 0;
    const audio = new SharedAudio<FakeContext>(() => {
      tries++;
      throw new Error('not allowed');
    });
    expect(audio.unlock()).toBeUndefined();
    expect(audio.get()).toBeUndefined();
    expect(tries).toBe(1);
    expect(new SharedAudio<FakeContext>(() => undefined).unlock()).toBeUndefined();
  });
});
