// Web client benchmark (docs/benchmarks.md, "Web client (issue 5)"): how long from opening an
// invite link to seeing a remote participant's video actually play, and how much JavaScript a
// phone downloads.
//
//   node tests/e2e/bench-join.mjs <base url> <admin token> [runs]
//
// Against a running `yuntiao serve` (run by loadgen/run-web-bench.sh). For each run: a fresh case;
// the mediator's page is opened first and publishes (fake camera) for SETTLE_MS (3 s); then the
// clock starts and the
// judge's link is opened in a fresh browser context and its device check passed as soon as it
// allows (a judge enters directly, like staff; a party
// would wait for the mediator's click in the lobby, which is a person's reaction time, not the
// software's); the clock stops when the judge's page has decoded a frame of the mediator's
// video (`getVideoPlaybackQuality().totalVideoFrames > 0` on the remote tile). Prints one JSON
// line per run and a summary line; exits non-zero if a run fails.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';

const [base, adminToken, runsArg] = process.argv.slice(2);
if (!base || !adminToken) {
  console.error('usage: node bench-join.mjs <base url> <admin token> [runs]');
  process.exit(2);
}
const runs = Number(runsArg ?? 10);
/** How long the mediator publishes before the judge opens the link (SETTLE_MS, default 3 s). */
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 3000);

async function admin(path, body) {
  const r = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

async function linkFor(caseId, role, name) {
  const { url } = await admin(`/admin/cases/${caseId}/invites`, { role, name, ttl: '1h' });
  // Invite URLs carry the public URL; serve them from the base the benchmark talks to.
  return `${base}/join#${url.split('#')[1]}`;
}

/** Gzipped bytes of the JavaScript the built client ships (what index.html loads). */
function shippedJs() {
  const dist = fileURLToPath(new URL('../../web-client/dist/', import.meta.url));
  const html = readFileSync(`${dist}index.html`, 'utf8');
  const files = readdirSync(`${dist}assets`).filter((f) => f.endsWith('.js'));
  let raw = 0;
  let gz = 0;
  for (const f of files) {
    const b = readFileSync(`${dist}assets/${f}`);
    raw += b.length;
    gz += gzipSync(b, { level: 9 }).length;
  }
  return { files: files.length, referenced: files.filter((f) => html.includes(f)).length, raw, gz };
}

/** Passes the device check as soon as it lets us (a person would look at the preview first). */
async function enter(page) {
  const button = page.getByTestId('precheck-enter');
  await button.waitFor({ timeout: 20_000 });
  await page.waitForFunction(() => !document.querySelector('[data-testid="precheck-enter"]')?.hasAttribute('disabled'), null, {
    timeout: 20_000,
    polling: 10,
  });
  await button.click();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'],
});
const times = [];
let failed = 0;
for (let i = 0; i < runs; i++) {
  const { case: caseId } = await admin('/admin/cases', {
    title: `基准测试 ${i}`,
    participants: [
      { role: 'mediator', name: '王调解员' },
      { role: 'judge', name: '李法官' },
    ],
  });
  const mediatorLink = await linkFor(caseId, 'mediator', '王调解员');
  const judgeLink = await linkFor(caseId, 'judge', '李法官');
  const staff = await browser.newContext({ locale: 'zh-CN' });
  const mediator = await staff.newPage();
  await mediator.goto(mediatorLink);
  await enter(mediator);
  await mediator.getByTestId('self-tile').waitFor({ timeout: 20_000 });
  // The mediator has been in the session a while when a party opens the link; a publisher
  // that started a moment ago answers keyframe requests late (see docs/benchmarks.md).
  await mediator.waitForTimeout(SETTLE_MS);
  const ctx = await browser.newContext({ locale: 'zh-CN', viewport: { width: 360, height: 740 }, isMobile: true });
  const judge = await ctx.newPage();
  const t0 = performance.now();
  try {
    await judge.goto(judgeLink);
    await enter(judge);
    const tEnter = performance.now() - t0;
    await judge.waitForFunction(() => document.querySelector('[data-testid="remote-tile"] video') !== null, null, { timeout: 30_000, polling: 10 });
    const tTile = performance.now() - t0;
    await judge.waitForFunction(
      () => {
        for (const v of document.querySelectorAll('[data-testid="remote-tile"] video')) {
          if (v.getVideoPlaybackQuality().totalVideoFrames > 0) return true;
        }
        return false;
      },
      null,
      { timeout: 30_000, polling: 10 },
    );
    const ms = performance.now() - t0;
    times.push(ms);
    console.log(JSON.stringify({ run: i, ms: Math.round(ms), enter_ms: Math.round(tEnter), tile_ms: Math.round(tTile) }));
  } catch (e) {
    failed++;
    console.log(JSON.stringify({ run: i, error: String(e instanceof Error ? e.message : e).slice(0, 200) }));
  }
  await ctx.close();
  await staff.close();
}
await browser.close();

times.sort((a, b) => a - b);
const pct = (p) => (times.length ? Math.round(times[Math.min(times.length - 1, Math.floor((p / 100) * times.length))]) : null);
const js = shippedJs();
console.log(
  JSON.stringify({
    summary: true,
    runs,
    ok: times.length,
    failed,
    link_to_remote_video_ms: { p50: pct(50), p90: pct(90), min: times.length ? Math.round(times[0]) : null, max: times.length ? Math.round(times[times.length - 1]) : null },
    javascript: js,
  }),
);
process.exit(failed ? 1 : 0);
