// Browser end-to-end test of the web client, like four people would use it.
//
//   node tests/e2e/session.mjs <base url> <consumer link> <merchant link> <mediator link> <judge link>
//
// Opens the four invite links in four browser contexts of Debian's headless Chromium (driven
// by playwright-core, fake camera and microphone, three fake cameras); each first passes the
// device check (camera preview, microphone level, the measured connection check, which warns
// when the test slows the judge's download probe; the parties agree to online mediation, the
// merchant chooses voice only) and enters; then: the parties wait in the lobby and the mediator
// sees their consent (participants list, plain-language timeline); the
// mediator admits both from the lobby panel; everyone sees the other three's video playing
// (decoded frames advance), the mediator a speaking indicator without touching the page again;
// the merchant's tile is audio-only; the consumer switches camera and the others' video keeps
// playing; the consumer's chat reaches the other three; the mediator holds a
// caucus with the consumer, the merchant sees the banner and not the caucus chat, and no longer
// receives the consumer's and the mediator's video (back after the caucus, with the consumer's
// mute made inside it); the mediator types the agreement draft and everyone reads it live; the mediator puts
// the draft to the parties as terms, both parties accept, the judge confirms and all four see
// the confirmation; the consumer's connection is cut and comes back to the same room with
// nothing lost or doubled; the mediator removes the merchant after a confirmation and the
// merchant sees the "you were removed" page; a broken link shows the plain-language "cannot use this link" page;
// axe-core finds no serious or critical violation on the lobby, session and broken-link pages. A screenshot of each step goes to test-artifacts/e2e/. Exits non-zero with
// the failing step on failure. Run by tests/tests/browser.rs.
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const [base, ...links] = process.argv.slice(2);
if (!base || links.length !== 4) {
  console.error('usage: node session.mjs <base url> <consumer> <merchant> <mediator> <judge>');
  process.exit(2);
}
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/e2e/', import.meta.url));
mkdirSync(ARTIFACTS, { recursive: true });
const TIMEOUT = 15_000;
const origin = new URL(base).origin;
const wsOrigin = origin.replace(/^http/, 'ws');

let step = 'launch';
const problems = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  // Three fake cameras, so that switching camera can be exercised. (Chromium's second fake camera
  // delivers frames that never reach the encoder, as an infrared camera would: switching skips
  // it for the third.)
  args: ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream=device-count=3'],
});

// axe-core's source, evaluated through the devtools protocol (the page's CSP rightly forbids
// injecting a script element).
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/**
 * Runs axe-core (served from our own disk, no CDN) on what `who` sees now and fails on any
 * serious or critical violation.
 */
async function accessible(who, where) {
  await who.page.evaluate(AXE);
  const bad = await who.page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
  });
  if (bad.length) throw new Error(`axe-core on the ${where} page of ${who.label}: ${bad.join('; ')}`);
}

/** The open signaling websockets of people whose connection the test can drop. */
const droppable = new Map();

