/**
 * The views: the join/lobby/session pages, all driven by the reducer's state. Every control is
 * a native button, input, select or checkbox with a visible <label> or an aria-label, so it is
 * reachable by keyboard and named for screen readers.
 */
import { useEffect, useMemo, useReducer, useRef, useState } from 'preact/hooks';
import type { ComponentChildren } from 'preact';
import { Connection, wsUrl } from './connection';
import { MediaSession } from './media';
import { DeviceCheck } from './precheck';
import { MediaArea, MediaContext } from './tiles';
import { STRINGS, eventLabel, fatalText, fatalTitle, initialLang, saveLang, type Lang, type T } from './i18n';
import type { NoteScope, Outcome, Request } from './protocol';
import {
  amStaff,
  answerers,
  consentOf,
  currentTerms,
  inRoom,
  initialState,
  lobby,
  mustAskConsent,
  myCaucus,
  outsideCaucus,
  parties,
  people,
  reduce,
  removable,
  type Person,
  type State,
} from './state';
import { forgetToken } from './token';
import { consentKey, rememberConsent, rememberedConsent } from './consent';
import { fetchProbe, runProbe } from './probe';
import { noteLabel } from './notes';
import { AgreementPanel } from './agreement';

type Send = (r: Request) => void;

function storage(kind: 'local' | 'session'): Storage | undefined {
  try {
    return kind === 'local' ? window.localStorage : window.sessionStorage;
  } catch {
    return undefined;
  }
}

