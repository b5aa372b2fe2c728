// memdiag accuracy corpus: medium Buffers (64 KiB to 1 MiB) kept by one
// route after earlier frees, beside a route churning Buffers of the same
// sizes. No npm dependencies (plain http).
//
// glibc's malloc serves requests above its mmap threshold (128 KiB at start)
// with a fresh mmap; freeing such a chunk raises the threshold to its size
// (the dynamic mmap threshold). GET /churn allocates and frees Buffers up to
// 1 MiB, so after the warm-up the threshold is above 1 MiB and the Buffers
// GET /keep keeps come from the malloc heap (brk / arenas), reusing pages
// the churn freed: no new mapping marks them.
//
// Categories (categories.yaml) and their truth:
//   keep    GET /keep    retains one Buffer per request, sizes cycling
//                        64 KiB, 192 KiB, 512 KiB, 1 MiB
//   churn   GET /churn   retains nothing (the same sizes, dropped)
//   ping    GET /ping    retains nothing
//
// Env: PORT (required), TRUTH_FILE. Prints "listening <port>" when ready.
'use strict';
const http = require('http');
const truth = require('../lib/truth');

const port = Number(process.env.PORT);
if (!port) {
  console.error('node-buffers: set PORT to the port to listen on');
  process.exit(2);
}

const sizes = [64 << 10, 192 << 10, 512 << 10, 1 << 20];
const ops = { keep: 0, churn: 0, ping: 0 };
const kept = [];

function fill(buf, seed) {
  buf.fill((seed % 251) + 1); // nonzero: every page is written, so resident
  return buf;
}

const server = http.createServer((req, res) => {
  let body;
  if (req.url.startsWith('/keep')) {
    ops.keep++;
    kept.push(fill(Buffer.allocUnsafeSlow(sizes[ops.keep % sizes.length]), ops.keep));
    body = `kept ${kept.length}`;
  } else if (req.url.startsWith('/churn')) {
    ops.churn++;
    let sum = 0;
    for (const size of sizes) {
      const b = fill(Buffer.allocUnsafeSlow(size), ops.churn);
      sum += b[size - 1];
    }
    body = `churned ${sum}`;
  } else if (req.url.startsWith('/ping')) {
    ops.ping++;
    body = 'pong';
  } else {
    res.writeHead(404);
    res.end();
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});

// Truth: a kept Buffer costs its length (its backing store, outside the V8
// heap); the Buffer objects themselves (~100 bytes of JS heap each) are not
// counted: under 0.2% of a 64 KiB Buffer.
truth.install(() => ({
  keep: { ops: ops.keep, retained_bytes: kept.reduce((s, b) => s + b.length, 0) },
  churn: { ops: ops.churn, retained_bytes: 0 },
  ping: { ops: ops.ping, retained_bytes: 0 },
}));

server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
process.on('SIGTERM', () => process.exit(0));
