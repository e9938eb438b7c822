/**
 * The two languages of the client: Chinese (zh-CN, the default) and English.
 *
 * The first choice follows `navigator.language` (English only when the browser asks for it);
 * a choice made with the language button is remembered in localStorage.
 */
import type { ConsentKind, ErrorCode, EventBody, NoteScope, Outcome, ParticipantStatus, Role } from './protocol';

export type Lang = 'zh' | 'en';

const STORAGE_KEY = 'yuntiao.lang';

export function initialLang(storage: Pick<Storage, 'getItem'> | undefined, navLang: string | undefined): Lang {
  const saved = storage?.getItem(STORAGE_KEY);
  if (saved === 'zh' || saved === 'en') return saved;
  return navLang && navLang.toLowerCase().startsWith('en') ? 'en' : 'zh';
}

export function saveLang(storage: Pick<Storage, 'setItem'> | undefined, lang: Lang): void {
  try {
    storage?.setItem(STORAGE_KEY, lang);
  } catch {
    // Private browsing may refuse storage: the choice then lasts for this page only.
  }
}

/** Every event kind of the protocol. */
export type EventKind = EventBody['kind'];

/** Who a participant id is, for a timeline line: their name (and "(you)"), in the reader's language. */
export type Namer = (participant: string | undefined) => string;

/**
 * One plain-language line per event kind: who did what. A mapped type, so `tsc` refuses a
 * language that lacks a kind; `i18n.test.ts` also checks the kinds the server's generated types
 * list, so a kind added on the server fails the tests until it has a label in both languages.
 */
export type EventLabels = { [K in EventKind]: (e: Extract<EventBody, { kind: K }>, who: Namer) => string };

/** At most `n` characters of `text`, with an ellipsis when cut (chat lines in the timeline). */
export function excerpt(text: string, n = 40): string {
  const chars = Array.from(text.replace(/\s+/g, ' ').trim());
  return chars.length > n ? `${chars.slice(0, n).join('')}…` : chars.join('');
}

const zhRoles: Record<Role, string> = { consumer: '消费者', merchant: '商家', mediator: '调解员', judge: '法官' };
const zhScopes: Record<NoteScope, string> = { shared: '所有人可见', staff: '仅调解员和法官', private: '仅自己' };
const zhOutcomes: Record<Outcome, string> = {
  settled: '调解成功',
  partially_settled: '部分达成协议',
  failed: '调解不成',
  withdrawn: '撤回申请',
  referred_to_court: '转交法院',
};
const zhConsent: Record<ConsentKind, [string, string]> = {
  online_mediation: ['同意在线调解', '不同意在线调解'],
  recording: ['同意录音录像', '不同意录音录像'],
};
const zhReason = (r?: string) => (r ? `（原因：${r}）` : '');

const zhEvents: EventLabels = {
  case_created: (e) => `创建案件“${e.title}”，${e.participants.length} 位参加人`,
  invite_issued: (e, who) => `向${who(e.participant)}（${zhRoles[e.role]}）发出邀请链接`,
  invite_revoked: () => '撤销了一个邀请链接',
  participant_joined: (e, who) =>
    e.joined_as === 'lobby' ? `${who(e.participant)}（${zhRoles[e.role]}）进入等候室` : `${who(e.participant)}（${zhRoles[e.role]}）进入调解`,
  admitted: (e, who) => `${who(e.by)}准许${who(e.participant)}进入调解`,
  denied: (e, who) => `${who(e.by)}拒绝${who(e.participant)}进入${zhReason(e.reason)}`,
  left: (e, who) => `${who(e.participant)}离开了调解`,
  removed: (e, who) => `${who(e.by)}将${who(e.participant)}移出调解${zhReason(e.reason)}`,
  chat: (e, who) => `${who(e.from)}发言：${excerpt(e.text)}`,
  caucus_started: (e, who) =>
    e.members && e.members.length > 0
      ? `${who(e.by)}开始单独沟通：${e.members.map((m) => who(m)).join('、')}`
      : '调解员开始与另一方单独沟通',
  caucus_ended: (e, who) => (e.by ? `${who(e.by)}结束单独沟通` : '单独沟通结束'),
  note_added: (e, who) => `${who(e.author)}添加调解记录（${zhScopes[e.scope]}）`,
  terms_proposed: (e, who) => `${who(e.by)}提出调解方案${e.document === 'agreement' ? '（取自协议草稿）' : ''}`,
  terms_accepted: (e, who) => `${who(e.by)}同意并签署调解方案`,
  terms_rejected: (e, who) => `${who(e.by)}不同意调解方案${zhReason(e.reason)}`,
  terms_confirmed: (e, who) => `${who(e.by)}作出司法确认`,
  outcome_recorded: (e, who) => `${who(e.by)}记录调解结果：${zhOutcomes[e.outcome]}${zhReason(e.reason)}`,
  consent_given: (e, who) => `${who(e.participant)}${zhConsent[e.consent][e.given ? 0 : 1]}`,
  doc_permission: (e, who) =>
    e.write ? `${who(e.by)}允许${who(e.participant)}编辑协议草稿` : `${who(e.by)}取消了${who(e.participant)}编辑协议草稿的权限`,
};