/** One person: their own context (cookies, storage), page and screen size. */
async function person(label, link, opts, { canDrop = false, check = true, slowProbe = false, voiceOnly = false } = {}) {
  const context = await browser.newContext(opts);
  const page = await context.newPage();
  if (slowProbe) {
    // A slow network, as the device check's download probe sees it: the answer takes 2.5 s.
    await page.route(/\/probe\?/, async (route) => {
      await new Promise((r) => setTimeout(r, 2_500));
      await route.continue();
    });
  }
  if (canDrop) {
    // The signaling websocket goes through playwright, which can cut it like a lost network.
    await page.routeWebSocket(/\/ws$/, (ws) => {
      ws.connectToServer();
      droppable.set(label, ws);
    });
  }
  // Nothing may be fetched from anywhere but our server.
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith(wsOrigin) && !u.startsWith('data:') && !u.startsWith('blob:'))
      problems.push(`${label}: third-party request to ${u}`);
  });
  page.on('pageerror', (e) => problems.push(`${label}: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.text().includes('eyJ')) problems.push(`${label}: something like a token was logged to the console`);
  });
  await page.goto(link);
  const who = { label, page, context };
  if (check) {
    // The device check comes first: a preview of the (fake) camera, a microphone level, then
    // the enter button.
    await visible(who, page.getByTestId('precheck'), 'the device check');
    await visible(who, page.getByTestId('precheck-preview'), 'the camera preview');
    await visible(who, page.getByTestId('precheck-level'), 'the microphone level');
    await page.getByTestId('precheck-enter').waitFor({ state: 'visible', timeout: TIMEOUT });
    // The measured connection check: slow only where the test made it slow.
    try {
      await page.locator('[data-testid="connection-check"][data-state="done"]').waitFor({ state: 'visible', timeout: TIMEOUT });
    } catch {
      throw new Error(`${label}: the connection check does not finish`);
    }
    // The download decides here: on a loaded test machine the round trip alone may well look long.
    const reasons = (await page.getByTestId('weak-connection').count()) ? await page.getByTestId('weak-connection').getAttribute('data-reasons') : '';
    const slowDownload = (reasons ?? '').split(' ').includes('throughput');
    if (slowProbe && !slowDownload) throw new Error(`${label}: no slow-download warning when the probe is slow (${await page.getByTestId('connection-check').textContent()})`);
    if (!slowProbe && slowDownload) throw new Error(`${label}: a slow-download warning on loopback (${await page.getByTestId('connection-check').textContent()})`);
    if (slowProbe) await visible(who, page.getByTestId('weak-connection').filter({ hasText: /voice only|仅语音/ }), 'the suggestion to take part by voice only');
    if (label === 'consumer' || label === 'merchant') {
      // A party is asked, in plain words, to agree to online mediation; entering waits for it.
      await visible(who, page.getByTestId('consent'), 'the consent to online mediation');
      if (!(await page.getByTestId('precheck-enter').isDisabled())) throw new Error(`${label} can enter without agreeing to online mediation`);
      await page.getByTestId('consent-check').check();
    } else if ((await page.getByTestId('consent').count()) > 0) throw new Error(`${label} (staff) is asked for consent`);
    try {
      await page.waitForFunction(() => !document.querySelector('[data-testid="precheck-enter"]')?.hasAttribute('disabled'), null, { timeout: TIMEOUT, polling: 100 });
    } catch {
      throw new Error(`${label}: the enter button stays disabled`);
    }
    await shot('00-precheck', who);
    if (label === 'consumer') {
      // Ticking the box was a touch: the microphone level now moves (Chromium's fake microphone beeps).
      try {
        await page.waitForFunction(() => Number(document.querySelector('[data-testid="precheck-level"]')?.value) > 0.05, null, { timeout: TIMEOUT, polling: 100 });
      } catch {
        throw new Error('the microphone level does not move after a touch');
      }
      // The join page a party sees first, on a phone.
      await accessible(who, 'device check (join)');
    }
    if (voiceOnly) {
      // Voice only, chosen in the device check: the camera preview goes away.
      await page.getByTestId('precheck-audio-only').check();
      try {
        await page.getByTestId('precheck-preview').waitFor({ state: 'detached', timeout: TIMEOUT });
      } catch {
        throw new Error(`${label} still sees a camera preview after choosing voice only`);
      }
      await page.waitForFunction(() => !document.querySelector('[data-testid="precheck-enter"]')?.hasAttribute('disabled'), null, { timeout: TIMEOUT, polling: 100 });
    }
    await page.getByTestId('precheck-enter').click();
  }
  return who;
}

async function shot(name, who) {
  await who.page.screenshot({ path: `${ARTIFACTS}${name}-${who.label}.png`, fullPage: true });
}

async function visible(who, locator, what) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout: TIMEOUT });
  } catch {
    throw new Error(`${who.label} does not see ${what}`);
  }
}

async function chatLine(who, text) {
  await visible(who, who.page.getByTestId('chat-line').filter({ hasText: text }), `the chat line "${text}"`);
}

// ---- media: remote video tiles that actually play (decoded frames advance) ----

/** Decoded frames of each remote video tile (optionally only of one role), keyed by participant. */
async function remoteFrames(who, role) {
  return who.page.evaluate((role) => {
    const sel = role ? `[data-testid="remote-tile"][data-role="${role}"]` : '[data-testid="remote-tile"]';
    const out = {};
    for (const tile of document.querySelectorAll(sel)) {
      const v = tile.querySelector('video');
      if (v) out[tile.dataset.participant] = v.getVideoPlaybackQuality().totalVideoFrames;
    }
    return out;
  }, role);
}

/** Waits until the remote video of `role` (or of anyone, if none given) shows new frames. */
async function videoPlaying(who, role, what) {
  const deadline = Date.now() + 2 * TIMEOUT;
  let before = await remoteFrames(who, role);
  while (Date.now() < deadline) {
    await who.page.waitForTimeout(500);
    const now = await remoteFrames(who, role);
    if (Object.entries(now).some(([p, f]) => before[p] !== undefined && f > before[p])) return;
    before = now;
  }
  throw new Error(`${who.label} does not see ${what} playing (its decoded frames do not advance)`);
}

/** Checks that `who` no longer receives `role`'s video: no tile, or a tile whose frames stand still. */
async function videoStopped(who, role, what) {
  const tiles = who.page.locator(`[data-testid="remote-tile"][data-role="${role}"]`);
  try {
    await tiles.first().waitFor({ state: 'detached', timeout: TIMEOUT });
    return;
  } catch {
    // A tile still there: its frames must not advance.
  }
  const a = await remoteFrames(who, role);
  await who.page.waitForTimeout(1500);
  const b = await remoteFrames(who, role);
  if (Object.entries(b).some(([p, f]) => a[p] !== undefined && f > a[p])) throw new Error(`${who.label} still receives ${what}`);
}

let everyone = [];
try {
  step = 'staff open their links';
  const mediator = await person('mediator', links[2], { locale: 'zh-CN', viewport: { width: 1280, height: 900 } });
  const judge = await person('judge', links[3], { locale: 'en-US', viewport: { width: 1280, height: 900 } }, { slowProbe: true });
  everyone = [mediator, judge];
  for (const who of everyone) {
    await visible(who, who.page.getByTestId('participants'), 'the session');
    const url = who.page.url();
    const hash = await who.page.evaluate(() => location.hash);
    if (url.includes('token') || hash !== '') throw new Error(`${who.label}: the token is still in the address bar (${url.split('#')[0]}#…)`);
  }

  step = 'parties wait in the lobby';
  const consumer = await person(
    'consumer',
    links[0],
    { locale: 'zh-CN', viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true },
    { canDrop: true },
  );
  const merchant = await person('merchant', links[1], { locale: 'zh-CN', viewport: { width: 1024, height: 768 } }, { voiceOnly: true });
  everyone = [consumer, merchant, mediator, judge];
  for (const who of [consumer, merchant]) {
    await visible(who, who.page.getByText('调解员将很快让您进入'), 'the lobby ("the mediator will let you in")');
    await visible(who, who.page.getByTestId('case-title').filter({ hasText: '网购退款纠纷' }), 'the case title in the lobby');
    await shot('01-lobby', who);
  }
  await accessible(consumer, 'lobby');

  step = "the parties' consent reaches the mediator";
  for (const name of ['张三', '某某电器店']) {
    const row = mediator.page.getByTestId('participant').filter({ hasText: name });
    await visible(mediator, row.locator('[data-testid="consent-state"][data-consent="yes"]'), `that ${name} agreed to online mediation`);
  }
  // The timeline is folded by default: open it, as the mediator would.
  await mediator.page.getByTestId('timeline').locator('summary').click();
  await visible(mediator, mediator.page.getByTestId('timeline-entry').filter({ hasText: '张三同意在线调解' }), 'the consent in the timeline');

  step = 'the mediator admits both from the lobby panel';
  const lobbyPanel = mediator.page.getByTestId('lobby-panel');
  await visible(mediator, lobbyPanel.getByRole('button', { name: /准许进入: 张三/ }), 'the consumer in the lobby panel');
  await visible(mediator, lobbyPanel.getByRole('button', { name: /准许进入: 某某电器店/ }), 'the merchant in the lobby panel');
  await shot('02-lobby-panel', mediator);
  await lobbyPanel.getByRole('button', { name: /准许进入: 张三/ }).click();
  await lobbyPanel.getByRole('button', { name: /准许进入: 某某电器店/ }).click();
  for (const who of [consumer, merchant]) {
    await visible(who, who.page.getByTestId('participants'), 'the session after being admitted');
    await visible(who, who.page.getByTestId('conn').filter({ hasText: '已连接' }), 'the connected state');
    await shot('03-admitted', who);
  }

  step = "everyone sees the others' video playing";
  for (const who of everyone) {
    await visible(who, who.page.getByTestId('self-tile'), 'their own preview');
    try {
      await who.page.waitForFunction(() => document.querySelectorAll('[data-testid="remote-tile"] video').length >= 3, null, { timeout: 2 * TIMEOUT, polling: 100 });
    } catch {
      throw new Error(`${who.label} does not get a video tile for each of the other three`);
    }
  }
  for (const who of everyone) await videoPlaying(who, undefined, 'any remote video');
  await videoPlaying(merchant, 'consumer', "the consumer's video");
  await videoPlaying(consumer, 'mediator', "the mediator's video");
  for (const who of everyone) await shot('03b-video', who);
  // The mediator touched nothing since "enter": the speaking indicator works all the same.
  try {
    await mediator.page.waitForFunction(() => document.querySelector('[data-testid="remote-tile"].speaking') !== null, null, { timeout: 2 * TIMEOUT, polling: 100 });
  } catch {
    throw new Error('the mediator sees no speaking indicator on any remote tile (audio context not running?)');
  }

  step = 'the merchant chose voice only: the others get their audio and no video line';
  for (const who of [consumer, mediator, judge]) {
    const tile = who.page.locator('[data-testid="remote-tile"][data-role="merchant"]');
    await visible(who, tile.filter({ hasText: /仅语音|audio only/ }), "the merchant's audio-only tile");
    if ((await tile.first().getAttribute('data-video')) !== 'none') throw new Error(`${who.label} receives a video line from the merchant, who chose voice only`);
  }
  await shot('03c-voice-only', consumer);

  step = 'the consumer switches camera; the others keep seeing their video';
  const cameraOf = () =>
    consumer.page.evaluate(() => document.querySelector('[data-testid="self-tile"] video')?.srcObject?.getVideoTracks()[0]?.getSettings().deviceId ?? '');
  const before = await cameraOf();
  await consumer.page.getByTestId('switch-cam').click();
  try {
    await consumer.page.waitForFunction(
      (old) => {
        const id = document.querySelector('[data-testid="self-tile"] video')?.srcObject?.getVideoTracks()[0]?.getSettings().deviceId;
        return !!id && id !== old;
      },
      before,
      { timeout: TIMEOUT, polling: 100 },
    );
  } catch {
    throw new Error('the consumer\'s own preview does not show another camera after switching');
  }
  await videoPlaying(merchant, 'consumer', "the consumer's video after they switched camera");
  await videoPlaying(mediator, 'consumer', "the consumer's video after they switched camera");
  await shot('03d-switched-camera', merchant);

  step = "the consumer's chat reaches the other three";
  await consumer.page.getByLabel('输入消息').fill('我要求全额退款');
  await consumer.page.getByLabel('输入消息').press('Enter');
  for (const who of everyone) await chatLine(who, '我要求全额退款');
  for (const who of everyone) await shot('04-chat', who);
  await accessible(consumer, 'session');
  await accessible(mediator, 'session');

  step = 'the mediator starts a caucus with the consumer';
  const caucusPanel = mediator.page.getByTestId('caucus-panel');
  await caucusPanel.getByLabel(/张三/).check();
  await caucusPanel.getByRole('button', { name: '开始单独沟通' }).click();
  await visible(consumer, consumer.page.getByTestId('in-caucus'), 'that they are in a private talk');
  await visible(merchant, merchant.page.getByText('调解员正在与另一方单独沟通'), 'the caucus banner');
  await visible(judge, judge.page.getByText('the mediator is talking privately with the other side', { exact: false }).or(judge.page.getByTestId('caucus-banner')), 'the caucus banner');
  await mediator.page.getByLabel('输入消息').fill('单独沟通：可以接受退款八成吗？');
  await mediator.page.getByLabel('输入消息').press('Enter');
  await chatLine(consumer, '单独沟通：可以接受退款八成吗？');
  // Give the server time to (wrongly) deliver it to the merchant, then check it did not.
  await merchant.page.waitForTimeout(700);
  if ((await merchant.page.getByText('可以接受退款八成吗').count()) > 0) throw new Error('the merchant sees the caucus chat');
  if ((await judge.page.getByText('可以接受退款八成吗').count()) > 0) throw new Error('the judge (outside the caucus) sees the caucus chat');
  await shot('05-caucus', merchant);
  await shot('05-caucus', consumer);
  await shot('05-caucus', mediator);

  step = "during the caucus the merchant receives neither the consumer's nor the mediator's video";
  await videoStopped(merchant, 'consumer', "the consumer's video");
  await videoStopped(merchant, 'mediator', "the mediator's video");
  await videoPlaying(merchant, 'judge', "the judge's video (outside the caucus too)");
  await videoPlaying(consumer, 'mediator', "the mediator's video (in the caucus with them)");
  await videoStopped(consumer, 'merchant', "the merchant's video");
  // The consumer mutes inside the caucus: the merchant must learn it when media resumes.
  await consumer.page.getByTestId('toggle-mic').click();
  await shot('05b-caucus-media', merchant);
  await shot('05b-caucus-media', consumer);
  await mediator.page.getByTestId('caucus-panel').getByRole('button', { name: '结束单独沟通' }).click();
  try {
    await merchant.page.getByTestId('caucus-banner').waitFor({ state: 'hidden', timeout: TIMEOUT });
  } catch {
    throw new Error('the merchant still sees the caucus banner after the caucus ended');
  }

  step = "after the caucus the merchant sees the consumer's and the mediator's video again";
  await videoPlaying(merchant, 'consumer', "the consumer's video after the caucus");
  await videoPlaying(merchant, 'mediator', "the mediator's video after the caucus");
  await visible(merchant, merchant.page.locator('[data-testid="remote-tile"][data-role="consumer"]').filter({ hasText: '已静音' }), "that the consumer's microphone is muted");
  await consumer.page.getByTestId('toggle-mic').click();
  try {
    await merchant.page.locator('[data-testid="remote-tile"][data-role="consumer"]').filter({ hasText: '已静音' }).waitFor({ state: 'detached', timeout: TIMEOUT });
  } catch {
    throw new Error("the merchant still sees the consumer muted after they unmuted");
  }
  await shot('05c-after-caucus-media', merchant);

  step = 'the mediator drafts the agreement; everyone reads it live, read-only';
  const termsText = '商家于七日内退还货款人民币 800 元，消费者退回商品。';
  const draft = mediator.page.getByTestId('agreement-text');
  await draft.click();
  await draft.pressSequentially(termsText, { delay: 5 });
  for (const who of [consumer, merchant, judge]) {
    const box = who.page.getByTestId('agreement-text');
    try {
      await who.page.waitForFunction((t) => document.querySelector('[data-testid="agreement-text"]')?.value === t, termsText, { timeout: TIMEOUT, polling: 100 });
    } catch {
      throw new Error(`${who.label} does not see the agreement draft as typed (has ${JSON.stringify(await box.inputValue())})`);
    }
    if (!(await box.evaluate((el) => el.readOnly))) throw new Error(`${who.label} may type into the agreement without permission`);
    await shot('06-agreement', who);
  }

  step = 'terms: the mediator puts the draft to the parties, both accept, the judge confirms';
  await mediator.page.getByTestId('propose-from-agreement').click();
  for (const who of [consumer, merchant]) {
    await visible(who, who.page.getByTestId('terms-text').filter({ hasText: termsText }), 'the proposed terms');
    await shot('06-terms', who);
    await who.page.getByRole('button', { name: '同意此方案' }).click();
    await visible(who, who.page.getByText('您已同意此方案'), 'their own acceptance');
  }
  await visible(judge, judge.page.getByRole('button', { name: 'Give judicial confirmation' }), 'the confirm button once both accepted');
  await shot('07-before-confirm', judge);
  await judge.page.getByRole('button', { name: 'Give judicial confirmation' }).click();
  for (const who of everyone) {
    await visible(who, who.page.getByTestId('terms-confirmed'), 'the judicial confirmation');
    await shot('08-confirmed', who);
  }
  // The staff timeline says who did what, in plain words, in each one's language.
  await visible(mediator, mediator.page.getByTestId('timeline-entry').filter({ hasText: '作出司法确认' }), 'the confirmation in the timeline (zh)');
  await judge.page.getByTestId('timeline').locator('summary').click();
  await visible(judge, judge.page.getByTestId('timeline-entry').filter({ hasText: 'accepted and signed the terms' }), 'the signatures in the timeline (en)');
  if ((await mediator.page.getByTestId('timeline-entry').filter({ hasText: /[a-z]+_[a-z]+/ }).count()) > 0)
    throw new Error('the timeline shows a raw event kind');

  step = 'an edit after signing shows that the draft and the signed terms differ';
  await draft.press('End');
  await draft.pressSequentially('（补充）', { delay: 5 });
  await visible(consumer, consumer.page.getByTestId('agreement-vs-terms').filter({ hasText: '已被修改' }), 'that the draft changed after the terms were put');
  await shot('09-draft-changed', consumer);

  step = "a dropped connection recovers: same room, nothing lost, nothing twice";
  const route = droppable.get('consumer');
  if (!route) throw new Error("the consumer's websocket was not routed");
  droppable.delete('consumer');
  await route.close({ code: 1001, reason: 'network lost' });
  // Said while the consumer is away: it must reach them once they are back.
  await mediator.page.getByLabel('输入消息').fill('您掉线期间的消息');
  await mediator.page.getByLabel('输入消息').press('Enter');
  try {
    await consumer.page.waitForFunction(() => document.querySelector('[data-testid="conn"]')?.textContent?.includes('已连接'), null, {
      timeout: 2 * TIMEOUT,
      polling: 100,
    });
  } catch {
    throw new Error('the consumer did not reconnect');
  }
  if (!droppable.has('consumer')) throw new Error('the consumer did not open a new websocket');
  await chatLine(consumer, '您掉线期间的消息');
  for (const text of ['我要求全额退款', '您掉线期间的消息']) {
    const n = await consumer.page.getByTestId('chat-line').filter({ hasText: text }).count();
    if (n !== 1) throw new Error(`after reconnecting the consumer shows "${text}" ${n} times`);
  }
  if ((await consumer.page.getByTestId('lobby').count()) > 0) throw new Error('the consumer is back in the lobby after reconnecting');
  await visible(consumer, consumer.page.getByTestId('terms-confirmed'), 'the confirmed terms after reconnecting');
  await videoPlaying(consumer, 'mediator', "the mediator's video after reconnecting");
  await videoPlaying(merchant, 'consumer', "the consumer's video after the consumer reconnected");
  await shot('10-reconnected', consumer);

  step = 'the mediator removes the merchant, after confirming; the merchant sees that they were removed';
  const merchantRow = mediator.page.getByTestId('participant').filter({ hasText: '某某电器店' });
  await merchantRow.getByTestId('remove').click();
  await visible(mediator, merchantRow.getByTestId('remove-confirm').filter({ hasText: '确定将某某电器店移出' }), 'the confirmation question');
  // Nothing happens before the confirmation.
  if ((await merchant.page.getByTestId('removed').count()) > 0) throw new Error('the merchant was removed before the mediator confirmed');
  await shot('11-remove-confirm', mediator);
  await merchantRow.getByTestId('remove-yes').click();
  await visible(merchant, merchant.page.getByTestId('removed').filter({ hasText: '您已被移出本次调解' }), 'the "you were removed" page');
  await visible(mediator, merchantRow.filter({ hasText: '已移出' }), 'the merchant as removed in the participants list');
  await shot('11-removed', merchant);
  await accessible(merchant, 'removed');

  step = 'a broken link shows a plain-language page';
  const stranger = await person('broken-link', `${origin}/join#token=not-a-valid-token`, { locale: 'zh-CN', viewport: { width: 360, height: 740 } }, { check: false });
  await visible(stranger, stranger.page.getByTestId('link-problem').filter({ hasText: '调解委员会' }), 'the link-problem page naming whom to contact');
  await shot('09-link-problem', stranger);
  await accessible(stranger, 'broken link');
  await stranger.context.close();

  step = 'no third-party requests, no page errors';
  if (problems.length) throw new Error(problems.join('; '));
  console.log('e2e: 1 passed, 0 failed (consent, connection check, lobby, admit, video playing, speaking, voice only, switch camera, chat, caucus hides media, agreement, terms, confirmation, timeline, reconnect, remove, axe-core; screenshots in test-artifacts/e2e/)');
  await browser.close();
} catch (e) {
  console.error(`e2e FAILED at step "${step}": ${e instanceof Error ? e.message : e}`);
  if (problems.length) console.error(`also: ${problems.join('; ')}`);
  for (const who of everyone) await shot('failure', who).catch(() => {});
  await browser.close().catch(() => {});
  process.exit(1);
}
