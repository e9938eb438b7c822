/**
 * The agreement draft: a Yjs document shared over the server's y-websocket endpoint
 * (`/docs/{case}/agreement?token=…`, docs/protocol.md "Shared documents") with the stock
 * `y-websocket` provider, bound to a plain textarea.
 *
 * Everyone admitted reads it live as the mediator types; the mediator (and anyone the mediator
 * allows) edits it. Staff put its current text to the parties with one button
 * (`propose_terms` with `document: "agreement"`: the server binds exactly that text and the
 * document's version to the terms). When the draft changes after that, everyone sees that the
 * text on the table is no longer the draft.
 *
 * The binding: a local edit is the single range a textarea `input` event changes
 * (`textChange`), applied to the Y.Text in one transaction; a remote change replaces the
 * textarea's value and moves the caret through the change (`mapPosition`).
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import type { Lang } from './i18n';
import type { Request } from './protocol';
import { amStaff, currentTerms, parties, type State } from './state';
import { canEditAgreement, grantedEdit, mapPosition, textChange, type Delta } from './agreement-text';

const LOCAL = 'local-textarea';

const STRINGS = {
  zh: {
    title: '协议草稿',
    label: '协议草稿内容',
    readOnly: '只读：调解员正在起草，您可以随时查看。',
    editable: '您可以编辑此草稿。',
    connecting: '正在连接协议草稿…',
    unavailable: '暂时无法打开协议草稿。',
    propose: '将此草稿作为协议条款提交双方',
    allow: (name: string) => `允许${name}编辑`,
    revoke: (name: string) => `取消${name}的编辑权限`,
    changed: '注意：协议草稿在提交后已被修改，双方签署的是已提交的条款文本。',
    same: '已提交的条款与当前草稿一致。',
  },
  en: {
    title: 'Agreement draft',
    label: 'Agreement draft text',
    readOnly: 'Read only: the mediator is drafting; you can follow along.',
    editable: 'You can edit this draft.',
    connecting: 'Connecting to the agreement draft…',
    unavailable: 'The agreement draft cannot be opened right now.',
    propose: 'Put this draft to both parties as the terms',
    allow: (name: string) => `Let ${name} edit`,
    revoke: (name: string) => `Stop ${name} editing`,
    changed: 'Note: the draft changed after it was put to the parties; they sign the text of the terms as proposed.',
    same: 'The terms on the table match the current draft.',
  },
};

/** The document websocket's base URL (the provider appends `/<doc>?token=…`). */
function docsBase(loc: Location, caseId: string): string {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/docs/${encodeURIComponent(caseId)}`;
}

/** Close codes after which reconnecting cannot help (docs/protocol.md). */
const FINAL_CLOSE = new Set([4001, 4003, 4004]);

async function sha256Hex(text: string): Promise<string | undefined> {
  if (!globalThis.crypto?.subtle) return undefined;
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

export function AgreementPanel({
  lang,
  s,
  send,
  token,
}: {
  lang: Lang;
  s: State;
  send: (r: Request) => void;
  token: string;
}) {
  const t = STRINGS[lang];
  const [text, setText] = useState('');
  const [status, setStatus] = useState<'connecting' | 'synced' | 'unavailable'>('connecting');
  const [draftHash, setDraftHash] = useState<string>();
  const area = useRef<HTMLTextAreaElement>(null);
  const ytext = useRef<Y.Text>();
  const caseId = s.caseId;

  useEffect(() => {
    if (!caseId) return;
    const doc = new Y.Doc();
    const shared = doc.getText('text');
    ytext.current = shared;
    const provider = new WebsocketProvider(docsBase(location, caseId), 'agreement', doc, {
      params: { token },
      disableBc: true,
    });
    provider.on('sync', (synced: boolean) => {
      if (synced) setStatus('synced');
    });
    provider.on('connection-close', (event: CloseEvent | null) => {
      if (event && FINAL_CLOSE.has(event.code)) {
        // Not admitted (yet), no access, or the link is gone: stop retrying until the room
        // changes (the effect reruns when admission or permissions change).
        provider.shouldConnect = false;
        setStatus('unavailable');
      }
    });
    shared.observe((event, tr) => {
      const value = shared.toString();
      const el = area.current;
      if (el && tr.origin !== LOCAL) {
        const delta = event.delta as Delta;
        const start = mapPosition(el.selectionStart, delta);
        const end = mapPosition(el.selectionEnd, delta);
        el.value = value;
        if (document.activeElement === el) el.setSelectionRange(start, end);
      }
      setText(value);
    });
    return () => {
      provider.destroy();
      doc.destroy();
      ytext.current = undefined;
    };
    // The server follows admission and edit grants live on the open connection.
  }, [caseId, token]);

  useEffect(() => {
    let live = true;
    void sha256Hex(text).then((h) => {
      if (live) setDraftHash(h);
    });
    return () => {
      live = false;
    };
  }, [text]);

  const editable = canEditAgreement(s);
  const staff = amStaff(s);
  const mediator = s.me?.role === 'mediator';
  const terms = currentTerms(s);
  const proposedFromDraft = terms && s.timeline.some((e) => e.kind === 'terms_proposed' && e.terms === terms.terms && e.document === 'agreement');

  const onInput = (e: Event) => {
    const el = e.currentTarget as HTMLTextAreaElement;
    const shared = ytext.current;
    if (!shared) return;
    const change = textChange(shared.toString(), el.value);
    if (!change) return;
    shared.doc?.transact(() => {
      if (change.remove > 0) shared.delete(change.index, change.remove);
      if (change.insert) shared.insert(change.index, change.insert);
    }, LOCAL);
  };

  return (
    <section class="card agreement" data-testid="agreement" aria-labelledby="h-agreement">
      <h2 id="h-agreement">{t.title}</h2>
      {status === 'connecting' && <p class="small">{t.connecting}</p>}
      {status === 'unavailable' && <p class="small" role="status">{t.unavailable}</p>}
      <p class="small">{editable ? t.editable : t.readOnly}</p>
      <label for="agreement-text" class="visually-hidden">
        {t.label}
      </label>
      <textarea
        id="agreement-text"
        ref={area}
        data-testid="agreement-text"
        rows={8}
        readOnly={!editable}
        aria-readonly={!editable}
        value={text}
        onInput={onInput}
      />
      {terms && proposedFromDraft && draftHash && (
        <p class={draftHash === terms.text_hash ? 'small' : 'warning'} role="status" data-testid="agreement-vs-terms">
          {draftHash === terms.text_hash ? t.same : t.changed}
        </p>
      )}
      {staff && !s.outcome && (
        <button
          type="button"
          data-testid="propose-from-agreement"
          disabled={!text.trim()}
          onClick={() => send({ type: 'propose_terms', document: 'agreement' })}
        >
          {t.propose}
        </button>
      )}
      {mediator && (
        <div class="row">
          {parties(s).map((p) => {
            const name = p.name ?? p.participant;
            const on = grantedEdit(s, p.participant);
            return (
              <button
                key={p.participant}
                type="button"
                data-testid={`agreement-grant-${p.participant}`}
                onClick={() => send({ type: 'doc_permission', doc: 'agreement', participant: p.participant, write: !on })}
              >
                {on ? t.revoke(name) : t.allow(name)}
              </button>
            );
          })}
        </div>
      )}
    </section>
  );
}
