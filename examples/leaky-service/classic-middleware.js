// The classic in-process memory diagnostics middleware memdiag replaces:
// process.memoryUsage() before and after each request (after: on finish,
// through setImmediate), the last 100 deltas per category, [GROWTH] lines
// over 10 MB external / 50 MB RSS. Here only so benchmarks can compare.
'use strict';
const MB = 1024 * 1024;
const history = new Map();

function category(path) {
  if (path.startsWith('/api/records')) return 'api_records';
  if (path.startsWith('/api/voice')) return 'api_voice';
  if (path.startsWith('/api/alfred')) return 'api_alfred';
  if (path.startsWith('/graphql')) return 'graphql_query';
  if (path.startsWith('/media')) return 'static_media';
  return 'other';
}

module.exports = function classicMiddleware(req, res, next) {
  const before = process.memoryUsage();
  res.on('finish', () => {
    setImmediate(() => {
      const after = process.memoryUsage();
      const d = { rss: after.rss - before.rss, external: after.external - before.external, heap: after.heapUsed - before.heapUsed };
      const cat = category(req.path);
      let h = history.get(cat);
      if (!h) history.set(cat, (h = []));
      h.push(d);
      if (h.length > 100) h.shift();
      if (d.external > 10 * MB || d.rss > 50 * MB) {
        console.log(`[GROWTH] ${req.method} ${req.path}: RSS +${Math.round(d.rss / MB)}MB, External +${Math.round(d.external / MB)}MB`);
      }
    });
  });
  next();
};
