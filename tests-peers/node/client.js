#!/usr/bin/env node
'use strict';
// Node `ws` client for wsx interop tests: runs a fixed scenario against an
// ECHO server and prints one JSON line with the result of every step.
//
// usage: node client.js URL [--ca FILE] [--no-deflate] [--timeout SECS]
//        node client.js URL --close-test CODE REASON [--ca FILE] [--no-deflate]
//
// Scenario mode: steps run in order on one connection (see STEPS below);
// output: {"peer":"node-ws","version":..,"mode":"scenario","url":..,
//          "extensions":..,"protocol":..,"results":{step: "ok" | error text},
//          "passed":N,"failed":N,"ok":bool,"close":{"code","reason","wasClean"}|null}
// exit 0 only if every step is "ok".
//
// Close-test mode: connects, sends one text message, waits for its echo, then
// closes with CODE ("none" = a close frame without a body) and REASON; codes
// that ws refuses to send (1004-1006, 1015, < 1000, > 4999, ...) or reasons
// over 123 bytes are written as a raw masked close frame instead ("raw": true).
// output: {"peer":"node-ws","version":..,"mode":"close-test","url":..,
//          "sent":{"code":N|null,"reason":str,"raw":bool},"echo":"ok"|error,
//          "close":{"code":N,"reason":str,"wasClean":bool}|null,"ok":bool,"error":str?}
// `close` is what the server's close frame said (code 1005 = empty body,
// 1006 = no close frame at all). exit 0 if a close frame was received.

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const lifetime = require('./lifetime');

function resolveWs() {
  const dirs = [process.env.WSX_NODE_MODULES, path.join(__dirname, '..', 'node_modules')].filter(Boolean);
  for (const d of dirs) {
    const p = path.join(d, 'ws');
    if (fs.existsSync(p)) return p;
  }
  return 'ws';
}
let WebSocket, wsVersion;
try {
  const wsPath = resolveWs();
  WebSocket = require(wsPath);
  try { wsVersion = require(path.join(wsPath, 'package.json')).version; } catch { wsVersion = 'unknown'; }
} catch (e) {
  process.stderr.write(`client.js: cannot load ws (run scripts/setup-peers): ${e.message}\n`);
  process.exit(2);
}

const STEP_TIMEOUT_MS = 30000;
const MAX_PAYLOAD = 64 * 1024 * 1024;

function usage(msg) {
  process.stderr.write(`client.js: ${msg}\n` +
    'usage: node client.js URL [--ca FILE] [--no-deflate] [--timeout SECS]\n' +
    '       node client.js URL --close-test CODE REASON [--ca FILE] [--no-deflate]\n');
  process.exit(2);
}

const opts = { url: null, ca: null, deflate: true, timeout: 0, closeTest: null };
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--ca') opts.ca = argv[++i];
    else if (a === '--no-deflate') opts.deflate = false;
    else if (a === '--timeout') opts.timeout = Number(argv[++i]);
    else if (a === '--close-test') {
      if (i + 2 >= argv.length) usage('--close-test needs CODE and REASON');
      const c = argv[++i];
      const code = c === 'none' ? null : Number(c);
      if (code !== null && !(Number.isInteger(code) && code >= 0 && code <= 65535)) usage(`bad close code ${c}`);
      opts.closeTest = { code, reason: argv[++i] };
    } else if (a === '-h' || a === '--help') usage('help');
    else if (a.startsWith('--')) usage(`unknown option ${a}`);
    else if (!opts.url) opts.url = a;
    else usage(`unexpected argument ${a}`);
  }
  if (!opts.url) usage('missing URL');
}

// ---- connection with an ordered inbox -------------------------------------

class Peer {
  constructor(ws) {
    this.ws = ws;
    this.inbox = [];
    this.waiters = [];
    this.closeInfo = null;
    this.closeWaiters = [];
    ws.on('message', (data, isBinary) => {
      this.push({ data: Buffer.isBuffer(data) ? data : Buffer.concat(data), isBinary });
    });
    ws.addEventListener('close', (ev) => {
      this.closeInfo = { code: ev.code, reason: ev.reason, wasClean: ev.wasClean };
      for (const w of this.waiters.splice(0)) w.reject(new Error(`connection closed (code ${ev.code}, reason ${JSON.stringify(ev.reason)})`));
      for (const w of this.closeWaiters.splice(0)) w(this.closeInfo);
    });
    ws.on('error', (err) => { this.lastError = err.message; });
  }

