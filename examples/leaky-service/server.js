// memdiag's reference service: an Express app whose leaks are known, so
// memdiag's attribution can be checked against the truth.
//
// Routes                 retains per request (true leak)
//   GET  /api/records    nothing (builds and sends 200 records)
//   GET  /api/voice/:id  VOICE_RETAIN_BYTES (default 2 KiB) Buffer, kept forever
//   GET  /api/alfred/*   nothing (a transient 64 KiB Buffer)
//   POST /graphql        nothing (parses the body, answers)
//   GET  /media/*        nothing (sends a shared 64 KiB Buffer)
//   GET  /stats          counters, for tests
// Sync cycle, every SYNC_INTERVAL_MS (default 2000): GET /sync/changes then
// POST /sync/ack to the peer over HTTP (outbound, port PEER_PORT); each
// cycle keeps SYNC_RETAIN_BYTES (default 4 MiB) of Buffers forever.
//
// CLASSIC_MIDDLEWARE=1 turns on the classic in-process diagnostics
// middleware (memoryUsage before/after each request, setImmediate, last
// 100 per category, threshold logging), for benchmarks against memdiag.
// HTTPS=1 with TLS_CERT and TLS_KEY serves HTTPS instead of HTTP.
// SIGUSR2 writes the ground truth (ops and bytes kept per category, for
// memdiag's accuracy harness) to the file named by TRUTH_FILE.
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');
const express = require('express');

const port = Number(process.env.PORT || 3000);
const peerPort = Number(process.env.PEER_PORT || 8765);
const syncInterval = Number(process.env.SYNC_INTERVAL_MS || 2000);
const syncRetain = Number(process.env.SYNC_RETAIN_BYTES || 4 * 1024 * 1024);
const voiceRetain = Number(process.env.VOICE_RETAIN_BYTES || 2 * 1024);

const app = express();
const stats = { records: 0, voice: 0, alfred: 0, graphql: 0, media: 0, cycles: 0, syncErrors: 0 };

if (process.env.CLASSIC_MIDDLEWARE === '1') {
  app.use(require('./classic-middleware'));
}

const records = Array.from({ length: 200 }, (_, i) => ({ id: i, name: `record-${i}`, tags: ['a', 'b', 'c'], score: i * 1.5 }));
app.get('/api/records', (req, res) => {
  stats.records++;
  const limit = Math.min(Number(req.query.limit) || 200, 200);
  res.json(records.slice(0, limit).map((r) => ({ ...r, at: Date.now() })));
});

const voiceKept = [];
app.get('/api/voice/:id', (req, res) => {
  stats.voice++;
  voiceKept.push(Buffer.alloc(voiceRetain, (stats.voice % 255) + 1)); // the leak: nonzero, so every page is written
  res.json({ id: req.params.id, kept: voiceKept.length });
});

app.get('/api/alfred/*', (req, res) => {
  stats.alfred++;
  const scratch = Buffer.alloc(64 * 1024, 1);
  res.json({ path: req.path, sum: scratch[0] + scratch[scratch.length - 1] });
});

app.post('/graphql', express.json(), (req, res) => {
  stats.graphql++;
  res.json({ data: { echo: req.body && req.body.query ? String(req.body.query).length : 0 } });
});

const media = Buffer.alloc(64 * 1024, 'm');
app.get('/media/*', (req, res) => {
  stats.media++;
  res.type('application/octet-stream').send(media);
});

app.get('/stats', (req, res) => res.json({ ...stats, rss: process.memoryUsage().rss, arrayBuffers: process.memoryUsage().arrayBuffers }));

// The sync cycle: outbound HTTP to the peer, keeping what it got.
const syncKept = [];
const agent = new http.Agent({ keepAlive: false });
function call(method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: peerPort, method, path, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks)));
    });
    req.on('error', reject);
    req.end(body);
  });
}
async function syncCycle() {
  try {
    const changes = await call('GET', '/sync/changes');
    const kept = Buffer.alloc(syncRetain, (syncKept.length % 255) + 1); // the leak: nonzero, so every page is written
    syncKept.push(kept);
    await call('POST', '/sync/ack', JSON.stringify({ n: syncKept.length }));
    stats.cycles++;
  } catch (err) {
    stats.syncErrors++;
  }
}
if (syncInterval > 0) {
  setInterval(syncCycle, syncInterval);
}

// Ground truth for memdiag's accuracy harness (testdata/corpus, accuracy/):
// on SIGUSR2, write {"categories": {name: {ops, retained_bytes}},
// "self_check": {...}} to TRUTH_FILE atomically (temp file, then rename).
// A kept Buffer costs its length (its backing store; the Buffer objects,
// ~100 bytes of JS heap each, are not counted: 5% of a 2 KiB voice Buffer,
// 0.002% of a sync cycle's). Ops are cumulative since start; a sync cycle
// counts once it completed. self_check, with node --expose-gc: heapUsed +
// arrayBuffers after a full gc, to check the truth's growth against.
process.on('SIGUSR2', () => {
  const file = process.env.TRUTH_FILE;
  if (!file) {
    console.error('SIGUSR2: set TRUTH_FILE to the path the truth should be written to');
    return;
  }
  const sum = (bufs) => bufs.reduce((s, b) => s + b.length, 0);
  const categories = {
    api_records: { ops: stats.records, retained_bytes: 0 },
    api_voice: { ops: stats.voice, retained_bytes: sum(voiceKept) },
    api_alfred: { ops: stats.alfred, retained_bytes: 0 },
    graphql_query: { ops: stats.graphql, retained_bytes: 0 },
    static_media: { ops: stats.media, retained_bytes: 0 },
    gun_sync: { ops: stats.cycles, retained_bytes: sum(syncKept) },
  };
  const selfCheck = { method: 'v8 heapUsed + arrayBuffers after a full gc (needs --expose-gc)' };
  if (typeof global.gc === 'function') {
    global.gc();
    global.gc();
    const m = process.memoryUsage();
    Object.assign(selfCheck, { bytes: m.heapUsed + m.arrayBuffers, heap_used: m.heapUsed, array_buffers: m.arrayBuffers, rss: m.rss });
  } else {
    selfCheck.error = 'run node with --expose-gc';
  }
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ categories, self_check: selfCheck }));
  fs.renameSync(tmp, file);
});

let server;
if (process.env.HTTPS === '1') {
  server = https.createServer({ cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY) }, app);
} else {
  server = http.createServer(app);
}
server.keepAliveTimeout = 5000;
server.listen(port, '127.0.0.1', () => {
  console.log(`leaky-service listening on 127.0.0.1:${port} (pid ${process.pid})`);
});
process.on('SIGTERM', () => process.exit(0));