const enRoles: Record<Role, string> = { consumer: 'Consumer', merchant: 'Merchant', mediator: 'Mediator', judge: 'Judge' };
const enScopes: Record<NoteScope, string> = { shared: 'Everyone', staff: 'Mediators and judges only', private: 'Only me' };
const enOutcomes: Record<Outcome, string> = {
  settled: 'Settled',
  partially_settled: 'Partially settled',
  failed: 'Not settled',
  withdrawn: 'Withdrawn',
  referred_to_court: 'Referred to court',
};
const enConsent: Record<ConsentKind, [string, string]> = {
  online_mediation: ['agreed to online mediation', 'did not agree to online mediation'],
  recording: ['agreed to recording', 'did not agree to recording'],
};
const enReason = (r?: string) => (r ? ` (reason: ${r})` : '');

const enEvents: EventLabels = {
  case_created: (e) => `Case “${e.title}” created, ${e.participants.length} participants`,
  invite_issued: (e, who) => `Invite link sent to ${who(e.participant)} (${enRoles[e.role]})`,
  invite_revoked: () => 'An invite link was withdrawn',
  participant_joined: (e, who) =>
    e.joined_as === 'lobby'
      ? `${who(e.participant)} (${enRoles[e.role]}) is in the waiting room`
      : `${who(e.participant)} (${enRoles[e.role]}) joined the mediation`,
  admitted: (e, who) => `${who(e.by)} let ${who(e.participant)} in`,
  denied: (e, who) => `${who(e.by)} did not let ${who(e.participant)} in${enReason(e.reason)}`,
  left: (e, who) => `${who(e.participant)} left`,
  removed: (e, who) => `${who(e.by)} removed ${who(e.participant)} from the mediation${enReason(e.reason)}`,
  chat: (e, who) => `${who(e.from)} said: ${excerpt(e.text)}`,
  caucus_started: (e, who) =>
    e.members && e.members.length > 0
      ? `${who(e.by)} started a private talk with ${e.members.map((m) => who(m)).join(', ')}`
      : 'The mediator started a private talk with the other side',
  caucus_ended: (e, who) => (e.by ? `${who(e.by)} ended the private talk` : 'The private talk ended'),
  note_added: (e, who) => `${who(e.author)} added a note (${enScopes[e.scope]})`,
  terms_proposed: (e, who) => `${who(e.by)} proposed terms${e.document === 'agreement' ? ' (from the agreement draft)' : ''}`,
  terms_accepted: (e, who) => `${who(e.by)} accepted and signed the terms`,
  terms_rejected: (e, who) => `${who(e.by)} rejected the terms${enReason(e.reason)}`,
  terms_confirmed: (e, who) => `${who(e.by)} gave judicial confirmation`,
  outcome_recorded: (e, who) => `${who(e.by)} recorded the outcome: ${enOutcomes[e.outcome]}${enReason(e.reason)}`,
  consent_given: (e, who) => `${who(e.participant)} ${enConsent[e.consent][e.given ? 0 : 1]}`,
  doc_permission: (e, who) =>
    e.write ? `${who(e.by)} let ${who(e.participant)} edit the agreement draft` : `${who(e.by)} stopped ${who(e.participant)} editing the agreement draft`,
};

