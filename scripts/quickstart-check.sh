#!/usr/bin/env bash
# Follows the README's quick start on a fresh clone, as root without sudo,
# and asserts each step: git clone, make build, make install (into a temp
# PREFIX), make demo (a short one),
# and with QUICKSTART_TEST=1 make test too (about 3 minutes more).
#
#   scripts/quickstart-check.sh [REPO]     # REPO: a path or URL, default this checkout
#
# It clones the committed HEAD: commit what you want checked. The
# privileged Go test TestQuickstart runs it when MEMDIAG_QUICKSTART=1.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
repo=${1:-$here}
export DEMO_SECONDS=${DEMO_SECONDS:-6}

step() { echo "quickstart: $*"; }
fail() { echo "quickstart: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (the check is for a root shell without sudo)"
for tool in git make; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
# The README says: Go 1.26 or later, on the PATH (or in /usr/local/go/bin).
GO=$(command -v go || echo /usr/local/go/bin/go)
[ -x "$GO" ] || fail "no Go: the README asks for Go >= 1.26"
gov=$("$GO" env GOVERSION)
step "using $gov ($GO)"
[[ "$gov" =~ ^go1\.(2[6-9]|[3-9][0-9]) ]] || fail "$gov is older than the README's Go 1.26"
export PATH=$PATH:$(dirname "$GO")

tmp=$(mktemp -d /tmp/memdiag-quickstart.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
step "git clone $repo"
git clone --quiet "$repo" "$tmp/memdiag" || fail "git clone $repo"
cd "$tmp/memdiag"

step "make build"
make build >"$tmp/build.out" 2>&1 || { cat "$tmp/build.out"; fail "make build"; }
[ -x bin/memdiag ] || fail "make build wrote no bin/memdiag"
bin/memdiag --version | grep -q '^memdiag ' || fail "bin/memdiag --version: $(bin/memdiag --version 2>&1)"
step "bin/memdiag --version: $(bin/memdiag --version)"

step "make install (PREFIX under the temp dir, not to touch this host's /usr/local)"
make install PREFIX="$tmp/prefix" >"$tmp/install.out" 2>&1 || { cat "$tmp/install.out"; fail "make install"; }
PATH="$tmp/prefix/bin:$PATH" memdiag version | grep -q '^memdiag ' || fail "memdiag is not on the PATH after make install"

step "make demo (DEMO_SECONDS=$DEMO_SECONDS)"
make demo >"$tmp/demo.out" 2>&1 || { cat "$tmp/demo.out"; fail "make demo"; }
for want in '\[INIT\] Tracing pid' '\[SUMMARY\] Tracing ended' '\[VERDICT\] ' '== the full log'; do
  grep -q "$want" "$tmp/demo.out" || { cat "$tmp/demo.out"; fail "make demo printed no '$want'"; }
done
out=$(ls -d out/demo-* | tail -1)
for f in report.json report.html memory-diagnostics.log; do
  [ -s "$out/$f" ] || fail "make demo wrote no $out/$f"
done
grep -q '"verdict"' "$out/report.json" || fail "$out/report.json has no verdict"
step "make demo: $(grep -c '' "$out/memory-diagnostics.log") log lines, $(grep -m1 -o '\[VERDICT\] .*' "$tmp/demo.out")"

if [ "${QUICKSTART_TEST:-0}" = 1 ]; then
  step "make test"
  make test >"$tmp/test.out" 2>&1 || { tail -50 "$tmp/test.out"; fail "make test"; }
fi
step "ok"
