// Ground truth for memdiag's accuracy corpus (Node services).
//
// install(categories) makes SIGUSR2 write the service's truth to the file
// named by TRUTH_FILE, atomically (a temp file in the same directory, then
// rename):
//
//   {"categories": {"<name>": {"ops": N, "retained_bytes": B}},
//    "self_check": {...}}
//
// categories() returns the cumulative counts since the service started;
// each service computes retained_bytes itself and says how in a comment.
// self_check is measured independently of that computation: with
// --expose-gc, a full GC then process.memoryUsage(), so the harness can
// compare the growth of heapUsed + arrayBuffers with the growth of the truth.
'use strict';
const fs = require('fs');
const path = require('path');

// oneByteString is the V8 heap size of a flat one-byte (Latin-1) string of
// n chars on x64 without pointer compression (Node's official builds):
// a 16-byte header (map, hash, length) plus n bytes, rounded up to 8.
function oneByteString(n) {
  return Math.ceil((16 + n) / 8) * 8;
}

function install(categories) {
  process.on('SIGUSR2', () => {
    const file = process.env.TRUTH_FILE;
    if (!file) {
      console.error('SIGUSR2: TRUTH_FILE is not set: set it to the path the truth should be written to');
      return;
    }
    const selfCheck = { method: 'v8 heapUsed + arrayBuffers after a full gc (needs --expose-gc)' };
    if (typeof global.gc === 'function') {
      global.gc();
      global.gc();
      const m = process.memoryUsage();
      selfCheck.heap_used = m.heapUsed;
      selfCheck.array_buffers = m.arrayBuffers;
      selfCheck.external = m.external;
      selfCheck.rss = m.rss;
      selfCheck.bytes = m.heapUsed + m.arrayBuffers;
    } else {
      selfCheck.error = 'run node with --expose-gc';
    }
    const doc = JSON.stringify({ categories: categories(), self_check: selfCheck });
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
    fs.writeFileSync(tmp, doc);
    fs.renameSync(tmp, file);
  });
}

module.exports = { install, oneByteString };
