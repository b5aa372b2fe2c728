# agree.py A B MEMDIAG [N]: DevTools' Comparison view (compare.mjs, built as
# README.md says) beside `memdiag diff` for the same pair, for the N classes
# whose size grew most in DevTools.
import json, os, subprocess, sys, collections
a, b, memdiag = sys.argv[1], sys.argv[2], sys.argv[3]
dt = json.loads(subprocess.run(['node', '--max-old-space-size=8192', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'compare.mjs'), a, b], capture_output=True, check=True).stdout)
md = json.loads(subprocess.run([memdiag, 'diff', '--format', 'json', '--top', '1000000', a, b], capture_output=True, check=True).stdout)
mine = {g['name']: g for g in md['groups']}
# DevTools names plain objects by their properties ({a, b}); memdiag, like the
# classic Summary, calls them all Object.
agg = collections.defaultdict(lambda: collections.Counter())
for r in dt:
    name = 'Object' if r['name'].startswith('{') else r['name']
    for k in ('new', 'deleted', 'countDelta', 'sizeDelta'):
        agg[name][k] += r[k]
rows = sorted(agg.items(), key=lambda kv: -kv[1]['sizeDelta'])[:int(sys.argv[4]) if len(sys.argv) > 4 else 12]
print('%-28s %10s %10s %12s %12s %8s %8s' % ('class', 'dt Δcount', 'md Δcount', 'dt Δsize', 'md Δshallow', 'dt new', 'md new'))
for name, r in rows:
    m = mine.get(name)
    if m is None:
        print('%-28s %10d %10s %12d %12s %8d %8s %s' % (name[:28], r['countDelta'], '-', r['sizeDelta'], '-', r['new'], '-',
              'not listed by memdiag (did not grow)' if r['countDelta'] <= 0 and r['sizeDelta'] <= 0 else 'MISSING'))
        continue
    mc = m.get('count_b', 0) - m.get('count_a', 0)
    ms = m.get('shallow_b', 0) - m.get('shallow_a', 0)
    print('%-28s %10d %10d %12d %12d %8d %8d %s' % (name[:28], r['countDelta'], mc, r['sizeDelta'], ms, r['new'], m.get('new', 0),
          'same' if (mc, ms, m.get('new', 0)) == (r['countDelta'], r['sizeDelta'], r['new']) else 'DIFFERENT'))
