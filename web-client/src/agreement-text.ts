/**
 * Pure helpers of the agreement editor: who may edit, how a textarea edit becomes a Yjs change,
 * and where the caret goes when someone else edits. Offsets are UTF-16 code units, which is what
 * both JavaScript strings and Yjs text use.
 */
import type { State } from './state';

/** One contiguous change: remove `remove` units at `index`, then insert `insert` there. */
export interface TextChange {
  index: number;
  remove: number;
  insert: string;
}

/**
 * The single change that turns `before` into `after` (common prefix and suffix kept). A textarea
 * `input` event changes one contiguous range (typing, deleting, pasting over a selection), so
 * this is exact for it. Never splits a surrogate pair: an emoji is inserted or removed whole.
 */
export function textChange(before: string, after: string): TextChange | undefined {
  if (before === after) return undefined;
  let start = 0;
  const max = Math.min(before.length, after.length);
  while (start < max && before.charCodeAt(start) === after.charCodeAt(start)) start++;
  let endB = before.length;
  let endA = after.length;
  while (endB > start && endA > start && before.charCodeAt(endB - 1) === after.charCodeAt(endA - 1)) {
    endB--;
    endA--;
  }
  // Keep surrogate pairs whole: do not start after a high surrogate or end before a low one.
  const high = (c: number) => c >= 0xd800 && c <= 0xdbff;
  const low = (c: number) => c >= 0xdc00 && c <= 0xdfff;
  if (start > 0 && high(before.charCodeAt(start - 1))) start--;
  if (endB < before.length && low(before.charCodeAt(endB))) {
    endB++;
    endA++;
  }
  return { index: start, remove: endB - start, insert: after.slice(start, endA) };
}

/** A Yjs text delta: retain / insert / delete ops. */
export type Delta = Array<{ retain?: number; insert?: unknown; delete?: number }>;

/** Where position `pos` moves when someone else applies `delta` (an insert exactly at `pos`
 * leaves it in front of the inserted text). */
export function mapPosition(pos: number, delta: Delta): number {
  let old = 0; // position in the text before the change
  let moved = pos;
  for (const op of delta) {
    if (old >= pos) break;
    if (op.retain !== undefined) {
      old += op.retain;
    } else if (op.insert !== undefined) {
      moved += typeof op.insert === 'string' ? op.insert.length : 1;
    } else if (op.delete !== undefined) {
      moved -= Math.min(op.delete, pos - old);
      old += op.delete;
    }
  }
  return Math.max(0, moved);
}

/** Whether I may type into the agreement: mediators always, others when a mediator allowed it. */
export function canEditAgreement(s: State): boolean {
  const me = s.me;
  if (!me || me.status !== 'admitted') return false;
  if (me.role === 'mediator') return true;
  let write = false;
  for (const e of s.timeline) {
    if (e.kind === 'doc_permission' && e.doc === 'agreement' && e.participant === me.participant) {
      write = e.write;
    }
  }
  return write;
}

/** Whether the mediator allowed `participant` to edit the agreement (as far as I can see). */
export function grantedEdit(s: State, participant: string): boolean {
  let write = false;
  for (const e of s.timeline) {
    if (e.kind === 'doc_permission' && e.doc === 'agreement' && e.participant === participant) {
      write = e.write;
    }
  }
  return write;
}
