import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Connection } from './connection';
import type { Action } from './state';

/** A stand-in for the browser's WebSocket: records what is sent, lets the test answer. */
class FakeSocket {
  static OPEN = 1;
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  closedWith?: number;
  onopen?: () => void;
  onmessage?: (ev: { data: string }) => void;
  onclose?: () => void;
  onerror?: () => void;
  constructor(public url: string) {
    FakeSocket.all.push(this);
  }
  send(data: string) {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }
  close(code?: number) {
    this.closedWith = code;
    this.readyState = 3;
    this.onclose?.();
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  receive(msg: unknown) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
}

describe('connection: ping round trip and reconnect', () => {
  beforeEach(() => {
    FakeSocket.all = [];
    vi.useFakeTimers();
    vi.stubGlobal('WebSocket', FakeSocket);
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  function connected(lastSeq = 0): { c: Connection; ws: FakeSocket; actions: Action[] } {
    const actions: Action[] = [];
    const c = new Connection('ws://x/ws', 'tok', () => lastSeq, (a) => actions.push(a));
    c.start();
    const ws = FakeSocket.all[0]!;
    ws.open();
    return { c, ws, actions };
  }

  it('a ping resolves with the time to its own pong', async () => {
    const { c, ws } = connected();
    const rtt = c.ping();
    const ping = ws.sent.find((m) => m.type === 'ping')!;
    expect(ping.id).toBeTypeOf('string');
    vi.advanceTimersByTime(120);
    // Another pong (another id) does not count.
    ws.receive({ type: 'pong', id: 'other' });
    vi.advanceTimersByTime(30);
    ws.receive({ type: 'pong', id: ping.id });
    expect(await rtt).toBeGreaterThanOrEqual(150);
    expect(await rtt).toBeLessThan(1_000);
  });

  it('no pong in time: the timeout, a lower bound of a very slow link', async () => {
    const { c } = connected();
    const rtt = c.ping(2_000);
    vi.advanceTimersByTime(2_000);
    expect(await rtt).toBe(2_000);
  });

  it('not connected: no figure', async () => {
    const c = new Connection('ws://x/ws', 'tok', () => 0, () => undefined);
    c.start();
    expect(await c.ping()).toBeUndefined();
  });

  it('reconnect closes the websocket and joins again on a new one, resuming', () => {
    const { c, ws, actions } = connected(42);
    ws.receive({ type: 'welcome', protocol: 1, case: 'c', title: 't', participant: 'p', role: 'consumer', name: 'n', status: 'admitted', head_seq: 42, roster: [], caucuses: [] });
    c.reconnect();
    expect(ws.closedWith).toBe(1000);
    expect(actions.some((a) => a.type === 'disconnected')).toBe(true);
    vi.advanceTimersByTime(600);
    const again = FakeSocket.all[1];
    expect(again).toBeDefined();
    again!.open();
    expect(again!.sent[0]).toMatchObject({ type: 'join', token: 'tok', resume_from: 42 });
  });

  it('after stop, reconnect does nothing', () => {
    const { c } = connected();
    c.stop();
    c.reconnect();
    vi.advanceTimersByTime(20_000);
    expect(FakeSocket.all.length).toBe(1);
  });
});
