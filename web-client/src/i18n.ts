/**
 * The two languages of the client: Chinese (zh-CN, the default) and English.
 *
 * The first choice follows `navigator.language` (English only when the browser asks for it);
 * a choice made with the language button is remembered in localStorage.
 */
import type { ErrorCode, NoteScope, Outcome, ParticipantStatus, Role } from './protocol';

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
  contact: '如有疑问，请联系向您发送此链接的调解委员会，他们可以为您发送新的链接。',
  fatal: {
    expired: '此邀请链接已过期。',
    not_yet: '此邀请链接尚未生效，请在约定的时间再打开。',
    revoked: '此邀请链接已被撤销。',
    invalid: '此邀请链接无效或不完整。请确认您打开的是完整的链接。',
    case_not_found: '找不到此链接对应的调解案件。',
    denied: '调解员未同意您进入本次调解。',
    removed: '调解员已请您离开本次调解。',
  },
  lobbyTitle: '请稍候，调解员将很快让您进入',
  lobbyHint: '您已在等候室。调解员确认您的身份后会让您进入，本页会自动更新，请勿关闭。',
  caseLabel: '案件',
  whoWillBeThere: '参加人员',
  you: '（您）',
  unknownPerson: '另一位参加人',
  roles: { consumer: '消费者', merchant: '商家', mediator: '调解员', judge: '法官' } as Record<Role, string>,
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
    audioOnlyBadge: '仅音频',
    notAvailable: '暂时看不到、听不到',
    noCamera: '无法使用摄像头，您将仅以语音参加。',
    noDevices: '无法使用摄像头和麦克风。您仍可以看到和听到其他人，也可以用聊天发言。',
    degraded: '网络无法传送您的视频，已自动切换为仅语音。',
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
  scopes: { shared: '所有人可见', staff: '仅调解员和法官', private: '仅自己' } as Record<NoteScope, string>,
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
  outcomes: {
    settled: '调解成功',
    partially_settled: '部分达成协议',
    failed: '调解不成',
    withdrawn: '撤回申请',
    referred_to_court: '转交法院',
  } as Record<Outcome, string>,
  reason: '原因',
  record: '记录结果',
  outcomeRecorded: '已记录结果：',
  timeline: '案件时间线',
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
  contact: 'If you have questions, contact the mediation committee that sent you this link; they can send you a new one.',
  fatal: {
    expired: 'This invite link has expired.',
    not_yet: 'This invite link is not valid yet. Please open it again at the agreed time.',
    revoked: 'This invite link has been withdrawn.',
    invalid: 'This invite link is not valid or is incomplete. Please make sure you opened the whole link.',
    case_not_found: 'The mediation case for this link could not be found.',
    denied: 'The mediator did not let you into this mediation.',
    removed: 'The mediator has asked you to leave this mediation.',
  },
  lobbyTitle: 'Please wait: the mediator will let you in',
  lobbyHint: 'You are in the waiting room. The mediator will let you in after checking who you are. This page updates by itself; please keep it open.',
  caseLabel: 'Case',
  whoWillBeThere: 'Who will be there',
  you: ' (you)',
  unknownPerson: 'Another participant',
  roles: { consumer: 'Consumer', merchant: 'Merchant', mediator: 'Mediator', judge: 'Judge' },
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
  scopes: { shared: 'Everyone', staff: 'Mediators and judges only', private: 'Only me' },
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
  outcomes: {
    settled: 'Settled',
    partially_settled: 'Partially settled',
    failed: 'Not settled',
    withdrawn: 'Withdrawn',
    referred_to_court: 'Referred to court',
  },
  reason: 'Reason',
  record: 'Record outcome',
  outcomeRecorded: 'Outcome recorded: ',
  timeline: 'Case timeline',
  errorPrefix: 'Not done: ',
  dismiss: 'Dismiss',
  by: 'Proposed by',
};

export type T = Strings;
export const STRINGS: Record<Lang, T> = { zh, en };

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
