/**
 * The invite token: read from the link's fragment (`/join#token=<JWT>`) and removed from the
 * address bar and the history at once, so it is not left in the history, bookmarks or a
 * screenshot of the address bar.
 *
 * Where it is kept: in memory, and in sessionStorage so that a reload of the same tab (common
 * in WeChat's browser) can reconnect. sessionStorage is per tab and is cleared when the tab
 * closes; it is never localStorage and never sent anywhere but the `join` message. The token
 * is never logged, not even to the browser console.
 */

const SESSION_KEY = 'yuntiao.invite';

export function takeToken(loc: Location, hist: History, session: Storage | undefined): string | undefined {
  const params = new URLSearchParams(loc.hash.replace(/^#/, ''));
  const fromLink = params.get('token');
  if (fromLink !== null) {
    // Replace the entry (not push): the fragment never stays in the history.
    hist.replaceState(null, '', loc.pathname + loc.search);
    try {
      session?.setItem(SESSION_KEY, fromLink);
    } catch {
      // Storage refused (private mode): the token lives in memory only.
    }
    return fromLink || undefined;
  }
  try {
    return session?.getItem(SESSION_KEY) ?? undefined;
  } catch {
    return undefined;
  }
}

/** Forgets the token (after the link turned out to be unusable). */
export function forgetToken(session: Storage | undefined): void {
  try {
    session?.removeItem(SESSION_KEY);
  } catch {
    // nothing to forget
  }
}
