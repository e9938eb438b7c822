// Renders an exported case record (HTML) in headless Chromium and prints it, for the
// integration tests: Debian's /usr/bin/chromium driven by playwright-core (installed in
// tests/e2e by `npm ci --prefix tests/e2e`).
//
// Usage: node print-export.mjs <export.html> <screenshot.png> <printed.pdf>
// The page is loaded with JavaScript disabled and no network (the export is self-contained), in
// print media. Reports on stdout one JSON object:
//   {"innerText":"...","pdfBytes":12345,"fonts":["Noto Sans CJK SC",...]}
import { createRequire } from 'node:module'
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const [htmlPath, screenshotPath, pdfPath] = process.argv.slice(2)
const here = dirname(fileURLToPath(import.meta.url))
const require = createRequire(join(here, '../e2e/package.json'))
const { chromium } = require('playwright-core')

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium'
})
try {
  const context = await browser.newContext({ javaScriptEnabled: false, offline: true })
  const page = await context.newPage()
  await page.setContent(readFileSync(htmlPath, 'utf8'), { waitUntil: 'load' })
  await page.emulateMedia({ media: 'print' })
  const innerText = await page.innerText('body')
  await page.screenshot({ path: screenshotPath, fullPage: true })
  const pdf = await page.pdf({ format: 'A4', printBackground: true })
  writeFileSync(pdfPath, pdf)
  // The fonts the text was actually drawn with (devtools protocol), so a test can tell that the
  // Chinese characters were not left to a box-drawing fallback.
  const cdp = await context.newCDPSession(page)
  await cdp.send('DOM.enable')
  await cdp.send('CSS.enable')
  const { root } = await cdp.send('DOM.getDocument', { depth: -1 })
  const fonts = new Set()
  const walk = async (node) => {
    if (node.nodeType === 1 && node.nodeName !== 'HEAD' && node.nodeName !== 'STYLE') {
      try {
        const { fonts: used } = await cdp.send('CSS.getPlatformFontsForNode', { nodeId: node.nodeId })
        for (const f of used) fonts.add(f.familyName)
      } catch {}
    }
    for (const child of node.children ?? []) await walk(child)
  }
  await walk(root)
  process.stdout.write(JSON.stringify({ innerText, pdfBytes: pdf.length, fonts: [...fonts] }) + '\n')
} finally {
  await browser.close()
}