const zh = {
  appName: '云调解',
  colon: '：',
  switchLang: 'English',
  switchLangLabel: 'Switch to English',
  largeText: '大字',
  largeTextLabel: '大字模式',
  conn: { idle: '未连接', connecting: '正在连接…', open: '已连接', reconnecting: '连接中断，正在重新连接…', closed: '已断开' },
  connLabel: '连接状态',
  noToken: '请使用调解委员会发给您的邀请链接打开本页。',
  linkProblemTitle: '无法使用此链接进入调解',
  removedTitle: '您已被移出本次调解',
  deniedTitle: '调解员未让您进入本次调解',
  contact: '如有疑问，请联系向您发送此链接的调解委员会，他们可以为您发送新的链接。',
  contactAfterDecision: '如有疑问，请联系向您发送此链接的调解委员会。',
  fatal: {
    expired: '此邀请链接已过期。',
    not_yet: '此邀请链接尚未生效，请在约定的时间再打开。',
    revoked: '此邀请链接已被撤销。',
    invalid: '此邀请链接无效或不完整。请确认您打开的是完整的链接。',
    case_not_found: '找不到此链接对应的调解案件。',
    denied: '调解员未同意您进入本次调解。',
    removed: '调解员已请您离开本次调解，您的摄像头和麦克风已关闭。此链接不能再用于进入本次调解。',
  },
  lobbyTitle: '请稍候，调解员将很快让您进入',
  lobbyHint: '您已在等候室。调解员确认您的身份后会让您进入，本页会自动更新，请勿关闭。',
  caseLabel: '案件',
  whoWillBeThere: '参加人员',
  you: '（您）',
  unknownPerson: '另一位参加人',
  roles: zhRoles,
  status: {
    invited: '已邀请',
    lobby: '等候中',
    admitted: '在场',
    denied: '未准入',
    left: '已离开',
    removed: '已移出',
  } as Record<ParticipantStatus, string>,
  online: '在线',
  offline: '离线',
  participants: '参加人员',
  mediaPlaceholder: '音视频区域（下一步开发：摄像头、麦克风、视频画面）',
  // -- media (video tiles, tiles.tsx) --
  media: {
    title: '音视频',
    muteMic: '静音麦克风',
    micIsOn: '麦克风：开',
    micIsOff: '麦克风：已静音',
    camOff: '关闭摄像头',
    camIsOn: '摄像头：开',
    camIsOff: '摄像头：已关闭',
    switchCam: '切换摄像头',
    speaking: '正在说话',
    micMutedBadge: '已静音',
    camOffBadge: '摄像头已关闭',
    audioOnlyBadge: '仅语音',
    notAvailable: '暂时看不到、听不到',
    noCamera: '无法使用摄像头，您将仅以语音参加。',
    noDevices: '无法使用摄像头和麦克风。您仍可以看到和听到其他人，也可以用聊天发言。',
    degraded: '网络无法传送您的视频，已自动切换为仅语音。',
    downlinkPaused: '您的网络较弱，已暂停接收他人的视频，以保证声音清楚。网络好转后会自动恢复。',
    downlinkReduced: '您的网络较弱，他人的视频已降低清晰度，以保证声音清楚。',
    connLost: '音视频连接中断，正在等待恢复…',
  },
  agreementPlaceholder: '协议草稿编辑区（下一步开发：与调解员共同查看协议草稿）',
  caucusBanner: '调解员正在与另一方单独沟通，请稍候。',
  inCaucus: '您正在单独沟通中，另一方看不到这里的聊天内容。',
  chat: '聊天',
  chatInput: '输入消息',
  send: '发送',
  caucusTag: '单独沟通',
  lobbyPanel: '等候室',
  lobbyEmpty: '等候室中没有人。',
  admit: '准许进入',
  deny: '拒绝',
  caucus: '单独沟通（背对背）',
  caucusChoose: '选择单独沟通的对象',
  caucusStart: '开始单独沟通',
  caucusEnd: '结束单独沟通',
  caucusRunning: '单独沟通进行中',
  notes: '调解记录',
  noteInput: '记录内容',
  noteScope: '可见范围',
  scopes: zhScopes,
  addNote: '添加记录',
  noNotes: '暂无记录。',
  terms: '调解方案',
  termsInput: '方案内容',
  propose: '提出方案',
  noTerms: '调解员尚未提出方案。',
  accept: '同意此方案',
  reject: '不同意',
  accepted: '已同意',
  rejected: '不同意',
  pending: '尚未答复',
  confirm: '司法确认',
  confirmed: '法官已作出司法确认',
  youAccepted: '您已同意此方案。',
  youRejected: '您已表示不同意此方案。',
  outcome: '调解结果',
  outcomeChoose: '结果',
  outcomes: zhOutcomes,
  reason: '原因',
  record: '记录结果',
  outcomeRecorded: '已记录结果：',
  timeline: '案件时间线',
  remove: '移出',
  removeLabel: (name: string) => `将${name}移出调解`,
  removeConfirm: (name: string) => `确定将${name}移出本次调解吗？移出后，对方不能再用自己的链接进入。`,
  removeReason: '原因（可不填，记入案件记录）',
  removeYes: '确定移出',
  removeNo: '取消',
  consentYes: '已同意在线调解',
  consentNo: '不同意在线调解',
  consentUnknown: '尚未表示是否同意在线调解',
  refusedTitle: '您没有同意在线调解',
  refusedText: '调解员会看到您的选择。本次调解不会在网上与您进行；调解委员会可以与您商定其他调解方式。',
  refusedBack: '我改变主意了，返回',
  events: zhEvents,
  errorPrefix: '操作未完成：',
  dismiss: '关闭提示',
  by: '提出人',
};

