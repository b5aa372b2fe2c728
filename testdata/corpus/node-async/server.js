// memdiag accuracy corpus: a leak in an async continuation after an
// outbound HTTP call. GET /enrich calls the upstream (upstream.js, its own
// process, on UPSTREAM_PORT) and, when the answer arrives, keeps it as a
// string; GET /lookup makes the same call and keeps nothing. The bytes are
// allocated on the event loop after the outbound response is read, while the
// thread is busy with the outbound socket, not the served one.
//
// Categories (categories.yaml) and their truth:
//   enrich    GET /enrich   retains the upstream's body (24 KiB string) + an id
//   lookup    GET /lookup   retains nothing
// The outbound calls belong to the requests that make them, so the truth has
// no category of its own for them; categories.yaml names the ones memdiag
// counts apart (`upstream`: calls written while no request is current) so
// they show up by name in the tables, and must retain nothing.
//
// Env: PORT, UPSTREAM_PORT (required), TRUTH_FILE. Prints "listening <port>".
'use strict';
const http = require('http');
const truth = require('../lib/truth');

const port = Number(process.env.PORT);
const upstreamPort = Number(process.env.UPSTREAM_PORT);
if (!port || !upstreamPort) {
  console.error('node-async: set PORT and UPSTREAM_PORT');
  process.exit(2);
}

// One connection per call: each outbound call is its own connect, so
// memdiag sees one outbound op per call.
const agent = new http.Agent({ keepAlive: false });
function fetchData(n) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: upstreamPort, path: `/data?n=${n}`, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks)));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

const ops = { enrich: 0, lookup: 0 };
const cache = new Map(); // enrich's leak: never evicted
let failures = 0;

const server = http.createServer(async (req, res) => {
  let body;
  try {
    if (req.url.startsWith('/enrich')) {
      const n = ++ops.enrich;
      const data = await fetchData(n);
      // The continuation: a flat one-byte string, kept forever.
      cache.set(n, `${n}:` + data.toString('latin1'));
      body = `enriched ${cache.size}`;
    } else if (req.url.startsWith('/lookup')) {
      const n = ++ops.lookup;
      const data = await fetchData(n);
      const s = `${n}:` + data.toString('latin1');
      body = `looked up ${s.length}`;
    } else {
      res.writeHead(404);
      res.end();
      return;
    }
  } catch (err) {
    failures++;
    res.writeHead(502);
    res.end(String(err));
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});

// Truth: each kept value is `${n}:` + a 24 KiB Latin-1 string. V8 makes the
// concatenation a ConsString (32 bytes) over the short prefix and the flat
// 24 KiB string (16 + length, rounded to 8); the prefix is a short flat
// string (16 + its length, rounded to 8). The Map entry (3 slots of 8 bytes,
// with the OrderedHashMap's spare capacity not counted) and the Smi key
// are negligible: counted as 24. Exact as long as V8 keeps the cons string
// unflattened, which it does for strings never indexed into.
truth.install(() => {
  let kept = 0;
  for (const [n, v] of cache) {
    const prefix = String(n).length + 1;
    kept += 32 + truth.oneByteString(prefix) + truth.oneByteString(v.length - prefix) + 24;
  }
  return {
    enrich: { ops: ops.enrich, retained_bytes: kept },
    lookup: { ops: ops.lookup, retained_bytes: 0 },
  };
});

server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
process.on('SIGTERM', () => process.exit(0));
