#!/bin/bash
# bpfprof.sh: run one bench workload traced by memdiag with
# kernel.bpf_stats_enabled=1 and print the run time per run of memdiag's
# busiest BPF programs (bpftool's run_time_ns / run_cnt, machine-wide counts:
# tracepoint programs run for every process). Needs root, bpftool, python3,
# taskset, gcc. Restores kernel.bpf_stats_enabled=0.
#
# usage: scripts/bpfprof.sh MEMDIAG fault|mmap|read|fork ITERATIONS BYTES
#   e.g. scripts/bpfprof.sh bin/memdiag fault 300 4194304
set -e
[ $# -eq 4 ] || { echo "usage: $0 MEMDIAG fault|mmap|read|fork ITERATIONS BYTES" >&2; exit 2; }
M=$(realpath "$1"); MODE=$2; N=$3; S=$4
B=$(mktemp -d)
gcc -O2 -o "$B/faultstorm" "$(dirname "$0")/../bench/workloads/faultstorm.c"
trap 'sysctl -q kernel.bpf_stats_enabled=0; rm -rf "$B"' EXIT
D=$(mktemp -d)
coproc W { taskset -c 1 $B/faultstorm -m $MODE -n $N -s $S -w; }
read -u ${W[0]} ready pid
taskset -c 0 $M attach --pid $pid --ready-file $D/ready --report-json $D/r.json --log $D/log --interval 1h > $D/out 2>&1 &
MP=$!
while [ ! -e $D/ready ]; do sleep 0.02; done
sysctl -q kernel.bpf_stats_enabled=1
bpftool prog show -j > $D/before.json
echo go >&${W[1]}
read -u ${W[0]} result
bpftool prog show -j > $D/after.json
sysctl -q kernel.bpf_stats_enabled=0
echo "$result" | tr ' ' '\n' | grep -E "cpu_ns|elapsed_ns|faults=|syscalls="
python3 - $D/before.json $D/after.json $MP <<'PY'
import json,sys,os,re
b={p['id']:p for p in json.load(open(sys.argv[1]))}
a={p['id']:p for p in json.load(open(sys.argv[2]))}
mine=set()
for fd in os.listdir(f"/proc/{sys.argv[3]}/fdinfo"):
    try:
        t=open(f"/proc/{sys.argv[3]}/fdinfo/{fd}").read()
    except: continue
    m=re.search(r"prog_id:\s+(\d+)",t)
    if m: mine.add(int(m.group(1)))
rows=[]
for i,p in a.items():
    if i not in mine: continue
    rc=p.get('run_cnt',0)-b.get(i,{}).get('run_cnt',0); rt=p.get('run_time_ns',0)-b.get(i,{}).get('run_time_ns',0)
    if rc>0: rows.append((rt,rc,p.get('name')))
for rt,rc,n in sorted(rows,reverse=True)[:8]:
    print(f"{n:24s} runs {rc:9d}  {rt/rc:7.0f} ns/run  total {rt/1e6:8.1f} ms")
PY
kill -TERM $MP; wait $MP
exec {W[1]}>&-
wait
rm -rf $D