export function App({ token }: { token?: string }) {
  const [lang, setLang] = useState<Lang>(() => initialLang(storage('local'), navigator.language));
  const [large, setLarge] = useState<boolean>(() => storage('local')?.getItem('yuntiao.large') === '1');
  const [state, dispatch] = useReducer(reduce, initialState);
  const stateRef = useRef(state);
  stateRef.current = state;
  const conn = useRef<Connection>();
  // Media: one peer connection with the server, fed by the signaling connection (media.ts).
  const media = useMemo(
    () =>
      new MediaSession(
        (r) => conn.current?.send(r),
        () => conn.current?.reconnect(),
      ),
    [],
  );
  useEffect(() => () => media.close(), [media]);
  // Whether the person has checked camera, microphone and connection (precheck.tsx).
  const [entered, setEntered] = useState(false);
  // A party who said no to online mediation sees what that means (and may change their mind).
  const [refused, setRefused] = useState(false);
  // A consent that could not be sent yet (no connection): sent with the next welcome.
  const pendingConsent = useRef<boolean>();
  const t = STRINGS[lang];

  useEffect(() => {
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    saveLang(storage('local'), lang);
  }, [lang]);
  useEffect(() => {
    document.documentElement.classList.toggle('large', large);
    try {
      storage('local')?.setItem('yuntiao.large', large ? '1' : '0');
    } catch {
      // not remembered
    }
  }, [large]);
  useEffect(() => {
    if (!token) return;
    const c = new Connection(wsUrl(location), token, () => stateRef.current.lastSeq, (a) => {
      media.onAction(a);
      dispatch(a);
      if (a.type === 'server' && a.msg.type === 'welcome') {
        // What this tab told the server before (a reload): not asked again.
        const remembered = rememberedConsent(storage('session'), consentKey(a.msg.case, a.msg.participant));
        if (remembered !== undefined) dispatch({ type: 'my_consent', kind: 'online_mediation', given: remembered });
        const pending = pendingConsent.current;
        if (pending !== undefined && c.send({ type: 'consent', kind: 'online_mediation', given: pending }) !== undefined)
          pendingConsent.current = undefined;
      }
    });
    conn.current = c;
    c.start();
    return () => c.stop();
  }, [token]);
  useEffect(() => {
    if (state.fatal) forgetToken(storage('session'));
  }, [state.fatal]);
  useEffect(() => {
    document.title = state.title ? `${state.title} · ${t.appName}` : t.appName;
  }, [state.title, t]);

  const send: Send = (r) => {
    conn.current?.send(r);
  };

  /** Records the party's answer: on the server (`consent`), in the state, and in this tab. */
  const answerConsent = (given: boolean) => {
    const s = stateRef.current;
    if (!s.me || !s.caseId) return;
    rememberConsent(storage('session'), consentKey(s.caseId, s.me.participant), given);
    dispatch({ type: 'my_consent', kind: 'online_mediation', given });
    if (conn.current?.send({ type: 'consent', kind: 'online_mediation', given }) === undefined) pendingConsent.current = given;
  };

  let body: ComponentChildren;
  if (!token) body = <Notice title={t.appName} text={t.noToken} />;
  else if (state.fatal)
    body = (
      <Notice
        title={fatalTitle(t, state.fatal)}
        text={fatalText(t, state.fatal)}
        contact={state.fatal === 'removed' || state.fatal === 'denied' ? t.contactAfterDecision : t.contact}
        testid={state.fatal === 'removed' ? 'removed' : 'link-problem'}
      />
    );
  else if (!state.me) body = <p class="card" aria-busy="true">{t.conn[state.conn]}</p>;
  else if (!entered && refused)
    body = (
      <section class="card notice" data-testid="consent-refused" aria-labelledby="h-refused">
        <h2 id="h-refused">{t.refusedTitle}</h2>
        <p>{t.refusedText}</p>
        <p>{t.contact}</p>
        <button type="button" onClick={() => setRefused(false)}>
          {t.refusedBack}
        </button>
      </section>
    );
  else if (!entered)
    body = (
      <DeviceCheck
        lang={lang}
        title={state.title}
        askConsent={mustAskConsent(state)}
        onEnter={(stream, audioOnly, consented) => {
          if (consented) answerConsent(true);
          media.ready(stream, audioOnly);
          setEntered(true);
        }}
        onRefuse={() => {
          answerConsent(false);
          setRefused(true);
        }}
        measure={() => runProbe({ ping: () => conn.current?.ping() ?? Promise.resolve(undefined), download: fetchProbe })}
      />
    );
  else if (state.me.status === 'lobby') body = <Lobby t={t} s={state} />;
  else body = <Session t={t} s={state} send={send} lang={lang} token={token} />;

  return (
    <div class="app">
      <header class="top">
        <h1 class="brand">{t.appName}</h1>
        {token && !state.fatal && (
          <span class={`conn conn-${state.conn}`} role="status" aria-label={t.connLabel} data-testid="conn">
            {t.conn[state.conn]}
          </span>
        )}
        <div class="tools">
          <label class="toggle">
            <input type="checkbox" checked={large} onChange={(e) => setLarge(e.currentTarget.checked)} aria-label={t.largeTextLabel} />
            {t.largeText}
          </label>
          <button type="button" lang={lang === 'zh' ? 'en' : 'zh-CN'} aria-label={t.switchLangLabel} onClick={() => setLang(lang === 'zh' ? 'en' : 'zh')}>
            {t.switchLang}
          </button>
        </div>
      </header>
      {state.lastError && (
        <div class="error" role="alert">
          {t.errorPrefix}
          {state.lastError.message}
          <button type="button" aria-label={t.dismiss} onClick={() => dispatch({ type: 'dismiss_error' })}>
            ×
          </button>
        </div>
      )}
      <main>
        <MediaContext.Provider value={media}>{body}</MediaContext.Provider>
      </main>
    </div>
  );
}

function Notice({ title, text, contact, testid }: { title: string; text: string; contact?: string; testid?: string }) {
  return (
    <section class="card notice" data-testid={testid}>
      <h2>{title}</h2>
      <p>{text}</p>
      {contact && <p>{contact}</p>}
    </section>
  );
}

function roleName(t: T, p: Person | undefined): string {
  return p?.role ? t.roles[p.role] : '';
}

