// memdiag accuracy corpus: a service that keeps nothing. GET /item/:id
// answers from a bounded cache (512 entries of 4 KiB) filled during the
// warm-up and never grown past its bound; GET /render builds and drops
// ~1 MB of objects and JSON; GET /blob builds and drops a 256 KiB Buffer;
// GET /ping is cheap. The right verdict: no operation retains memory.
//
// Categories (categories.yaml) and their truth:
//   item    GET /item/:id  retains nothing new (the cache is full: every id
//                          in 0..511 is a hit; other ids are refused)
//   render  GET /render    retains nothing
//   blob    GET /blob      retains nothing
//   ping    GET /ping      retains nothing
//
// Env: PORT (required), TRUTH_FILE. Prints "listening <port>" when ready.
'use strict';
const http = require('http');
const truth = require('../lib/truth');

const port = Number(process.env.PORT);
if (!port) {
  console.error('leak-free: set PORT to the port to listen on');
  process.exit(2);
}

const CACHE_ENTRIES = 512;
const ENTRY_BYTES = 4096;
const cache = new Map();
const ops = { item: 0, render: 0, blob: 0, ping: 0 };

const server = http.createServer((req, res) => {
  let body;
  let status = 200;
  const m = /^\/item\/(\d+)/.exec(req.url);
  if (m) {
    ops.item++;
    const id = Number(m[1]);
    if (id >= CACHE_ENTRIES) {
      status = 404;
      body = 'no such item';
    } else {
      let v = cache.get(id);
      if (v === undefined) {
        v = `item ${id}:` + 'i'.repeat(ENTRY_BYTES);
        cache.set(id, v);
      }
      body = v.slice(0, 64);
    }
  } else if (req.url.startsWith('/render')) {
    ops.render++;
    const rows = [];
    for (let i = 0; i < 4000; i++) rows.push({ i, name: `row ${i}`, text: 'render me please '.repeat(10) });
    body = `rendered ${JSON.stringify(rows).length}`;
  } else if (req.url.startsWith('/blob')) {
    ops.blob++;
    const b = Buffer.alloc(256 * 1024, ops.blob % 250 + 1);
    body = `blob ${b[b.length - 1]}`;
  } else if (req.url.startsWith('/ping')) {
    ops.ping++;
    body = 'pong';
  } else {
    res.writeHead(404);
    res.end();
    return;
  }
  res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});

// Truth: item's retained bytes are the cache's strings (a cons string of a
// short prefix and a flat 4 KiB one-byte string, counted as their sizes:
// 32 + (16 + prefix) + (16 + 4096), rounded to 8, and 24 for the Map entry).
// The cache is full after the warm-up, so the harness's difference
// truth1 - truth0 is 0 for every category.
truth.install(() => {
  let cached = 0;
  for (const [id, v] of cache) {
    const prefix = v.length - ENTRY_BYTES;
    cached += 32 + truth.oneByteString(prefix) + truth.oneByteString(ENTRY_BYTES) + 24;
  }
  return {
    item: { ops: ops.item, retained_bytes: cached },
    render: { ops: ops.render, retained_bytes: 0 },
    blob: { ops: ops.blob, retained_bytes: 0 },
    ping: { ops: ops.ping, retained_bytes: 0 },
  };
});

server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
process.on('SIGTERM', () => process.exit(0));
