// One service, two listeners on ports the kernel picks: HTTP/1.1 (for
// pipelined requests) and HTTP/2 cleartext with prior knowledge (h2c).
// Every route answers with its name; /keep/N keeps N bytes (written, so
// resident); /stats counts the requests each route served. Prints
// "listening PID HTTP1_PORT H2_PORT" when both listen.
'use strict';
const http = require('http');
const http2 = require('http2');
const kept = [];
const counts = {};
function handle(method, url, body, reply) {
  const path = url.split('?')[0];
  if (path === '/stats') return reply(200, JSON.stringify(counts));
  const key = `${method} ${path}`;
  counts[key] = (counts[key] || 0) + 1;
  const m = /^\/keep\/(\d+)$/.exec(path);
  if (m) kept.push(Buffer.alloc(Number(m[1]), (kept.length % 255) + 1));
  reply(200, `${key} ${body.length}\n`);
}
function serve(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => handle(req.method, req.url, Buffer.concat(chunks), (status, text) => {
    res.writeHead(status, { 'content-type': 'text/plain' });
    res.end(text);
  }));
}
const h1 = http.createServer(serve);
h1.keepAliveTimeout = 60000;
const h2 = http2.createServer(serve);
h1.listen(0, '127.0.0.1', () => h2.listen(0, '127.0.0.1', () =>
  console.log(`listening ${process.pid} ${h1.address().port} ${h2.address().port}`)));