function nameOf(t: T, s: State, id: string): string {
  const p = s.people[id];
  const name = p?.name ?? t.unknownPerson;
  return id === s.me?.participant ? name + t.you : name;
}

function Lobby({ t, s }: { t: T; s: State }) {
  return (
    <section class="card lobby" data-testid="lobby" aria-live="polite">
      <h2>{t.lobbyTitle}</h2>
      <p>
        {t.caseLabel}{t.colon}<strong data-testid="case-title">{s.title}</strong>
      </p>
      <p>{t.lobbyHint}</p>
      <h3>{t.whoWillBeThere}</h3>
      <ul>
        {people(s).map((p) => (
          <li key={p.participant}>
            {nameOf(t, s, p.participant)} · {roleName(t, p)}
          </li>
        ))}
      </ul>
    </section>
  );
}

function Session({ t, s, send, lang, token }: { t: T; s: State; send: Send; lang: Lang; token: string }) {
  const staff = amStaff(s);
  const mine = myCaucus(s);
  return (
    <div class="session">
      <p class="case-title">
        {t.caseLabel}{t.colon}<strong data-testid="case-title">{s.title}</strong>
      </p>
      {outsideCaucus(s) && (
        <div class="banner" role="status" data-testid="caucus-banner">
          {t.caucusBanner}
        </div>
      )}
      {mine && (
        <div class="banner banner-in" role="status" data-testid="in-caucus">
          {t.inCaucus}
        </div>
      )}
      <div class="cols">
        <div class="col-main">
          <MediaArea t={t} s={s} />
          <AgreementPanel lang={lang} s={s} send={send} token={token} />
          <TermsPanel t={t} s={s} send={send} />
          <ChatPanel t={t} s={s} send={send} />
        </div>
        <div class="col-side">
          <Participants t={t} s={s} send={send} />
          {staff && <LobbyPanel t={t} s={s} send={send} />}
          {staff && <CaucusPanel t={t} s={s} send={send} />}
          <NotesPanel t={t} s={s} send={send} />
          {staff && <OutcomePanel t={t} s={s} send={send} />}
          {staff && <Timeline t={t} s={s} />}
        </div>
      </div>
    </div>
  );
}

function Panel({ title, testid, children }: { title: string; testid: string; children: ComponentChildren }) {
  const id = `h-${testid}`;
  return (
    <section class="card" data-testid={testid} aria-labelledby={id}>
      <h2 id={id}>{title}</h2>
      {children}
    </section>
  );
}

/** For staff: whether a party agreed to online mediation. */
function ConsentBadge({ t, s, p }: { t: T; s: State; p: Person }) {
  if (p.role !== 'consumer' && p.role !== 'merchant') return null;
  const c = consentOf(s, p.participant);
  const [text, cls] = c === true ? [t.consentYes, 'yes'] : c === false ? [t.consentNo, 'no'] : [t.consentUnknown, 'unknown'];
  return (
    <span class={`tag consent-${cls}`} data-testid="consent-state" data-consent={cls}>
      {text}
    </span>
  );
}

