#!/usr/bin/env bash
# The cost of rooms: one room of 100 clients vs four rooms of 50, the same
# 600,000 deliveries/s (R = 60 Hz, P = 64 B, D = 5 s). Server on core 0, load
# generators on core 1. Needs the release build (cargo build --release -p
# relais-cli -p relais-bench).
#
#   bench/rooms-cost.sh one     # one room of 100
#   bench/rooms-cost.sh four    # four rooms of 50, four generators at once
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
port=$((20000 + RANDOM % 10000))
taskset -c 0 "$ROOT"/target/release/relais serve --listen 127.0.0.1:$port --ws-listen 127.0.0.1:0 --max-connections-per-ip 0 --max-handshakes-per-ip 0 --max-joins-per-ip 0 >/dev/null 2>&1 &
pid=$!
sleep 0.3
run() { taskset -c 1 "$ROOT"/target/release/relais-bench --addr 127.0.0.1:$port --server-pid $pid --json -d 5 "$@"; }
if [ "$1" = one ]; then
  run -n 100 --room one > $TMP/rooms-one-0.json
else
  pids=()
  for k in 0 1 2 3; do run -n 50 --room four-$k > $TMP/rooms-four-$k.json & pids+=($!); done
  wait "${pids[@]}"
fi
kill $pid; wait $pid 2>/dev/null
python3 - "$1" "$TMP" <<'PY'
import json,sys,glob
mode, tmp = sys.argv[1], sys.argv[2]
ds=[json.load(open(f)) for f in sorted(glob.glob(f'{tmp}/rooms-{mode}-*.json'))]
recv=sum(d['received'] for d in ds); exp=sum(d['expected'] for d in ds)
cpu=max(d['server_cpu_s'] or 0 for d in ds)
wall=max(d['cpu_wall_s'] for d in ds)
p99=max(d['latency_ms']['p99'] for d in ds)
print(f"{mode}: rooms={len(ds)} delivered={recv}/{exp} ({recv/exp:.4f}) deliveries/s={recv/wall:.0f} server_cpu_s={cpu:.2f} cpu_s_per_M={cpu/recv*1e6:.3f} worst_p99_ms={p99:.2f}")
PY
rm -rf "$TMP"
