#!/usr/bin/env node
'use strict';
// Many Node `ws` clients in one topic of a wsx server, for the topics interop test.
//
// usage: node subscribers.js URL --count N --expect M [--no-deflate] [--timeout SECS]
//
// Opens N connections to URL. Each waits for the server's "ready" (sent once it is
// subscribed); when all are ready, prints `READY N` on stdout. Then each must receive M
// messages "seq I LEN PAYLOAD" with I = 0, 1, ..., M-1 in order and PAYLOAD = LEN times the
// letter 'a' + I % 26. Prints one JSON line {"ok","connections","received":[per connection],
// "extensions":[distinct negotiated],"errors":[..]} and exits 0 only if every connection got
// every message, in order and intact.

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
const WebSocket = require(resolveWs());

const opts = { url: null, count: 1, expect: 0, deflate: true, timeout: 0 };
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--count') opts.count = Number(argv[++i]);
    else if (a === '--expect') opts.expect = Number(argv[++i]);
    else if (a === '--no-deflate') opts.deflate = false;
    else if (a === '--timeout') opts.timeout = Number(argv[++i]);
    else if (!a.startsWith('--') && !opts.url) opts.url = a;
    else { process.stderr.write(`subscribers.js: bad argument ${a}\n`); process.exit(2); }
  }
  if (!opts.url || !(opts.count >= 1) || !(opts.expect >= 0)) {
    process.stderr.write('usage: node subscribers.js URL --count N --expect M [--no-deflate]\n');
    process.exit(2);
  }
}

const result = { ok: false, connections: opts.count, received: [], extensions: [], errors: [] };
function finish() {
  result.ok = result.errors.length === 0 && result.received.every((n) => n === opts.expect);
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.ok ? 0 : 1);
}
lifetime.install('subscribers.js', opts.timeout, () => {
  result.errors.push('time limit or stdin closed');
  process.stdout.write(JSON.stringify(result) + '\n');
}, 1);

function check(i, text) {
  const m = /^seq (\d+) (\d+) ([a-z]*)$/.exec(text);
  if (!m) return `message ${i}: not "seq I LEN PAYLOAD": ${text.slice(0, 40)}`;
  if (Number(m[1]) !== i) return `message ${i}: got seq ${m[1]} (lost or reordered)`;
  const letter = String.fromCharCode(97 + (i % 26));
  if (m[3].length !== Number(m[2]) || m[3] !== letter.repeat(Number(m[2]))) return `message ${i}: payload damaged`;
  return null;
}

let ready = 0;
let done = 0;
const extensions = new Set();
for (let c = 0; c < opts.count; c++) {
  result.received.push(0);
  const ws = new WebSocket(opts.url, { perMessageDeflate: opts.deflate, maxPayload: 16 << 20 });
  let greeted = false;
  ws.on('open', () => extensions.add(ws.extensions || ''));
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? null : data.toString();
    if (!greeted) {
      if (text !== 'ready') { result.errors.push(`connection ${c}: first message not "ready"`); return; }
      greeted = true;
      if (++ready === opts.count) process.stdout.write(`READY ${opts.count}\n`);
      return;
    }
    const i = result.received[c];
    const bad = text === null ? `message ${i}: binary` : check(i, text);
    if (bad) {
      if (result.errors.length < 20) result.errors.push(`connection ${c}: ${bad}`);
      ws.terminate();
      return;
    }
    result.received[c] = i + 1;
    if (i + 1 === opts.expect) {
      ws.close(1000);
      if (++done === opts.count) {
        result.extensions = [...extensions];
        finish();
      }
    }
  });
  ws.on('close', (code) => {
    if (result.received[c] < opts.expect && result.errors.length < 20) {
      result.errors.push(`connection ${c}: closed with ${code} after ${result.received[c]} messages`);
    }
  });
  ws.on('error', (e) => { if (result.errors.length < 20) result.errors.push(`connection ${c}: ${e.message}`); });
}