function Participants({ t, s, send }: { t: T; s: State; send: Send }) {
  const staff = amStaff(s);
  const shown = staff ? people(s) : inRoom(s);
  const canRemove = new Set(removable(s).map((p) => p.participant));
  // The one person whose removal is being confirmed, and the reason typed for it.
  const [confirming, setConfirming] = useState<string>();
  const [reason, setReason] = useState('');
  const cancel = () => {
    setConfirming(undefined);
    setReason('');
  };
  return (
    <Panel title={t.participants} testid="participants">
      <ul class="plain">
        {shown.map((p) => (
          <li key={p.participant} data-testid="participant" data-participant={p.participant}>
            <span class={`dot ${p.online ? 'on' : 'off'}`} aria-hidden="true" />
            <strong>{nameOf(t, s, p.participant)}</strong> {roleName(t, p)} · {t.status[p.status]} ·{' '}
            {p.online ? t.online : t.offline}
            {staff && <ConsentBadge t={t} s={s} p={p} />}
            {canRemove.has(p.participant) && confirming !== p.participant && (
              <button
                type="button"
                class="small-button"
                aria-label={t.removeLabel(p.name ?? t.unknownPerson)}
                data-testid="remove"
                onClick={() => {
                  setConfirming(p.participant);
                  setReason('');
                }}
              >
                {t.remove}
              </button>
            )}
            {canRemove.has(p.participant) && confirming === p.participant && (
              <form
                class="confirm"
                role="alertdialog"
                aria-labelledby={`rm-q-${p.participant}`}
                data-testid="remove-confirm"
                onSubmit={(e) => {
                  e.preventDefault();
                  const r = reason.trim();
                  send(r ? { type: 'remove', participant: p.participant, reason: r } : { type: 'remove', participant: p.participant });
                  cancel();
                }}
              >
                <p id={`rm-q-${p.participant}`}>{t.removeConfirm(p.name ?? t.unknownPerson)}</p>
                <label for={`rm-r-${p.participant}`}>{t.removeReason}</label>
                <input id={`rm-r-${p.participant}`} value={reason} maxLength={200} onInput={(e) => setReason(e.currentTarget.value)} />
                <div class="row">
                  <button type="submit" class="danger" data-testid="remove-yes">
                    {t.removeYes}
                  </button>
                  <button type="button" onClick={cancel} autoFocus>
                    {t.removeNo}
                  </button>
                </div>
              </form>
            )}
          </li>
        ))}
      </ul>
    </Panel>
  );
}

function ChatPanel({ t, s, send }: { t: T; s: State; send: Send }) {
  const [text, setText] = useState('');
  const submit = (e: Event) => {
    e.preventDefault();
    const v = text.trim();
    if (!v) return;
    send({ type: 'chat', text: v });
    setText('');
  };
  return (
    <Panel title={t.chat} testid="chat">
      <ol class="chat-log plain" aria-live="polite">
        {s.chat.map((c) => (
          <li key={c.seq} data-testid="chat-line">
            <strong>{nameOf(t, s, c.from)}</strong>
            {c.caucus && <em class="tag">{t.caucusTag}</em>}{t.colon}{c.text}
          </li>
        ))}
      </ol>
      <form onSubmit={submit} class="row">
        <label class="sr-only" for="chat-input">
          {t.chatInput}
        </label>
        <input id="chat-input" value={text} maxLength={4000} placeholder={t.chatInput} onInput={(e) => setText(e.currentTarget.value)} />
        <button type="submit">{t.send}</button>
      </form>
    </Panel>
  );
}

function LobbyPanel({ t, s, send }: { t: T; s: State; send: Send }) {
  const waiting = lobby(s);
  return (
    <Panel title={t.lobbyPanel} testid="lobby-panel">
      {waiting.length === 0 && <p>{t.lobbyEmpty}</p>}
      <ul class="plain">
        {waiting.map((p) => {
          const who = `${nameOf(t, s, p.participant)} (${roleName(t, p)})`;
          return (
            <li key={p.participant} class="row">
              <span>{who}</span>
              <button type="button" aria-label={`${t.admit}: ${who}`} onClick={() => send({ type: 'admit', participant: p.participant })}>
                {t.admit}
              </button>
              <button type="button" aria-label={`${t.deny}: ${who}`} onClick={() => send({ type: 'deny', participant: p.participant })}>
                {t.deny}
              </button>
            </li>
          );
        })}
      </ul>
    </Panel>
  );
}

