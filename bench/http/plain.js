// A plain Node.js `http` service for bench/http (the "plain" arms): every
// request gets a three-byte body and nothing is kept, so what a tracer
// costs per request is not hidden behind a framework's own work.
'use strict';
const http = require('http');

http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('ok\n');
}).listen(Number(process.env.PORT), '127.0.0.1');
