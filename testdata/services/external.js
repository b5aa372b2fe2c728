// Routes that keep or drop known sizes of external (Buffer) and runtime
// (JS object) memory, for the external-memory tests.
//   /keep-big    keeps a BIG-byte Buffer (malloc mmaps it: native)
//   /keep-small  keeps a SMALL-byte Buffer (malloc's heap: native)
//   /drop-big    allocates a BIG-byte Buffer and lets it go
//   /objects     keeps OBJECTS small JS objects (V8's heap: runtime)
//   /free        drops every kept Buffer, then GCs (run node --expose-gc)
//   /gc          runs a full GC (node --expose-gc)
//   /stats       {arrayBuffers, external, rss} from process.memoryUsage()
'use strict';
const http = require('http');
const big = Number(process.env.BIG || 1 << 20);
const small = Number(process.env.SMALL || 16 << 10);
const objects = Number(process.env.OBJECTS || 20000);
let kept = [];
const objs = [];
let n = 0;
const server = http.createServer((req, res) => {
  n++;
  switch (req.url) {
    case '/keep-big': kept.push(Buffer.alloc(big, (n % 255) + 1)); break;
    case '/keep-small': kept.push(Buffer.alloc(small, (n % 255) + 1)); break;
    case '/drop-big': { const b = Buffer.alloc(big, (n % 255) + 1); if (b[0] === 0) res.setHeader('x', '0'); break; }
    case '/objects': for (let i = 0; i < objects; i++) objs.push({ id: n * objects + i, name: 'object-' + i, tags: [i, i + 1] }); break;
    case '/free': kept = []; if (global.gc) global.gc(); break;
    case '/gc': if (global.gc) global.gc(); break;
    case '/stats': {
      const m = process.memoryUsage();
      res.end(JSON.stringify({ arrayBuffers: m.arrayBuffers, external: m.external, rss: m.rss }));
      return;
    }
  }
  res.end('ok');
});
server.keepAliveTimeout = 30000;
server.listen(Number(process.env.PORT), '127.0.0.1', () => console.log(`listening ${process.pid}`));