function CaucusPanel({ t, s, send }: { t: T; s: State; send: Send }) {
  const [chosen, setChosen] = useState<Record<string, boolean>>({});
  const me = s.me?.participant;
  const mine = myCaucus(s);
  const others = inRoom(s).filter((p) => p.participant !== me);
  const members = others.filter((p) => chosen[p.participant]).map((p) => p.participant);
  return (
    <Panel title={t.caucus} testid="caucus-panel">
      {mine ? (
        <div>
          <p>
            {t.caucusRunning}{t.colon}{mine.members.map((m) => nameOf(t, s, m)).join('、')}
          </p>
          <button type="button" onClick={() => send({ type: 'caucus_end', caucus: mine.caucus })}>
            {t.caucusEnd}
          </button>
        </div>
      ) : (
        <fieldset>
          <legend>{t.caucusChoose}</legend>
          {others.map((p) => (
            <label key={p.participant} class="check">
              <input
                type="checkbox"
                checked={!!chosen[p.participant]}
                onChange={(e) => setChosen({ ...chosen, [p.participant]: e.currentTarget.checked })}
              />
              {nameOf(t, s, p.participant)} ({roleName(t, p)})
            </label>
          ))}
          <button
            type="button"
            disabled={members.length === 0}
            onClick={() => {
              send({ type: 'caucus_start', members });
              setChosen({});
            }}
          >
            {t.caucusStart}
          </button>
        </fieldset>
      )}
    </Panel>
  );
}

function NotesPanel({ t, s, send }: { t: T; s: State; send: Send }) {
  const [text, setText] = useState('');
  const [scope, setScope] = useState<NoteScope>('shared');
  const staff = amStaff(s);
  if (!staff && s.notes.length === 0) return null;
  return (
    <Panel title={t.notes} testid="notes">
      {s.notes.length === 0 && <p>{t.noNotes}</p>}
      <ul class="plain">
        {s.notes.map((n) => (
          <li key={n.seq} data-testid="note" data-scope={n.scope}>
            <em class={`tag scope-${n.scope}`}>{noteLabel(t, n.scope, n.caucus)}</em> <strong>{nameOf(t, s, n.author)}</strong>{t.colon}{n.text}
          </li>
        ))}
      </ul>
      {staff && (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            if (!text.trim()) return;
            send({ type: 'note', text: text.trim(), scope });
            setText('');
          }}
        >
          <label for="note-text">{t.noteInput}</label>
          <textarea id="note-text" rows={3} maxLength={20000} value={text} onInput={(e) => setText(e.currentTarget.value)} />
          <label for="note-scope">{t.noteScope}</label>
          <select id="note-scope" value={scope} onChange={(e) => setScope(e.currentTarget.value as NoteScope)}>
            {(['shared', 'staff', 'private'] as NoteScope[]).map((sc) => (
              <option key={sc} value={sc}>
                {t.scopes[sc]}
              </option>
            ))}
          </select>
          <button type="submit">{t.addNote}</button>
        </form>
      )}
    </Panel>
  );
}

