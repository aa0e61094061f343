#!/usr/bin/env node
'use strict';
// Node `ws` echo server for wsx interop tests.
//
// usage: node echo_server.js [--port N] [--tls CERT KEY] [--deflate] [--timeout SECS] [--corrupt]
//
// Binds 127.0.0.1 (port 0 = any free port unless --port), prints
// `READY <port>` on stdout once listening, then echoes every message with its
// type (text stays text, binary stays binary). ws itself answers pings and
// echoes the peer's close code and reason. permessage-deflate is off unless
// --deflate. maxPayload is 64 MiB. Exits after SECS (default 120) or when a
// piped stdin closes (see lifetime.js).
//
// --corrupt (only for checking that the clients detect failures): flips the
// last byte of every binary echo, appends "!" to every text echo, and answers
// a close with 4999 "corrupt".

const fs = require('fs');
const http = require('http');
const https = require('https');
const path = require('path');

let WebSocketServer;
try {
  ({ WebSocketServer } = require(resolveWs()));
} catch (e) {
  process.stderr.write(`echo_server.js: cannot load ws (run scripts/setup-peers): ${e.message}\n`);
  process.exit(2);
}
const lifetime = require('./lifetime');

function resolveWs() {
  const dirs = [process.env.WSX_NODE_MODULES, path.join(__dirname, '..', 'node_modules')].filter(Boolean);
  for (const d of dirs) {
    const p = path.join(d, 'ws');
    if (fs.existsSync(p)) return p;
  }
  return 'ws';
}

function usage(msg) {
  process.stderr.write(`echo_server.js: ${msg}\n` +
    'usage: node echo_server.js [--port N] [--tls CERT KEY] [--deflate] [--timeout SECS] [--corrupt]\n');
  process.exit(2);
}

const opts = { port: 0, tls: null, deflate: false, timeout: 0, corrupt: false };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--port') opts.port = Number(argv[++i]);
  else if (a === '--tls') { opts.tls = { cert: argv[++i], key: argv[++i] }; }
  else if (a === '--deflate') opts.deflate = true;
  else if (a === '--timeout') opts.timeout = Number(argv[++i]);
  else if (a === '--corrupt') opts.corrupt = true;
  else if (a === '-h' || a === '--help') usage('help');
  else usage(`unknown argument ${a}`);
}
if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage('bad --port');
if (opts.tls && (!opts.tls.cert || !opts.tls.key)) usage('--tls needs CERT and KEY');

const server = opts.tls
  ? https.createServer({ cert: fs.readFileSync(opts.tls.cert), key: fs.readFileSync(opts.tls.key) })
  : http.createServer();
server.on('request', (req, res) => {
  res.writeHead(426, { 'Content-Type': 'text/plain' });
  res.end('WebSocket echo server: upgrade required\n');
});

const wss = new WebSocketServer({
  server,
  maxPayload: 64 * 1024 * 1024,
  perMessageDeflate: opts.deflate,
});

wss.on('connection', (ws, req) => {
  const who = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
  if (process.env.WSX_PEER_DEBUG) process.stderr.write(`echo_server.js: open ${who} ext=${ws.extensions}\n`);
  ws.on('message', (data, isBinary) => {
    if (opts.corrupt) {
      if (isBinary && data.length > 0) data[data.length - 1] ^= 0x01;
      if (!isBinary) data = Buffer.concat([data, Buffer.from('!')]);
    }
    ws.send(data, { binary: isBinary });
  });
  if (opts.corrupt) {
    // Answer the client's close with another code than the one it sent.
    // ws echoes a close by calling ws.close(code, reason) itself.
    const close = ws.close.bind(ws);
    ws.close = () => close(4999, 'corrupt');
  }
  ws.on('error', (err) => {
    process.stderr.write(`echo_server.js: ${who}: ${err.message}\n`);
  });
  ws.on('close', (code, reason) => {
    if (process.env.WSX_PEER_DEBUG) process.stderr.write(`echo_server.js: close ${who} ${code} ${reason}\n`);
  });
});

lifetime.install('echo_server.js', opts.timeout, () => {
  for (const c of wss.clients) c.terminate();
});

server.listen(opts.port, '127.0.0.1', () => {
  process.stdout.write(`READY ${server.address().port}\n`);
});
server.on('error', (err) => {
  process.stderr.write(`echo_server.js: ${err.message}\n`);
  process.exit(2);
});
