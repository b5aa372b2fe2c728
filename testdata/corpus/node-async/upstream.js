// The upstream node-async calls: GET /data answers a 24 KiB ASCII body.
// Its own process. Env: UPSTREAM_PORT. Prints "listening <port>".
'use strict';
const http = require('http');

const port = Number(process.env.UPSTREAM_PORT);
if (!port) {
  console.error('upstream: set UPSTREAM_PORT to the port to listen on');
  process.exit(2);
}
const body = Buffer.alloc(24 * 1024, 'd');
let served = 0;
http
  .createServer((req, res) => {
    served++;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
  })
  .listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
process.on('SIGTERM', () => process.exit(0));