type Strings = typeof zh;

const en: Strings = {
  appName: 'Cloud mediation',
  colon: ': ',
  switchLang: '中文',
  switchLangLabel: '切换到中文 (Switch to Chinese)',
  largeText: 'Large text',
  largeTextLabel: 'Large text mode',
  conn: { idle: 'Not connected', connecting: 'Connecting…', open: 'Connected', reconnecting: 'Connection lost, reconnecting…', closed: 'Disconnected' },
  connLabel: 'Connection state',
  noToken: 'Please open this page with the invite link the mediation committee sent you.',
  linkProblemTitle: 'This link cannot be used to join the mediation',
  removedTitle: 'You were removed from this mediation',
  deniedTitle: 'The mediator did not let you in',
  contact: 'If you have questions, contact the mediation committee that sent you this link; they can send you a new one.',
  contactAfterDecision: 'If you have questions, contact the mediation committee that sent you this link.',
  fatal: {
    expired: 'This invite link has expired.',
    not_yet: 'This invite link is not valid yet. Please open it again at the agreed time.',
    revoked: 'This invite link has been withdrawn.',
    invalid: 'This invite link is not valid or is incomplete. Please make sure you opened the whole link.',
    case_not_found: 'The mediation case for this link could not be found.',
    denied: 'The mediator did not let you into this mediation.',
    removed: 'The mediator has asked you to leave this mediation; your camera and microphone are off. This link can no longer be used to enter it.',
  },
  lobbyTitle: 'Please wait: the mediator will let you in',
  lobbyHint: 'You are in the waiting room. The mediator will let you in after checking who you are. This page updates by itself; please keep it open.',
  caseLabel: 'Case',
  whoWillBeThere: 'Who will be there',
  you: ' (you)',
  unknownPerson: 'Another participant',
  roles: enRoles,
  status: { invited: 'Invited', lobby: 'Waiting', admitted: 'In the room', denied: 'Not admitted', left: 'Left', removed: 'Removed' },
  online: 'online',
  offline: 'offline',
  participants: 'Participants',
  mediaPlaceholder: 'Audio and video (next step: camera, microphone, video tiles)',
  // -- media (video tiles, tiles.tsx) --
  media: {
    title: 'Audio and video',
    muteMic: 'Mute microphone',
    micIsOn: 'Microphone: on',
    micIsOff: 'Microphone: muted',
    camOff: 'Turn camera off',
    camIsOn: 'Camera: on',
    camIsOff: 'Camera: off',
    switchCam: 'Switch camera',
    speaking: 'speaking',
    micMutedBadge: 'muted',
    camOffBadge: 'camera off',
    audioOnlyBadge: 'audio only',
    notAvailable: 'not available now',
    noCamera: 'Your camera cannot be used; you take part by voice only.',
    noDevices: 'Your camera and microphone cannot be used. You can still see and hear the others, and use the chat.',
    degraded: 'Your network cannot carry your video; switched to voice only.',
    downlinkPaused: "Your connection is weak: the others' video is paused so that you hear them clearly. It comes back by itself when the connection improves.",
    downlinkReduced: "Your connection is weak: the others' video is shown at lower quality so that you hear them clearly.",
    connLost: 'The audio and video connection was interrupted; waiting for it to recover…',
  },
  agreementPlaceholder: 'Agreement draft (next step: read the draft as the mediator types it)',
  caucusBanner: 'The mediator is talking privately with the other side. Please wait.',
  inCaucus: 'You are in a private talk; the other side cannot see this chat.',
  chat: 'Chat',
  chatInput: 'Type a message',
  send: 'Send',
  caucusTag: 'private talk',
  lobbyPanel: 'Waiting room',
  lobbyEmpty: 'Nobody is waiting.',
  admit: 'Let in',
  deny: 'Deny',
  caucus: 'Private talk (caucus)',
  caucusChoose: 'Choose who joins the private talk',
  caucusStart: 'Start private talk',
  caucusEnd: 'End private talk',
  caucusRunning: 'Private talk in progress',
  notes: 'Case notes',
  noteInput: 'Note text',
  noteScope: 'Who can see it',
  scopes: enScopes,
  addNote: 'Add note',
  noNotes: 'No notes yet.',
  terms: 'Proposed terms',
  termsInput: 'Terms text',
  propose: 'Propose terms',
  noTerms: 'The mediator has not proposed terms yet.',
  accept: 'Accept these terms',
  reject: 'Reject',
  accepted: 'Accepted',
  rejected: 'Rejected',
  pending: 'No answer yet',
  confirm: 'Give judicial confirmation',
  confirmed: 'The judge has confirmed the agreement',
  youAccepted: 'You accepted these terms.',
  youRejected: 'You rejected these terms.',
  outcome: 'Outcome',
  outcomeChoose: 'Outcome',
  outcomes: enOutcomes,
  reason: 'Reason',
  record: 'Record outcome',
  outcomeRecorded: 'Outcome recorded: ',
  timeline: 'Case timeline',
  remove: 'Remove',
  removeLabel: (name: string) => `Remove ${name} from the mediation`,
  removeConfirm: (name: string) => `Remove ${name} from this mediation? They will not be able to enter again with their link.`,
  removeReason: 'Reason (optional; kept in the case record)',
  removeYes: 'Yes, remove',
  removeNo: 'Cancel',
  consentYes: 'agreed to online mediation',
  consentNo: 'did not agree to online mediation',
  consentUnknown: 'has not said yet whether they agree to online mediation',
  refusedTitle: 'You did not agree to online mediation',
  refusedText: 'The mediator will see your choice. This mediation will not go ahead online with you; the mediation committee can agree another way with you.',
  refusedBack: 'I changed my mind: go back',
  events: enEvents,
  errorPrefix: 'Not done: ',
  dismiss: 'Dismiss',
  by: 'Proposed by',
};

export type T = Strings;
export const STRINGS: Record<Lang, T> = { zh, en };

/** The heading of the page shown when the link ends. */
export function fatalTitle(t: T, code: ErrorCode): string {
  if (code === 'removed') return t.removedTitle;
  if (code === 'denied') return t.deniedTitle;
  return t.linkProblemTitle;
}

/** The plain-language explanation of a code that ends the link. */
export function fatalText(t: T, code: ErrorCode): string {
  switch (code) {
    case 'token_expired':
      return t.fatal.expired;
    case 'token_not_yet_valid':
      return t.fatal.not_yet;
    case 'token_revoked':
      return t.fatal.revoked;
    case 'case_not_found':
      return t.fatal.case_not_found;
    case 'denied':
      return t.fatal.denied;
    case 'removed':
      return t.fatal.removed;
    default:
      return t.fatal.invalid;
  }
}

/** The timeline's line for an event: who did what, in plain words (never the raw kind). */
export function eventLabel(t: T, e: EventBody, who: Namer): string {
  const label = t.events[e.kind] as (e: EventBody, who: Namer) => string;
  return label(e, who);
}
