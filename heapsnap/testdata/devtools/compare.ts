// Load two .heapsnapshot files with Chrome DevTools' own heap snapshot
// worker code (HeapSnapshotLoader, JSHeapSnapshot) and print DevTools'
// Comparison view (B against base A) as JSON: per class, # New, # Deleted,
// # Delta, Alloc. Size, Freed Size, Size Delta.
import './polyfill.js';
import * as fs from 'node:fs';
import {HeapSnapshotLoader} from './package/front_end/entrypoints/heap_snapshot_worker/HeapSnapshotLoader.js';
import {SecondaryInitManager} from './package/front_end/entrypoints/heap_snapshot_worker/HeapSnapshot.js';

async function load(path: string) {
  const dispatcher = {sendEvent() {}} as any;
  const loader = new HeapSnapshotLoader(dispatcher);
  const fd = fs.openSync(path, 'r');
  const buf = Buffer.alloc(1 << 20);
  const dec = new TextDecoder();
  for (;;) {
    const n = fs.readSync(fd, buf, 0, buf.length, null);
    if (n === 0) break;
    loader.write(dec.decode(buf.subarray(0, n), {stream: true}));
  }
  fs.closeSync(fd);
  loader.close();
  const {port1, port2} = new MessageChannel();
  new SecondaryInitManager(port2 as any);
  const snap = await loader.buildSnapshot(port1 as any);
  port1.close();
  port2.close();
  return snap;
}

const [a, b] = process.argv.slice(2);
const sa = await load(a);
const sb = await load(b);
const aggs = sa.aggregatesForDiff(sb.interfaceDefinitions());
const diff = sb.calculateSnapshotDiff(1, aggs);
const out: any[] = [];
for (const key in diff) {
  const d = diff[key];
  out.push({name: d.name, new: d.addedCount, deleted: d.removedCount, countDelta: d.countDelta,
            allocSize: d.addedSize, freedSize: d.removedSize, sizeDelta: d.sizeDelta});
}
out.sort((x, y) => y.sizeDelta - x.sizeDelta);
process.stdout.write(JSON.stringify(out) + '\n');
