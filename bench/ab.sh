#!/usr/bin/env bash
# A/B of two relais server binaries on the same workload, alternating runs,
# with this tree's generator: server pinned to core 0, generator to core 1.
#
#   AB_OLD=/path/to/old/relais bench/ab.sh          # vs target/release/relais
#   N=400 D=5 ROUNDS=6 AB_OLD=... bench/ab.sh
#
# The old binary gets only the flags every version has; the new one also
# lifts the per-address limits (every client comes from 127.0.0.1).
# AB_OLD_FLAGS and AB_NEW_FLAGS add flags to one side (split on spaces), e.g.
# the per-address lifts for an old binary that has them:
#
#   AB_OLD_FLAGS="--max-connections-per-ip 0 --max-handshakes-per-ip 0 \
#     --max-joins-per-ip 0" AB_OLD=... bench/ab.sh
#
# Prints one line per run and the medians of p50/p99 latency and server CPU
# per million deliveries. Talks to nothing but 127.0.0.1; stops its servers.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OLD=${AB_OLD:?set AB_OLD to the relais binary to compare against}
NEW=${AB_NEW:-$ROOT/target/release/relais}
BENCH=${AB_BENCH:-$ROOT/target/release/relais-bench}
N=${N:-100}; D=${D:-5}; ROUNDS=${ROUNDS:-6}
read -r -a OLD_FLAGS <<<"${AB_OLD_FLAGS:-}"
read -r -a NEW_FLAGS <<<"${AB_NEW_FLAGS:-}"
ulimit -n 65536 2>/dev/null || true
PIN_S=(); PIN_G=()
if [ "$(nproc)" -ge 2 ]; then PIN_S=(taskset -c 0); PIN_G=(taskset -c 1); fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  for which in old new; do
    # Below the ephemeral range, so no client socket of a previous run holds it.
    port=$((20000 + RANDOM % 12000))
    if [ $which = old ]; then
      "${PIN_S[@]}" "$OLD" serve --listen 127.0.0.1:$port --ws-listen 127.0.0.1:0 \
        "${OLD_FLAGS[@]}" >/dev/null 2>&1 &
    else
      "${PIN_S[@]}" "$NEW" serve --listen 127.0.0.1:$port --ws-listen 127.0.0.1:0 \
        --max-connections-per-ip 0 --max-handshakes-per-ip 0 --max-joins-per-ip 0 \
        "${NEW_FLAGS[@]}" >/dev/null 2>&1 &
    fi
    pid=$!
    for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    if json=$("${PIN_G[@]}" "$BENCH" --system relais --addr 127.0.0.1:$port -n "$N" -r 60 -p 64 \
        -d "$D" --server-pid $pid --json 2>/dev/null); then
      echo "$which $json" >>"$out"
    else
      echo "$which run $r failed" >&2
    fi
    kill $pid; wait $pid 2>/dev/null
  done
done
python3 - "$out" <<'PY'
import json, statistics as st, sys
runs = {"old": [], "new": []}
for line in open(sys.argv[1]):
    which, j = line.split(" ", 1)
    d = json.loads(j)
    runs[which].append((d["latency_ms"]["p50"], d["latency_ms"]["p99"], d["server_cpu_s_per_million"]))
    print(which, "p50 %.3f ms  p99 %.3f ms  cpu %.3f s/M" % runs[which][-1])
for which, rs in runs.items():
    if rs:
        med = [st.median(r[i] for r in rs) for i in range(3)]
        print("median %s (%d runs): p50 %.3f ms  p99 %.3f ms  cpu %.3f s/M" % (which, len(rs), *med))
PY
