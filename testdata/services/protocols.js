// One service, two listeners on ports the kernel picks: HTTP/1.1 (for
// pipelined requests and WebSocket upgrades) and HTTP/2 cleartext with
// prior knowledge (h2c). Every route answers with its name; /keep/N keeps
// N bytes (written, so resident); /stats counts the requests each route
// and the messages each WebSocket path served. A WebSocket message
// "keep N" keeps N bytes; any other is answered with its length. Prints
// "listening PID HTTP1_PORT H2_PORT" when both listen.
'use strict';
const crypto = require('crypto');
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
// A minimal RFC 6455 server (no dependency): handshake, client frames
// (masked) of any length, server frames of text under 126 bytes.
h1.on('upgrade', (req, socket) => {
  const accept = crypto.createHash('sha1')
    .update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
  const key = `ws ${req.url.split('?')[0]}`;
  let buf = Buffer.alloc(0);
  socket.on('error', () => {});
  socket.on('data', (d) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    while (buf.length >= 2) {
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      const mask = buf[1] & 0x80 ? buf.subarray(off, off + 4) : null;
      if (mask) off += 4;
      if (buf.length < off + len) return;
      const payload = Buffer.from(buf.subarray(off, off + len));
      if (mask) for (let i = 0; i < len; i++) payload[i] ^= mask[i & 3];
      const opcode = buf[0] & 0x0f;
      buf = buf.subarray(off + len);
      if (opcode === 8) return socket.end();
      if (opcode !== 1 && opcode !== 2) continue;
      counts[key] = (counts[key] || 0) + 1;
      const m = /^keep (\d+)$/.exec(payload.toString());
      if (m) kept.push(Buffer.alloc(Number(m[1]), (kept.length % 255) + 1));
      const text = Buffer.from(`${key} ${payload.length}`);
      socket.write(Buffer.concat([Buffer.from([0x81, text.length]), text]));
    }
  });
});
const h2 = http2.createServer(serve);
h1.listen(0, '127.0.0.1', () => h2.listen(0, '127.0.0.1', () =>
  console.log(`listening ${process.pid} ${h1.address().port} ${h2.address().port}`)));
