// The peer the reference service syncs with: answers /sync/changes with a
// fixed-size body and counts the cycles it served (GET /stats).
'use strict';
const http = require('http');

const port = Number(process.env.PEER_PORT || 8765);
const changesBytes = Number(process.env.PEER_CHANGES_BYTES || 64 * 1024);
const body = Buffer.alloc(changesBytes, 'x');
let changes = 0;
let acks = 0;

const server = http.createServer((req, res) => {
  if (req.url === '/sync/changes') {
    changes++;
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  } else if (req.url === '/sync/ack') {
    req.resume();
    req.on('end', () => {
      acks++;
      res.writeHead(204);
      res.end();
    });
  } else if (req.url === '/stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ changes, acks }));
  } else {
    res.writeHead(404);
    res.end();
  }
});
server.listen(port, '127.0.0.1', () => {
  console.log(`peer listening on 127.0.0.1:${port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
