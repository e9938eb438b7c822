/**
 * The signaling websocket: connects to `/ws` on the page's own origin, joins with the invite
 * token, and reconnects by itself with `resume_from` = the last event seq seen, so the room
 * continues where it left off. Everything it receives goes to the reducer (`state.ts`).
 */
import type { ClientMessage, Request, ServerMessage } from './protocol';
import { FATAL_CODES } from './protocol';
import type { Action } from './state';

export function wsUrl(loc: Location): string {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws`;
}

/** Backoff between reconnect attempts, in ms: quick at first, then at most every 10 s. */
export function backoff(attempt: number): number {
  return Math.min(10_000, 500 * 2 ** Math.min(attempt, 5));
}

const PING_EVERY_MS = 15_000;
/** No message for this long: the connection is presumed dead and is replaced. */
const SILENCE_MS = 40_000;

export class Connection {
  private ws?: WebSocket;
  private nextId = 1;
  private attempt = 0;
  private stopped = false;
  private timer?: ReturnType<typeof setTimeout>;
  private pinger?: ReturnType<typeof setInterval>;
  private lastHeard = 0;
  /** Pings of `ping()` waiting for their pong, by request id. */
  private pongs = new Map<string, () => void>();

  constructor(
    private readonly url: string,
    private readonly token: string,
    private readonly lastSeq: () => number,
    private readonly dispatch: (a: Action) => void,
  ) {}

  start(): void {
    this.stopped = false;
    this.open();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    this.ws?.close(1000);
  }

  /**
   * Closes the websocket and opens a new one at once (resuming from the last event): the
   * server then drops our media peer, and the new welcome starts a fresh one (media-recovery.ts).
   */
  reconnect(): void {
    if (this.stopped || !this.ws) return;
    this.attempt = 0;
    this.ws.close(1000);
  }

  /** Sends a request; returns its id (or undefined when not connected). */
  send(req: Request): string | undefined {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return undefined;
    const id = `r${this.nextId++}`;
    const msg: ClientMessage = { ...req, id };
    this.ws.send(JSON.stringify(msg));
    return id;
  }

  /**
   * One round trip over the websocket, in ms: a `ping` and its `pong`. Undefined when not
   * connected; `timeoutMs` when no pong came by then (a lower bound: the link is that slow).
   */
  ping(timeoutMs = 5_000): Promise<number | undefined> {
    const t0 = performance.now();
    const id = this.send({ type: 'ping' });
    if (id === undefined) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pongs.delete(id);
        resolve(timeoutMs);
      }, timeoutMs);
      this.pongs.set(id, () => {
        clearTimeout(timer);
        resolve(performance.now() - t0);
      });
    });
  }

  private open(): void {
    this.dispatch({ type: 'connecting' });
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.lastHeard = Date.now();
      this.dispatch({ type: 'open' });
      const resume = this.lastSeq();
      const join: ClientMessage = { type: 'join', id: `join${this.nextId++}`, token: this.token };
      if (resume > 0) join.resume_from = resume;
      ws.send(JSON.stringify(join));
      clearInterval(this.pinger);
      this.pinger = setInterval(() => {
        if (Date.now() - this.lastHeard > SILENCE_MS) {
          ws.close();
          return;
        }
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'ping' }));
      }, PING_EVERY_MS);
    };
    ws.onmessage = (ev: MessageEvent) => {
      this.lastHeard = Date.now();
      let msg: ServerMessage;
      try {
        msg = JSON.parse(String(ev.data)) as ServerMessage;
      } catch {
        return;
      }
      if (msg.type === 'welcome') this.attempt = 0;
      if (msg.type === 'pong' && msg.id !== undefined) {
        const done = this.pongs.get(msg.id);
        this.pongs.delete(msg.id);
        done?.();
      }
      if ((msg.type === 'error' || msg.type === 'closed') && FATAL_CODES.has(msg.code)) {
        // This link cannot be used any more: do not retry.
        this.stopped = true;
      }
      this.dispatch({ type: 'server', msg });
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      clearInterval(this.pinger);
      this.dispatch({ type: 'disconnected' });
      if (this.stopped) return;
      const delay = backoff(this.attempt++);
      this.timer = setTimeout(() => this.open(), delay);
    };
    ws.onerror = () => {
      // onclose follows and schedules the retry.
    };
  }
}
