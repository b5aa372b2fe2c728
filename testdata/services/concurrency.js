// Two routes that retain known sizes per request, for the concurrency test:
// /small keeps SMALL bytes, /big keeps BIG bytes (both written, so resident).
'use strict';
const http = require('http');
const small = Number(process.env.SMALL || 16 * 1024);
const big = Number(process.env.BIG || 64 * 1024);
const kept = [];
let n = 0;
const server = http.createServer((req, res) => {
  n++;
  if (req.url === '/small') kept.push(Buffer.alloc(small, (n % 255) + 1));
  else if (req.url === '/big') kept.push(Buffer.alloc(big, (n % 255) + 1));
  res.end('ok');
});
server.keepAliveTimeout = 30000;
server.listen(Number(process.env.PORT), '127.0.0.1', () => console.log(`listening ${process.pid}`));
