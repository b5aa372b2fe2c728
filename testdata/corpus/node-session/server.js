// memdiag accuracy corpus: a small-object JS-heap leak through a real npm
// library. express-session's MemoryStore never prunes sessions without an
// expiry, so every POST /login keeps its session (~20 KiB of JSON string)
// forever. Next to it, GET /api/feed builds and drops ~2 MB of objects and
// JSON per request (transient-heavy), and GET /health is cheap.
//
// Categories (see categories.yaml) and their truth:
//   login   POST /login     retains its session in the store
//   feed    GET /api/feed   retains nothing
//   health  GET /health     retains nothing
//
// Env: PORT (required), TRUTH_FILE (SIGUSR2 writes the truth there).
// Prints "listening <port>" when ready. Run with node --expose-gc so the
// truth's self_check can be measured.
'use strict';
const express = require('express');
const session = require('express-session');
const truth = require('../lib/truth');

const port = Number(process.env.PORT);
if (!port) {
  console.error('node-session: set PORT to the port to listen on');
  process.exit(2);
}

const store = new session.MemoryStore();
const app = express();
const ops = { login: 0, feed: 0, health: 0 };

app.use(
  session({
    store,
    secret: 'memdiag-accuracy',
    resave: false,
    saveUninitialized: false, // only /login creates a session
    cookie: {}, // no maxAge: the session never expires, MemoryStore never prunes it
  }),
);

let logins = 0;
app.post('/login', express.json(), (req, res) => {
  ops.login++;
  logins++;
  const user = (req.body && req.body.user) || `user${logins}`;
  // ~20 KiB of profile data, unique per login, ASCII (so one-byte strings).
  const history = [];
  for (let i = 0; i < 160; i++) {
    history.push(`${user}:${logins}:${i}:` + 'h'.repeat(100));
  }
  req.session.user = user;
  req.session.history = history;
  res.json({ ok: true, user });
});

app.get('/api/feed', (req, res) => {
  ops.feed++;
  const items = [];
  for (let i = 0; i < 8000; i++) {
    items.push({ id: i, title: `item ${i} of feed ${ops.feed}`, body: 'lorem ipsum dolor sit amet '.repeat(6), tags: ['a', 'b', String(i % 7)] });
  }
  const json = JSON.stringify(items); // ~2 MB, dropped
  res.json({ items: items.length, bytes: json.length });
});

app.get('/health', (req, res) => {
  ops.health++;
  res.json({ ok: true });
});

// Truth: MemoryStore keeps sessions[sid] = JSON.stringify(session), a flat
// one-byte string; each kept session costs that string (16 + length,
// rounded to 8), its id as an internalized property key (32 chars:
// 16 + 32 = 48) and its dictionary entry (3 slots of 8 bytes). The
// dictionary's spare capacity (at most one more entry per entry) is not
// counted: under 0.25% of a 20 KiB session.
truth.install(() => {
  let kept = 0;
  for (const [sid, s] of Object.entries(store.sessions)) {
    kept += truth.oneByteString(s.length) + truth.oneByteString(sid.length) + 24;
  }
  return {
    login: { ops: ops.login, retained_bytes: kept },
    feed: { ops: ops.feed, retained_bytes: 0 },
    health: { ops: ops.health, retained_bytes: 0 },
  };
});

const server = app.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
server.keepAliveTimeout = 60000;
process.on('SIGTERM', () => process.exit(0));
