/** How a note's visibility is shown to the reader, in the reader's language. */
import type { T } from './i18n';
import type { NoteScope } from './protocol';

export function noteLabel(t: T, scope: NoteScope): string {
  return t.scopes[scope];
}