/** SHA-256 (hex) of the text as shown, so a party signs exactly what is on the screen. */
export async function sha256Hex(text: string): Promise<string | undefined> {
  // crypto.subtle exists only in secure contexts (https, or localhost); elsewhere the server
  // binds the acceptance to its own copy of the text.
  if (!globalThis.crypto?.subtle) return undefined;
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

function TermsPanel({ t, s, send }: { t: T; s: State; send: Send }) {
  const [draft, setDraft] = useState('');
  const cur = currentTerms(s);
  const me = s.me!;
  const staff = amStaff(s);
  const isParty = me.role === 'consumer' || me.role === 'merchant';
  const theParties = parties(s);
  const allAccepted = !!cur && theParties.length > 0 && theParties.every((p) => cur.accepted[p.participant]);
  const closed = !!s.outcome;
  return (
    <Panel title={t.terms} testid="terms">
      {!cur && <p>{t.noTerms}</p>}
      {cur && (
        <div>
          <p class="small">
            {t.by}{t.colon}{nameOf(t, s, cur.by)}
          </p>
          <blockquote class="terms-text" data-testid="terms-text">
            {cur.text}
          </blockquote>
          <ul class="plain">
            {answerers(s, cur).map((id) => (
              <li key={id} data-testid="terms-answer">
                {nameOf(t, s, id)}{t.colon}{cur.accepted[id] ? t.accepted : cur.rejected[id] !== undefined ? t.rejected : t.pending}
              </li>
            ))}
          </ul>
          {cur.confirmedBy && (
            <p class="confirmed" role="status" data-testid="terms-confirmed">
              ✔ {t.confirmed}（{nameOf(t, s, cur.confirmedBy)}）
            </p>
          )}
          {isParty && cur.accepted[me.participant] && <p>{t.youAccepted}</p>}
          {isParty && cur.rejected[me.participant] !== undefined && <p>{t.youRejected}</p>}
          {isParty && !cur.accepted[me.participant] && cur.rejected[me.participant] === undefined && (
            <div class="row big-buttons">
              <button
                type="button"
                class="primary"
                onClick={async () => {
                  const hash = await sha256Hex(cur.text);
                  send(hash ? { type: 'accept_terms', terms: cur.terms, text_hash: hash } : { type: 'accept_terms', terms: cur.terms });
                }}
              >
                {t.accept}
              </button>
              <button type="button" onClick={() => send({ type: 'reject_terms', terms: cur.terms })}>
                {t.reject}
              </button>
            </div>
          )}
          {me.role === 'judge' && !cur.confirmedBy && allAccepted && (
            <button type="button" class="primary" onClick={() => send({ type: 'confirm_terms', terms: cur.terms })}>
              {t.confirm}
            </button>
          )}
        </div>
      )}
      {staff && !closed && (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            if (!draft.trim()) return;
            send({ type: 'propose_terms', text: draft.trim() });
            setDraft('');
          }}
        >
          <label for="terms-text">{t.termsInput}</label>
          <textarea id="terms-text" rows={3} maxLength={20000} value={draft} onInput={(e) => setDraft(e.currentTarget.value)} />
          <button type="submit">{t.propose}</button>
        </form>
      )}
    </Panel>
  );
}

function OutcomePanel({ t, s, send }: { t: T; s: State; send: Send }) {
  const [outcome, setOutcome] = useState<Outcome>('settled');
  const [reason, setReason] = useState('');
  if (s.outcome)
    return (
      <Panel title={t.outcome} testid="outcome">
        <p>
          {t.outcomeRecorded}
          {t.outcomes[s.outcome.outcome]}
          {s.outcome.reason ? `（${s.outcome.reason}）` : ''}
        </p>
      </Panel>
    );
  return (
    <Panel title={t.outcome} testid="outcome">
      <form
        onSubmit={(e) => {
          e.preventDefault();
          send({ type: 'record_outcome', outcome, reason: reason.trim() || undefined });
        }}
      >
        <label for="outcome">{t.outcomeChoose}</label>
        <select id="outcome" value={outcome} onChange={(e) => setOutcome(e.currentTarget.value as Outcome)}>
          {(Object.keys(t.outcomes) as Outcome[]).map((o) => (
            <option key={o} value={o}>
              {t.outcomes[o]}
            </option>
          ))}
        </select>
        <label for="outcome-reason">{t.reason}</label>
        <input id="outcome-reason" value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
        <button type="submit">{t.record}</button>
      </form>
    </Panel>
  );
}

function Timeline({ t, s }: { t: T; s: State }) {
  const fmt = useMemo(() => new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' }), []);
  const who = (id: string | undefined) => (id ? nameOf(t, s, id) : t.unknownPerson);
  return (
    <Panel title={t.timeline} testid="timeline">
      <details>
        <summary>
          {t.timeline} ({s.timeline.length})
        </summary>
        <ol class="plain small">
          {s.timeline.map((e) => (
            <li key={e.seq} data-testid="timeline-entry" data-kind={e.kind}>
              <time dateTime={new Date(e.ts).toISOString()}>{fmt.format(new Date(e.ts))}</time> {eventLabel(t, e, who)}
            </li>
          ))}
        </ol>
      </details>
    </Panel>
  );
}