  push(msg) {
    const w = this.waiters.shift();
    if (w) w.resolve(msg); else this.inbox.push(msg);
  }

  next(what) {
    if (this.inbox.length) return Promise.resolve(this.inbox.shift());
    if (this.closeInfo) return Promise.reject(new Error(`connection closed (code ${this.closeInfo.code})`));
    return new Promise((resolve, reject) => {
      const entry = { resolve: (m) => { clearTimeout(t); resolve(m); }, reject: (e) => { clearTimeout(t); reject(e); } };
      const t = setTimeout(() => {
        const i = this.waiters.indexOf(entry);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`timeout after ${STEP_TIMEOUT_MS} ms waiting for ${what}`));
      }, STEP_TIMEOUT_MS);
      this.waiters.push(entry);
    });
  }

  closed(ms) {
    if (this.closeInfo) return Promise.resolve(this.closeInfo);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timeout after ${ms} ms waiting for the close`)), ms);
      this.closeWaiters.push((info) => { clearTimeout(t); resolve(info); });
    });
  }

  sendP(data, options) {
    return new Promise((resolve, reject) => {
      this.ws.send(data, options, (err) => (err ? reject(err) : resolve()));
    });
  }
}

function connect() {
  const wsOpts = {
    perMessageDeflate: opts.deflate,
    maxPayload: MAX_PAYLOAD,
    handshakeTimeout: 10000,
  };
  if (opts.ca) wsOpts.ca = fs.readFileSync(opts.ca);
  const ws = new WebSocket(opts.url, wsOpts);
  const peer = new Peer(ws);
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(peer));
    ws.once('error', (err) => reject(err));
    ws.once('unexpected-response', (req, res) => {
      reject(new Error(`unexpected HTTP response ${res.statusCode}`));
      req.destroy();
    });
  });
}

// ---- checks -----------------------------------------------------------------

function describe(buf, isBinary) {
  const kind = isBinary ? 'binary' : 'text';
  return `${kind} of ${buf.length} bytes`;
}

function expectSame(got, want, wantBinary) {
  if (got.isBinary !== wantBinary) {
    throw new Error(`expected ${wantBinary ? 'binary' : 'text'}, got ${describe(got.data, got.isBinary)}`);
  }
  if (!got.data.equals(want)) {
    let i = 0;
    while (i < got.data.length && i < want.length && got.data[i] === want[i]) i++;
    throw new Error(`payload mismatch: sent ${want.length} bytes, got ${got.data.length} bytes, first difference at byte ${i}`);
  }
}

async function echoStep(peer, payload, isBinary) {
  const buf = Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'utf8');
  await peer.sendP(isBinary ? buf : payload, { binary: isBinary });
  expectSame(await peer.next(`the echo of ${describe(buf, isBinary)}`), buf, isBinary);
}

async function fragmentedStep(peer, parts, isBinary) {
  for (let i = 0; i < parts.length; i++) {
    await peer.sendP(parts[i], { binary: isBinary, fin: i === parts.length - 1 });
  }
  const whole = Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p, 'utf8'))));
  expectSame(await peer.next('the echo of a fragmented message'), whole, isBinary);
}

const UTF8_TEXT = 'héllo wörld · κόσμε · привет · 日本語 · 🦀🚀 · \u{10FFFF}';
const PING_PAYLOAD = Buffer.from('wsx-ping-\x00\x01\xfe\xff', 'latin1');

const STEPS = [
  ['text', (p) => echoStep(p, 'hello wsx', false)],
  ['binary', (p) => echoStep(p, Buffer.from([...Array(256).keys()]), true)],
  ['empty_text', (p) => echoStep(p, '', false)],
  ['empty_binary', (p) => echoStep(p, Buffer.alloc(0), true)],
  ['size_125', (p) => echoStep(p, crypto.randomBytes(125), true)],
  ['size_126', (p) => echoStep(p, crypto.randomBytes(126), true)],
  ['size_65535', (p) => echoStep(p, crypto.randomBytes(65535), true)],
  ['size_65536', (p) => echoStep(p, crypto.randomBytes(65536), true)],
  ['size_16mib', (p) => echoStep(p, crypto.randomBytes(16 * 1024 * 1024), true)],
  ['utf8_text', (p) => echoStep(p, UTF8_TEXT, false)],
  ['fragmented', (p) => fragmentedStep(p, ['frag', 'ment', 'ed ✓'], false)],
  ['fragmented_binary', (p) => fragmentedStep(p, [crypto.randomBytes(1000), Buffer.alloc(0), crypto.randomBytes(70000)], true)],
  ['ping', async (p) => {
    const got = new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timeout after ${STEP_TIMEOUT_MS} ms waiting for the pong`)), STEP_TIMEOUT_MS);
      p.ws.once('pong', (data) => { clearTimeout(t); resolve(data); });
    });
    p.ws.ping(PING_PAYLOAD);
    const data = await got;
    if (!data.equals(PING_PAYLOAD)) {
      throw new Error(`pong payload ${data.toString('hex')} != ping payload ${PING_PAYLOAD.toString('hex')}`);
    }
  }],
  ['close', async (p) => {
    p.ws.close(4001, 'bye');
    const info = await p.closed(STEP_TIMEOUT_MS);
    const errs = [];
    if (info.code !== 4001) errs.push(`close code ${info.code} != 4001`);
    if (info.reason !== 'bye') errs.push(`close reason ${JSON.stringify(info.reason)} != "bye"`);
    if (!info.wasClean) errs.push('closing handshake not clean');
    if (errs.length) throw new Error(errs.join('; '));
  }],
];

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function runScenario() {
  const out = {
    peer: 'node-ws', version: wsVersion, mode: 'scenario', url: opts.url,
    extensions: null, protocol: null, results: {}, passed: 0, failed: 0, ok: false, close: null,
  };
  let peer;
  try {
    peer = await connect();
  } catch (e) {
    out.error = `connect failed: ${e.message}`;
    for (const [name] of STEPS) out.results[name] = `not run: ${out.error}`;
    out.failed = STEPS.length;
    return out;
  }
  out.extensions = peer.ws.extensions;
  out.protocol = peer.ws.protocol;
  for (const [name, fn] of STEPS) {
    try {
      await fn(peer);
      out.results[name] = 'ok';
    } catch (e) {
      out.results[name] = String(e && e.message ? e.message : e);
    }
  }
  out.close = peer.closeInfo;
  if (peer.ws.readyState !== WebSocket.CLOSED) peer.ws.terminate();
  out.passed = Object.values(out.results).filter((v) => v === 'ok').length;
  out.failed = STEPS.length - out.passed;
  out.ok = out.failed === 0;
  return out;
}

