// bigheap.js: two large heap snapshots of one process, for heapsnap's
// benchmark.
//
//   node --max-old-space-size=4096 bigheap.js OUTDIR CUSTOMERS LEAK
//
// Builds CUSTOMERS Customer objects (each with an orders array of three
// Order objects and a few strings), writes OUTDIR/a.heapsnapshot, then
// leaks LEAK Session objects (a 1 KiB string each) in a Map held by
// app.sessions, replaces a tenth of the orders (churn), and writes
// OUTDIR/b.heapsnapshot. Prints {"kept": bytes of session payload}.
'use strict';
const v8 = require('v8');
const path = require('path');
const [outdir, nArg, leakArg] = process.argv.slice(2);
const n = Number(nArg), leakN = Number(leakArg);

class Order {
  constructor(i, k) { this.sku = 'sku-' + ((i * 7 + k) % 100000); this.qty = k + 1; this.price = i % 1000 + 0.5; this.note = null; }
}
class Customer {
  constructor(i) {
    this.id = i;
    this.name = 'customer ' + i;
    this.email = 'c' + i + '@example.com';
    this.orders = [new Order(i, 0), new Order(i, 1), new Order(i, 2)];
  }
}
class Session {
  // A flat 1 KiB string (repeat() alone would build a tree of shared halves).
  constructor(i) { this.id = i; this.payload = Buffer.from(('' + i).padStart(16, '-').repeat(64)).toString('latin1'); }
}
class SessionStore {
  constructor() { this.byId = new Map(); }
}
const app = { customers: [], sessions: new SessionStore() };
globalThis.app = app;
for (let i = 0; i < n; i++) app.customers.push(new Customer(i));
v8.writeHeapSnapshot(path.join(outdir, 'a.heapsnapshot'));
let kept = 0;
for (let i = 0; i < leakN; i++) {
  const s = new Session(i);
  app.sessions.byId.set('sess-' + i, s);
  kept += s.payload.length;
}
for (let i = 0; i < n; i += 10) app.customers[i].orders[1] = new Order(i, 9);
v8.writeHeapSnapshot(path.join(outdir, 'b.heapsnapshot'));
process.stdout.write(JSON.stringify({ kept }) + '\n');
