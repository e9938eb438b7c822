/**
 * Consent to online mediation (Online Mediation Rules of the People's Courts, Art 4): a party
 * is asked in plain words before entering, and says yes or no with `consent`
 * (`online_mediation`). Given from the lobby, the `consent_given` event reaches only staff, so
 * the party's own tab remembers what it sent (sessionStorage, per case and participant), and a
 * reload does not ask again.
 *
 * Recording: the server records no audio or video, so nobody is asked to consent to a
 * recording; the page says so, and says what *is* kept (chat, notes, terms, signatures).
 */
export function consentKey(caseId: string, participant: string): string {
  return `yuntiao.consent.${caseId}.${participant}`;
}

/** The consent this tab sent earlier, if any. */
export function rememberedConsent(storage: Pick<Storage, 'getItem'> | undefined, key: string): boolean | undefined {
  let v: string | null | undefined;
  try {
    v = storage?.getItem(key);
  } catch {
    return undefined;
  }
  return v === '1' ? true : v === '0' ? false : undefined;
}

export function rememberConsent(storage: Pick<Storage, 'setItem'> | undefined, key: string, given: boolean): void {
  try {
    storage?.setItem(key, given ? '1' : '0');
  } catch {
    // Not remembered: a reload asks again (and the answer is recorded again).
  }
}
