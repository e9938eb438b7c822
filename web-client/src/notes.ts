/** How a note's visibility is shown to the reader, in the reader's language. */
import type { T } from './i18n';
import type { NoteScope } from './protocol';

/**
 * The note's visibility as a tag. A shared note written inside a caucus reaches only the caucus
 * (what is said there stays there): it is tagged as the caucus's, not as "visible to everyone".
 */
export function noteLabel(t: T, scope: NoteScope, caucus?: string): string {
  return caucus !== undefined && scope === 'shared' ? t.caucusTag : t.scopes[scope];
}
