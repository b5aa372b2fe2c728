// leaky.js: a service with one known leak, for heapsnap's tests.
//
//   node leaky.js OUTDIR KIND COUNT
//
// KIND is one of
//   map        a Map keyed by session id in app.cache.sessions (class Cache),
//              each value {user, blob} with a 16 KiB string blob
//   buffers    an array app.uploads of 16 KiB Buffers
//   listeners  a listener list held only by a closure (bus.on), each
//              listener a closure over a 16 KiB string
//
// It writes OUTDIR/a.heapsnapshot, leaks COUNT items, writes
// OUTDIR/b.heapsnapshot, then prints one JSON line on stdout:
// {"kept": bytes of payload the leak holds, ...}. No timers, no network.
'use strict';
const v8 = require('v8');
const path = require('path');

const [outdir, kind, countArg] = process.argv.slice(2);
const count = Number(countArg);
const PAYLOAD = 16 * 1024;

class Cache {
  constructor() { this.sessions = new Map(); }
}

function makeBus() {
  const listeners = [];
  return {
    on(fn) { listeners.push(fn); },
    emit(x) { for (const fn of listeners) fn(x); },
  };
}

const app = { cache: new Cache(), uploads: [], bus: makeBus() };
globalThis.app = app;

// Payload strings are built from distinct content so V8 cannot share them.
function payload(i) {
  const s = ('' + i).padStart(8, '0');
  return s.repeat(PAYLOAD / 8).split('').join('').slice(0, PAYLOAD);
}

function leak(i) {
  switch (kind) {
    case 'map':
      app.cache.sessions.set('session-' + i, { user: i, blob: payload(i) });
      return PAYLOAD;
    case 'buffers': {
      const b = Buffer.alloc(PAYLOAD, i & 0xff);
      app.uploads.push(b);
      return PAYLOAD;
    }
    case 'listeners': {
      const text = payload(i);
      app.bus.on((x) => x === text);
      return PAYLOAD;
    }
  }
  throw new Error('unknown kind ' + kind);
}

// Warm up: one item, so the structures and their code exist in A.
leak(-1);
v8.writeHeapSnapshot(path.join(outdir, 'a.heapsnapshot'));
let kept = 0;
for (let i = 0; i < count; i++) kept += leak(i);
v8.writeHeapSnapshot(path.join(outdir, 'b.heapsnapshot'));
process.stdout.write(JSON.stringify({ kind, count, kept }) + '\n');
