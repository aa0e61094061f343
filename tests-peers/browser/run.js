#!/usr/bin/env node
'use strict';
// Drives Debian's Chromium headless (through playwright-core) to a page that
// runs a WebSocket scenario and publishes `window.wsxResults`.
//
// usage: node run.js PAGE_URL [--screenshot PATH] [--ignore-https-errors] [--timeout SECS]
//        node run.js ws://127.0.0.1:PORT ...   (shorthand: opens this folder's
//                                               page.html?ws=<that URL> via file://)
//
// Prints one JSON line:
//   {"runner":"playwright-core","playwright":..,"browser":"<chromium version>","page":..,
//    "ok":bool,"results":<window.wsxResults>|null,"error":str?,"console":[..]}
// and exits 0 only if results.ok is true. The browser is
// $WSX_CHROMIUM or /usr/bin/chromium, with a fresh temporary profile.
//
// --ignore-https-errors sets playwright's ignoreHTTPSErrors (CDP
// Security.setIgnoreCertificateErrors for the context) and also passes
// Chromium's --ignore-certificate-errors. With playwright-core 1.65.1 and
// Chromium 156 the first alone already lets `new WebSocket('wss://…')` reach a
// server with a self-signed certificate (checked; without either the socket
// closes with 1006); the flag is kept as a second layer in case a later
// playwright/Chromium pairing drops that.

const fs = require('fs');
const path = require('path');
const url = require('url');
const lifetime = require('../node/lifetime');

function resolveModule(name) {
  const dirs = [process.env.WSX_NODE_MODULES, path.join(__dirname, '..', 'node_modules')].filter(Boolean);
  for (const d of dirs) {
    const p = path.join(d, name);
    if (fs.existsSync(p)) return p;
  }
  return name;
}

let chromium, playwrightVersion;
try {
  const p = resolveModule('playwright-core');
  ({ chromium } = require(p));
  try { playwrightVersion = require(path.join(p, 'package.json')).version; } catch { playwrightVersion = 'unknown'; }
} catch (e) {
  process.stderr.write(`run.js: cannot load playwright-core (run scripts/setup-peers): ${e.message}\n`);
  process.exit(2);
}

function usage(msg) {
  process.stderr.write(`run.js: ${msg}\n` +
    'usage: node run.js PAGE_URL|WS_URL [--screenshot PATH] [--ignore-https-errors] [--timeout SECS]\n');
  process.exit(2);
}

const opts = { page: null, screenshot: null, ignoreHttps: false, timeout: 60 };
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--screenshot') opts.screenshot = argv[++i];
    else if (a === '--ignore-https-errors') opts.ignoreHttps = true;
    else if (a === '--timeout') opts.timeout = Number(argv[++i]);
    else if (a === '-h' || a === '--help') usage('help');
    else if (a.startsWith('--')) usage(`unknown option ${a}`);
    else if (!opts.page) opts.page = a;
    else usage(`unexpected argument ${a}`);
  }
  if (!opts.page) usage('missing PAGE_URL');
  if (!(opts.timeout > 0)) usage('bad --timeout');
  if (/^wss?:\/\//.test(opts.page)) {
    opts.page = url.pathToFileURL(path.join(__dirname, 'page.html')).href + '?ws=' + encodeURIComponent(opts.page);
  }
}

const executablePath = process.env.WSX_CHROMIUM || '/usr/bin/chromium';
const out = { runner: 'playwright-core', playwright: playwrightVersion, browser: null, page: opts.page, ok: false, results: null, console: [] };
let browser = null;

function finish(code) {
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(code);
}

// Hard limit for the whole run (browser start included), then the peer
// lifetime rules (stdin pipe closes → stop).
setTimeout(() => {
  out.error = out.error || `run.js time limit (${opts.timeout + 30} s)`;
  if (browser) browser.close().catch(() => {});
  finish(1);
}, (opts.timeout + 30) * 1000).unref();
lifetime.install('run.js', Math.max(opts.timeout + 60, 120), () => {
  process.stdout.write(JSON.stringify({ ...out, error: 'peer time limit or stdin closed before the run finished' }) + '\n');
}, 1);

async function main() {
  if (!fs.existsSync(executablePath)) throw new Error(`no Chromium at ${executablePath} (run scripts/setup-peers or set WSX_CHROMIUM)`);
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ];
  if (opts.ignoreHttps) args.push('--ignore-certificate-errors');
  // playwright gives launch() a fresh temporary --user-data-dir and removes it on close.
  browser = await chromium.launch({ executablePath, args, headless: true, chromiumSandbox: false, timeout: 30000 });
  out.browser = browser.version();
  const context = await browser.newContext({ ignoreHTTPSErrors: opts.ignoreHttps, viewport: { width: 900, height: 500 } });
  const page = await context.newPage();
  page.on('console', (m) => { if (out.console.length < 50) out.console.push(`${m.type()}: ${m.text()}`); });
  page.on('pageerror', (e) => { if (out.console.length < 50) out.console.push(`pageerror: ${e.message}`); });
  await page.goto(opts.page, { timeout: 30000 });
  try {
    await page.waitForFunction(() => window.wsxResults !== undefined, null, { timeout: opts.timeout * 1000, polling: 100 });
  } catch (e) {
    out.error = `window.wsxResults not set within ${opts.timeout} s`;
  }
  out.results = await page.evaluate(() => window.wsxResults === undefined ? null : window.wsxResults);
  out.ok = !!(out.results && out.results.ok === true);
  if (opts.screenshot) {
    try {
      await page.screenshot({ path: opts.screenshot, fullPage: true });
    } catch (e) {
      out.console.push(`screenshot failed: ${e.message}`);
    }
  }
  await browser.close();
  browser = null;
}

main().then(
  () => finish(out.ok ? 0 : 1),
  (e) => {
    out.error = `run.js: ${e && e.message ? e.message.split('\n')[0] : e}`;
    if (browser) browser.close().catch(() => {});
    finish(1);
  },
);