function rawCloseFrame(code, reason) {
  const body = code === null ? Buffer.alloc(0)
    : Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason, 'utf8')]);
  let head;
  if (body.length < 126) head = Buffer.from([0x88, 0x80 | body.length]);
  else { head = Buffer.from([0x88, 0x80 | 126, 0, 0]); head.writeUInt16BE(body.length, 2); }
  const mask = crypto.randomBytes(4);
  const masked = Buffer.from(body);
  for (let i = 0; i < masked.length; i++) masked[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, masked]);
}

async function runCloseTest() {
  const { code, reason } = opts.closeTest;
  const out = {
    peer: 'node-ws', version: wsVersion, mode: 'close-test', url: opts.url,
    sent: { code, reason, raw: false }, echo: null, close: null, ok: false,
  };
  let peer;
  try {
    peer = await connect();
  } catch (e) {
    out.error = `connect failed: ${e.message}`;
    return out;
  }
  try {
    await echoStep(peer, 'close-test', false);
    out.echo = 'ok';
  } catch (e) {
    out.echo = e.message;
  }
  try {
    if (code === null) peer.ws.close();
    else peer.ws.close(code, reason);
  } catch (e) {
    // ws refuses codes/reasons that RFC 6455 forbids on the wire: send them raw.
    out.sent.raw = true;
    peer.ws._socket.write(rawCloseFrame(code, reason));
  }
  try {
    out.close = await peer.closed(15000);
  } catch (e) {
    out.error = e.message;
    peer.ws.terminate();
  }
  out.ok = !!out.close && out.close.code !== 1006;
  return out;
}

lifetime.install('client.js', opts.timeout, () => {
  emit({ peer: 'node-ws', mode: opts.closeTest ? 'close-test' : 'scenario', url: opts.url, ok: false, error: 'peer time limit or stdin closed before the run finished' });
}, 1);

(opts.closeTest ? runCloseTest() : runScenario()).then(
  (out) => { emit(out); process.exit(out.ok ? 0 : 1); },
  (e) => { emit({ peer: 'node-ws', url: opts.url, ok: false, error: `internal error: ${e.stack || e}` }); process.exit(1); },
);
