#!/usr/bin/env node
'use strict';
// Drives headless Chromium (playwright-core, as tests-peers/browser/run.js does) through the
// `wsx serve` demo page: waits for the greeting, types a message into the box, clicks Send,
// and takes a screenshot. With --pages N (a chat room), opens N pages side by side; page i
// sends "TEXT i", and every page must receive every page's message.
//
// usage: node browser_demo.js PAGE_URL --expect GREETING --send TEXT [--screenshot PATH]
//                             [--ignore-https-errors] [--timeout SECS] [--pages N]
//                             [--second-page URL]   (pages after the first open URL instead)
//                             [--follow TEXT]  (then wait for the first page to hear its own
//                                               message, print "ready", and wait until it has
//                                               received TEXT, reconnecting or not)
//
// Prints one JSON line {"ok":bool,"received":[..],"sent":[..],"error"?:str,"console":[..]}
// and exits 0 only if the greeting arrived and the message was sent. The browser is
// $WSX_CHROMIUM or /usr/bin/chromium; playwright-core comes from $WSX_NODE_MODULES or
// tests-peers/node_modules. Exits by itself after the timeout, or when a piped stdin closes.

const fs = require('fs');
const path = require('path');

function resolveModule(name) {
  const dirs = [process.env.WSX_NODE_MODULES, path.join(__dirname, '..', '..', '..', 'tests-peers', 'node_modules')]
    .filter(Boolean);
  for (const d of dirs) {
    const p = path.join(d, name);
    if (fs.existsSync(p)) return p;
  }
  return name;
}

const opts = { page: null, expect: 'ho!', send: 'hey', screenshot: null, ignoreHttps: false, timeout: 60, pages: 1, second: null, follow: null };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--expect') opts.expect = argv[++i];
  else if (a === '--send') opts.send = argv[++i];
  else if (a === '--screenshot') opts.screenshot = argv[++i];
  else if (a === '--ignore-https-errors') opts.ignoreHttps = true;
  else if (a === '--timeout') opts.timeout = Number(argv[++i]);
  else if (a === '--pages') opts.pages = Number(argv[++i]);
  else if (a === '--second-page') opts.second = argv[++i];
  else if (a === '--follow') opts.follow = argv[++i];
  else if (!opts.page && !a.startsWith('--')) opts.page = a;
  else { process.stderr.write(`browser_demo.js: bad argument ${a}\n`); process.exit(2); }
}
if (!opts.page || !(opts.timeout > 0) || !(opts.pages >= 1 && opts.pages <= 8)) { process.stderr.write('usage: node browser_demo.js PAGE_URL ...\n'); process.exit(2); }

const out = { ok: false, page: opts.page, browser: null, received: [], sent: [], console: [] };
let browser = null;
function finish(code) {
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(code);
}
setTimeout(() => {
  out.error = out.error || `time limit (${opts.timeout} s)`;
  if (browser) browser.close().catch(() => {});
  finish(1);
}, opts.timeout * 1000).unref();
try {
  const st = fs.fstatSync(0);
  if (st.isFIFO() || st.isSocket()) {
    process.stdin.on('data', () => {});
    process.stdin.on('end', () => { out.error = 'stdin closed'; finish(1); });
  }
} catch { /* fd 0 closed */ }

async function main() {
  const { chromium } = require(resolveModule('playwright-core'));
  const executablePath = process.env.WSX_CHROMIUM || '/usr/bin/chromium';
  const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'];
  if (opts.ignoreHttps) args.push('--ignore-certificate-errors');
  browser = await chromium.launch({ executablePath, args, headless: true, chromiumSandbox: false, timeout: 30000 });
  out.browser = browser.version();
  const context = await browser.newContext({ ignoreHTTPSErrors: opts.ignoreHttps, viewport: { width: 820, height: 560 } });
  const pages = [];
  for (let i = 0; i < opts.pages; i++) {
    const page = await context.newPage();
    page.on('console', (m) => { if (out.console.length < 50) out.console.push(`${i} ${m.type()}: ${m.text()}`); });
    page.on('pageerror', (e) => { if (out.console.length < 50) out.console.push(`${i} pageerror: ${e.message}`); });
    await page.goto(i > 0 && opts.second ? opts.second : opts.page, { timeout: 30000 });
    pages.push(page);
  }
  const wait = { timeout: 20000, polling: 50 };
  // Everyone is in (greeted) before anyone speaks.
  for (const page of pages) {
    await page.waitForFunction((g) => window.wsxDemo && window.wsxDemo.received.includes(g), opts.expect, wait);
  }
  const said = pages.length === 1 ? [opts.send] : pages.map((_, i) => `${opts.send} ${i}`);
  for (let i = 0; i < pages.length; i++) {
    await pages[i].fill('#message', said[i]);
    await pages[i].click('#send');
    await pages[i].waitForFunction((s) => window.wsxDemo.sent.includes(s), said[i], wait);
  }
  if (pages.length > 1) {
    for (const page of pages) {
      await page.waitForFunction((all) => all.every((s) => window.wsxDemo.received.includes(s)), said, wait);
    }
  }
  if (opts.follow !== null) {
    // In a room the page hears its own message, with its position under --resumable.
    await pages[0].waitForFunction((s) => window.wsxDemo.received.includes(s), said[0], wait);
    process.stdout.write('ready\n');
    await pages[0].waitForFunction((t) => window.wsxDemo.received.includes(t), opts.follow, { timeout: 40000, polling: 50 });
  }
  // Let the log render before the screenshot.
  await pages[0].waitForTimeout(200);
  const states = [];
  for (const page of pages) states.push(await page.evaluate(() => window.wsxDemo));
  out.received = states[0].received;
  out.sent = states[0].sent;
  out.pages = states.map((s) => ({ received: s.received, sent: s.sent, room: s.room, extensions: s.extensions,
    urls: s.urls, reconnects: s.reconnects, resumable: s.resumable }));
  out.ok = states.every((s, i) => s.received.includes(opts.expect) && s.sent.includes(said[i]));
  if (opts.screenshot) {
    await pages[pages.length - 1].screenshot({ path: opts.screenshot, fullPage: true });
  }
  await browser.close();
  browser = null;
}

main().then(
  () => finish(out.ok ? 0 : 1),
  (e) => {
    out.error = `${e && e.message ? e.message.split('\n')[0] : e}`;
    if (browser) browser.close().catch(() => {});
    finish(1);
  },
);
