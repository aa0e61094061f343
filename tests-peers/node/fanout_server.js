#!/usr/bin/env node
'use strict';
// Node `ws` fan-out server for scripts/bench-fanout, written the way Node users write it.
//
// usage: node fanout_server.js [--port N] [--timeout SECS]
//
// The request path says what a connection does, as in crates/wsx/examples/fanout_server.rs:
//   /sub/<topic>  joins the topic's set of clients; what it sends is ignored
//   /pub/<topic>  every message it sends goes to each client of the topic with
//                 `clients.forEach(c => c.send(data))` (ws frames and writes it per client)
//   other paths   idle connections (the baseline for memory per subscription)
// Binds 127.0.0.1 (port 0 = any free port unless --port), prints `READY <port>` once
// listening. permessage-deflate is off. Exits after SECS (default 120) or when a piped
// stdin closes (see lifetime.js).

const fs = require('fs');
const path = require('path');
const http = require('http');

let WebSocket, WebSocketServer;
try {
  ({ WebSocket, WebSocketServer } = require(resolveWs()));
} catch (e) {
  process.stderr.write(`fanout_server.js: cannot load ws (run scripts/setup-peers): ${e.message}\n`);
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
  process.stderr.write(`fanout_server.js: ${msg}\nusage: node fanout_server.js [--port N] [--timeout SECS]\n`);
  process.exit(2);
}

const opts = { port: 0, timeout: 0 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--port') opts.port = Number(argv[++i]);
  else if (a === '--timeout') opts.timeout = Number(argv[++i]);
  else usage(`unknown argument ${a}`);
}
if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage('bad --port');

const server = http.createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false });
// topic name -> Set of subscribed clients
const topics = new Map();

function clientsOf(name) {
  let set = topics.get(name);
  if (!set) {
    set = new Set();
    topics.set(name, set);
  }
  return set;
}

wss.on('connection', (ws, req) => {
  const url = req.url || '/';
  ws.on('error', (err) => process.stderr.write(`fanout_server.js: ${err.message}\n`));
  if (url.startsWith('/sub/')) {
    const clients = clientsOf(url.slice(5));
    clients.add(ws);
    ws.on('close', () => clients.delete(ws));
  } else if (url.startsWith('/pub/')) {
    const clients = clientsOf(url.slice(5));
    ws.on('message', (data, isBinary) => {
      clients.forEach((c) => {
        if (c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
      });
    });
  }
});

lifetime.install('fanout_server.js', opts.timeout, () => {
  for (const c of wss.clients) c.terminate();
});

server.listen(opts.port, '127.0.0.1', () => {
  process.stdout.write(`READY ${server.address().port}\n`);
});
server.on('error', (err) => {
  process.stderr.write(`fanout_server.js: ${err.message}\n`);
  process.exit(2);
});
