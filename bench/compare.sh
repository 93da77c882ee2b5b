#!/usr/bin/env bash
# Measures relais, NATS and Redis pub/sub on the same workloads and renders
# BENCHMARKS.md (repository root) and bench/benchmarks.png.
#
#   bench/compare.sh                     # 21 runs, D = 5 s each: ~3 min measuring
#   BENCH_DURATION=10 bench/compare.sh   # longer runs (~4.5 min)
#
# Environment (all optional):
#   BENCH_DURATION   measured seconds per run (integer, default 5; the
#                    slow-consumer runs take at least 8 s to fit the stall)
#   BENCH_SIZES      room sizes of the matrix (default "10 50 100 200 400")
#   BENCH_SYSTEMS    systems to run (default "relais nats redis")
#   BENCH_SKIP_BUILD=1    use the binaries already in target/release
#   BENCH_NICE       niceness of servers and generator when run as root
#                    (default -10: other work on the machine disturbs less)
#
# What it does: installs the peers from Debian's packages if missing
# (nats-server, redis-server, plus fonts-dejavu-core for the plot), builds the
# release binaries, and for each run starts a fresh server on 127.0.0.1 (a
# random free port) pinned to core 0, runs the generator pinned to core 1,
# stops the server by PID. Every process it starts is stopped on exit, also
# on error or Ctrl-C. Raw results go to bench/results/*.json (one JSON object
# per run; results of other scripts, e.g. slowlink-*, are left alone). It
# prints how long the measuring will take before it starts. Nothing here
# talks to anything but 127.0.0.1.
#
# The generator speaks each system's wire protocol itself (no NATS or Redis
# client library: see src/adapters/ of relais-bench), so it costs about the
# same per message for every system; runs where its core was still >= 75 %
# busy are marked with a dagger in BENCHMARKS.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/servers.sh
. "$ROOT/bench/servers.sh"

DURATION=${BENCH_DURATION:-5}
SIZES=${BENCH_SIZES:-"10 50 100 200 400"}
SYSTEMS=${BENCH_SYSTEMS:-"relais nats redis"}
RATE=60
PAYLOAD=64
OVERLOAD_N=200
OVERLOAD_RATE=240
SLOW_N=100
STALL_SECS=5
STALL_AT=1
# The stall must end before the window does.
SLOW_DURATION=$(( DURATION > STALL_AT + STALL_SECS + 2 ? DURATION : STALL_AT + STALL_SECS + 2 ))
FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
RESULTS=bench/results
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/relais-bench.XXXXXX")

STARTED=()   # PIDs of the servers this script started
trap stop_started EXIT   # bench/servers.sh
trap 'exit 130' INT TERM

log() { printf '[compare] %s\n' "$*" >&2; }

# --- peers and tools -------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
command -v redis-server >/dev/null || missing+=(redis-server)
[ -f "$FONT" ] || missing+=(fonts-dejavu-core)
command -v taskset >/dev/null || missing+=(util-linux)
install_packages "${missing[@]}"

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    cargo build --release -p relais-cli -p relais-bench
fi
RELAIS=target/release/relais
BENCH=target/release/relais-bench
REPORT=target/release/relais-bench-report

# Pin the server and the generator to different cores when there are two.
pin_servers_and_generator

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

SERVER_PREFIX=("${PRIO[@]}" "${SERVER_PIN[@]}")
SERVER_PORT=""

# run_one SYSTEM LABEL N RATE DURATION [extra generator flags...]
run_one() {
    local system=$1 label=$2 n=$3 rate=$4 duration=$5
    shift 5
    local out="$RESULTS/$label-$system-n$n-r$rate.json"
    local ws_port
    pick_port SERVER_PORT
    pick_port ws_port
    start_server "$system" 127.0.0.1 "$SERVER_PORT" "$ws_port"
    log "$label: $system N=$n R=$rate D=${duration}s"
    if "${PRIO[@]}" "${GEN_PIN[@]}" "$BENCH" --system "$system" --addr "127.0.0.1:$SERVER_PORT" \
        --clients "$n" --rate "$rate" --payload "$PAYLOAD" --duration "$duration" \
        --server-pid "$SERVER_PID" --label "$label" --json "$@" >"$out.tmp"; then
        mv "$out.tmp" "$out"
    else
        log "run failed: $label $system N=$n (see $LOGS)"
        rm -f "$out.tmp"
    fi
    stop_pid "$SERVER_PID"
}

# How long the measuring takes: per run, D + 1 s warm-up + 0.5 s drain, and
# about 1 s to start the server, connect the clients and stop it again.
n_systems=$(wc -w <<<"$SYSTEMS")
n_sizes=$(wc -w <<<"$SIZES")
RUNS=$(( (n_sizes + 2) * n_systems ))
ESTIMATE=$(( ( (n_sizes + 1) * n_systems * (DURATION * 10 + 25) \
    + n_systems * (SLOW_DURATION * 10 + 25) ) / 10 ))
log "$RUNS runs (matrix N = ${SIZES// /, }; overload; slow consumer; $n_systems systems)," \
    "D = ${DURATION} s: about $(( ESTIMATE / 60 )) min $(( ESTIMATE % 60 )) s of measuring"
MEASURE_START=$SECONDS

mkdir -p "$RESULTS"
# Only this script's results: other scripts' (slowlink-*) stay.
rm -f "$RESULTS"/matrix-*.json "$RESULTS"/overload-*.json "$RESULTS"/slow-consumer-*.json \
    "$RESULTS"/*.json.tmp

{
    echo "date:       $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine:    $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
    echo "pinning:    server on core 0, generator on core 1 (taskset); nice ${BENCH_NICE:--10} when root"
    echo "relais:     $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)'), release build"
    echo "nats:       $(nats-server --version 2>&1 | head -1)"
    echo "redis:      $(redis-server --version 2>&1 | head -1)"
    echo "toolchain:  $(rustc --version)"
    echo "generator:  one process on core 1; raw-protocol clients for all three systems (no client library)"
    echo "runs:       D = ${DURATION} s measured (+1 s warm-up, 500 ms drain); slow consumer D = ${SLOW_DURATION} s"
} >"$RESULTS/meta.txt"

for n in $SIZES; do
    for system in $SYSTEMS; do
        run_one "$system" matrix "$n" "$RATE" "$DURATION"
    done
done
for system in $SYSTEMS; do
    run_one "$system" overload "$OVERLOAD_N" "$OVERLOAD_RATE" "$DURATION"
done
for system in $SYSTEMS; do
    run_one "$system" slow-consumer "$SLOW_N" "$RATE" "$SLOW_DURATION" \
        --stall-client 0 --stall-secs "$STALL_SECS" --stall-at "$STALL_AT"
done

MEASURED=$(( SECONDS - MEASURE_START ))
log "measuring took $(( MEASURED / 60 )) min $(( MEASURED % 60 )) s" \
    "(estimated $(( ESTIMATE / 60 )) min $(( ESTIMATE % 60 )) s)"

"$REPORT" --results "$RESULTS" --out BENCHMARKS.md --plot bench/benchmarks.png \
    --plot-link bench/benchmarks.png --font "$FONT" \
    --meta "$RESULTS/meta.txt" --notes bench/NOTES.md
log "done: BENCHMARKS.md, bench/benchmarks.png, $RESULTS/"
