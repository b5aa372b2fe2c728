#!/usr/bin/env bash
# fleet-bench.sh N [ROUNDS]: what `memdiag fleet` costs with N traced
# containers. N idle containers are emulated as containerd and the kubelet
# lay them out (a cgroup .../cri-containerd-<id>.scope holding a sleep, a
# link <pod>_<ns>_<container>-<id>.log); memdiag fleet traces them all. It
# prints memdiag's RSS, its BPF maps' memory (memlock in fdinfo), the
# user and system CPU of a bystander's fault storm (memwork "spin 64M", a
# process memdiag does not trace) over ROUNDS rounds, and memdiag's own CPU
# per second meanwhile. N=0 runs no memdiag.
#
#   make build                           # CGO_ENABLED=0 go build -tags urfave_cli_no_docs -o bin/memdiag ./cmd/memdiag
#   gcc -O2 -pthread -o bin/memwork testdata/workload/memwork.c
#   sudo scripts/fleet-bench.sh 8 4      # MEMDIAG=bin/memdiag MEMWORK=bin/memwork by default
set -euo pipefail
N=${1:?usage: fleet-bench.sh N [ROUNDS]}
ROUNDS=${2:-4}
MEMDIAG=${MEMDIAG:-bin/memdiag}
MEMWORK=${MEMWORK:-bin/memwork}
V2=/sys/fs/cgroup
[ "$(stat -fc %T $V2)" = cgroup2fs ] || V2=/sys/fs/cgroup/unified
TOP=$V2/memdiag-fleet-bench-$$.slice
LINKS=$(mktemp -d)
OUT=$(mktemp -d)
pids=()
M=
cleanup() {
  [ -n "$M" ] && kill "$M" 2>/dev/null && wait "$M" 2>/dev/null || true
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  for _ in 1 2 3 4 5; do
    find "$TOP" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [ -d "$TOP" ] || break
    sleep 0.2 # the kernel frees a cgroup once its last process is reaped
  done
  rm -rf "$LINKS" "$OUT"
}
trap cleanup EXIT
mkdir "$TOP"
for i in $(seq 1 "$N"); do
  id=$(head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  d=$TOP/kubepods-pod$i.slice/cri-containerd-$id.scope
  mkdir -p "$d"
  sh -c "echo \$\$ > $d/cgroup.procs; exec sleep 3600" &
  pids+=($!)
  until grep -q . "$d/cgroup.procs"; do sleep 0.05; done
  ln -s "/var/log/pods/bench_web-${i}_uid/app/0.log" "$LINKS/web-${i}_bench_app-$id.log"
done
if [ "$N" -gt 0 ]; then
  # A memdiag with one tracer for all follows this script's slice (its
  # default, kubepods, is not there); older builds have no --cgroup-root.
  root=()
  help=$("$MEMDIAG" fleet --help 2>&1 || true)
  if [[ $help == *--cgroup-root* ]]; then root=(--cgroup-root "$TOP"); fi
  "$MEMDIAG" fleet "${root[@]}" --select namespace:bench --pod-logs "$LINKS" --log "$OUT/log" --reports-dir "$OUT/r" \
    --ready-file "$OUT/ready" --heap-sampling off --no-dumps --max-targets 256 -q &
  M=$!
  while [ ! -e "$OUT/ready" ]; do kill -0 "$M"; sleep 0.1; done
  traced=$(grep -c '\[FLEET\] tracing .*/' "$OUT/log" || true)
  rss=$(awk '/VmRSS/{print $2}' "/proc/$M/status")
  mem=0
  for fd in /proc/$M/fd/*; do
    if [ "$(readlink "$fd" || true)" = anon_inode:bpf-map ]; then
      mem=$((mem + $(awk '/memlock/{print $2}' "/proc/$M/fdinfo/${fd##*/}")))
    fi
  done
  echo "N=$N traced=$traced memdiag_rss_kib=$rss bpf_maps_kib=$((mem / 1024))"
fi
cpu() { [ -n "$M" ] && awk '{print $14 + $15}' "/proc/$M/stat" || echo 0; }
c0=$(cpu) s0=$(date +%s.%N)
for r in $(seq 1 "$ROUNDS"); do
  t=$( { TIMEFORMAT='%R %U %S'; time (printf 'spin 64M\nexit\n' | "$MEMWORK" >/dev/null); } 2>&1 )
  echo "N=$N round=$r elapsed_user_sys_s=$t"
done
# memdiag's own CPU (user + system) while the rounds ran, per second.
if [ -n "$M" ]; then
  echo "N=$N memdiag_cpu_ms_per_s=$(awk -v c="$(( $(cpu) - c0 ))" -v t="$(date +%s.%N)" -v s0="$s0" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", c*1000/hz/(t-s0)}')"
fi
