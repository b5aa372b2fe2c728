#!/usr/bin/env bash
# memdiag's demo: traces a built-in workload and shows what memdiag found.
# Run through `sudo make demo` (memdiag needs root to load its BPF program).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}

if [ "$(id -u)" != 0 ]; then
  echo "demo: memdiag needs root to trace: run 'sudo make demo'" >&2
  exit 1
fi

out=out/demo-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
chmod 700 out "$out"
"$GO" build -o bin/demo-workload ./examples/demo-workload

echo "demo: tracing the built-in workload for 20 s (threads 'cache' leaks 4 MiB/s, 'parser' churns 16 MiB/s, 'reporter' maps a 32 MiB file)"
./bin/memdiag run --interval 5s --log "$out/memory-diagnostics.log" --report-json "$out/report.json" \
  -- ./bin/demo-workload --seconds 20

echo
echo "== log ($out/memory-diagnostics.log)"
cat "$out/memory-diagnostics.log"
echo
echo "== JSON report: $out/report.json"
