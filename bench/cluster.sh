#!/usr/bin/env bash
# The cluster benchmark (issue 13, "Measure"): relais nodes joined through
# NATS, against one relais node, on loopback. Three measurements, each a set
# of rounds; in every round each setup of the measurement runs once, in
# alternating order (forward in odd rounds, backward in even ones), so that
# ratios are taken between runs made minutes apart at most:
#
#   1. latency    N = 10: what a hop through NATS adds. Setups: single (one
#                 relais, no cluster), one-node (a cluster of two nodes, every
#                 client on node A), split (clients alternately on A and B).
#                 The generator tells each delivery's pair apart (sender and
#                 recipient on one node, or on two), so the split runs give
#                 same-node and cross-node latency from the same run.
#   2. cpu        N = 100: server CPU per million deliveries, the two nodes
#                 summed (NATS apart), split vs single (and one-node).
#   3. size       N in CLUSTER_SIZES (and the N = 100 runs of 2): the
#                 largest room with p99 < 20 ms and >= 99 % delivered,
#                 single vs split vs spread (split with node B moved to the
#                 generator's core).
#
#   bench/cluster.sh                      # 45 runs, D = 5 s: ~7 min measuring
#   CLUSTER_ROUNDS=5 bench/cluster.sh     # 75 runs (~11 min)
#   CLUSTER_MEASURES=latency bench/cluster.sh   # 9 runs (~1.5 min)
#
# Before each run the script waits (at most CLUSTER_QUIET_WAIT s, default
# 30) until other processes use less than 15 % of a core for a second; a run
# during which they used >= 20 % of a core (the generator reports it:
# other_cpu_s) is set aside in bench/results/cluster-disturbed.txt and made
# once more. On a shared machine that can add minutes.
#
# Environment (all optional):
#   CLUSTER_DURATION   measured seconds per run (integer, default 5)
#   CLUSTER_ROUNDS     rounds of every measurement (default 3; >= 3 for
#                      medians worth the name)
#   CLUSTER_SIZES      room sizes of measurement 3 (default "150 200 250")
#   CLUSTER_MEASURES   which measurements (default "latency cpu size")
#   CLUSTER_QUIET_WAIT longest wait for a quiet machine before a run, s
#   CLUSTER_SKIP_BUILD=1   use the binaries already built
#   BENCH_NICE         niceness of servers and generator when run as root
#                      (default -10, as bench/compare.sh)
# Binaries come from ${CARGO_TARGET_DIR:-target}/release.
#
# Each run starts its servers afresh and stops them after: for a cluster run
# a nats-server with JetStream (-js, on a free loopback port, its store in a
# temporary directory of its own) and two relais nodes with `--cluster`
# (each ready once it prints "relais listening on"); for a single run one
# relais. A fresh cluster per run: a client gone keeps its name for the
# resume grace (10 s), so the next run's names would be taken.
#
# Pinning, 2 cores. The single node runs on core 0 and the generator on core
# 1, as in bench/compare.sh. In a cluster run NATS and both nodes share core
# 0 and the generator keeps core 1: the cluster gets the same one core the
# single node gets, so their CPU per delivery compare directly, and the
# generator is never competed with (its own CPU share still marks a run †
# when >= 75 % of its core). Only "spread" (measurement 3) puts node B on
# core 1, beside the generator. Three server processes on one core cannot
# show what two nodes on two machines would serve: measurement 3 says what
# the machine allows, not scale-out (BENCHMARKS.md, "Cluster").
#
# Results: bench/results/cluster-MEASURE-SETUP-nN.json, one JSON line per
# round, bench/results/cluster-meta.txt and cluster-disturbed.txt (runs set
# aside); only cluster-* results are replaced. Then BENCHMARKS.md is
# rendered from every result there, with the same flags as
# bench/compare.sh. Every process started here is stopped on
# exit, also on error or Ctrl-C, and the temporary directory (logs, NATS
# stores) is removed. Nothing here talks to anything but 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/servers.sh
. "$ROOT/bench/servers.sh"

DURATION=${CLUSTER_DURATION:-5}
ROUNDS=${CLUSTER_ROUNDS:-3}
SIZES=${CLUSTER_SIZES:-"150 200 250"}
MEASURES=${CLUSTER_MEASURES:-"latency cpu size"}
LATENCY_N=10
CPU_N=100
RATE=60
PAYLOAD=64
QUIET_WAIT=${CLUSTER_QUIET_WAIT:-30}
QUIET_CORES=0.15     # "quiet": others below this share of a core for 1 s
DISTURBED_CORES=0.2  # "disturbed": others at this share of a core in a run
RETRIES=1            # runs made again when disturbed
FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
RESULTS=bench/results
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
export RUST_BACKTRACE=0   # a failing generator's message, not its backtrace

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 ]] || die "CLUSTER_DURATION must be a positive integer"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 ]] || die "CLUSTER_ROUNDS must be a positive integer"
for m in $MEASURES; do
    case $m in latency|cpu|size) ;; *) die "unknown measurement $m (latency, cpu, size)" ;; esac
done

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/relais-cluster.XXXXXX")
STARTED=()   # PIDs of the servers this script started
cleanup() {
    stop_started   # bench/servers.sh
    rm -rf "$LOGS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools -----------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
[ -f "$FONT" ] || missing+=(fonts-dejavu-core)
command -v taskset >/dev/null || missing+=(util-linux)
install_packages "${missing[@]}"

if [ "${CLUSTER_SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    cargo build --release -p relais-cli -p relais-bench
fi
RELAIS=$TARGET/release/relais
BENCH=$TARGET/release/relais-bench
REPORT=$TARGET/release/relais-bench-report

pin_servers_and_generator
PINNING="servers on core 0 (one relais; or NATS and both nodes; spread: node B on core 1), generator on core 1 (taskset)"
[ ${#SERVER_PIN[@]} -gt 0 ] || PINNING="none (one core)"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

SERVER_PREFIX=("${PRIO[@]}" "${SERVER_PIN[@]}")

RELAIS_LIMITS=(--max-connections-per-ip 0 --max-handshakes-per-ip 0 --max-joins-per-ip 0)

# --- a cluster: NATS and two nodes ----------------------------------------
NATS_PID=""
NATS_PORT=""
NODE_PIDS=()
NODE_PORTS=()

# start_nats: a nats-server with JetStream on a free port, its store in a
# directory of its own; waits until it accepts.
start_nats() {
    NATS_PID=""
    pick_port NATS_PORT || return 1
    local store="$LOGS/nats-store.$NATS_PORT"
    mkdir -p "$store"
    "${SERVER_PREFIX[@]}" nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$store" \
        >"$LOGS/nats.log" 2>&1 &
    NATS_PID=$!
    STARTED+=("$NATS_PID")
    await_port nats-server "$NATS_PID" "$NATS_PORT" "$LOGS/nats.log"
}

# start_nodes [spread]: two relais nodes joined through NATS_PORT, started
# together, both on the servers' core (node B on the generator's core with
# "spread"); waits until both print "relais listening on" (they have heard
# each other).
start_nodes() {
    NODE_PIDS=()
    NODE_PORTS=()
    local i port ws_port prefix
    for i in 0 1; do
        pick_port port || return 1
        pick_port ws_port || return 1
        prefix=("${SERVER_PREFIX[@]}")
        if [ "${1:-}" = spread ] && [ $i = 1 ]; then
            prefix=("${PRIO[@]}" "${GEN_PIN[@]}")
        fi
        "${prefix[@]}" "$RELAIS" serve --cluster "nats://127.0.0.1:$NATS_PORT" \
            --listen "127.0.0.1:$port" --ws-listen "127.0.0.1:$ws_port" "${RELAIS_LIMITS[@]}" \
            >"$LOGS/node$i.log" 2>&1 &
        NODE_PIDS+=("$!")
        NODE_PORTS+=("$port")
        STARTED+=("$!")
    done
    for i in 0 1; do
        local ok=0
        for _ in $(seq 1 100); do
            if grep -q "relais listening on" "$LOGS/node$i.log"; then
                ok=1
                break
            fi
            kill -0 "${NODE_PIDS[$i]}" 2>/dev/null || break
            sleep 0.05
        done
        if [ $ok = 0 ]; then
            log "cluster node $i did not start; its log:"
            cat "$LOGS/node$i.log" >&2
            return 1
        fi
    done
}

# node_trouble: the nodes' and NATS's warnings and errors of the run, if
# any, shown (what looked wrong goes into bench/NOTES.md by hand).
node_trouble() {
    local f
    for f in "$LOGS"/node0.log "$LOGS"/node1.log "$LOGS"/nats.log; do
        [ -f "$f" ] || continue
        # The open-file limit's warning at start is not trouble.
        if grep -E ' (WARN|ERROR) |\[ERR\]|\[WRN\]' "$f" | grep -qv 'open-file limit'; then
            log "$(basename "$f") reported:"
            grep -E ' (WARN|ERROR) |\[ERR\]|\[WRN\]' "$f" | grep -v 'open-file limit' | head -5 >&2
        fi
    done
}

stop_cluster() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do
        stop_and_forget "$pid"
    done
    node_trouble
    [ -n "$NATS_PID" ] && stop_and_forget "$NATS_PID"
    rm -rf "$LOGS/nats-store.$NATS_PORT" "$LOGS"/node?.log "$LOGS/nats.log"
    NODE_PIDS=()
    NATS_PID=""
}

# --- other work on the machine ------------------------------------------
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# busy_ticks: user + nice + system of all cores so far (/proc/stat).
busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4; exit }' /proc/stat; }

# wait_quiet: waits (at most QUIET_WAIT s) until the machine spends less
# than QUIET_CORES of a core in one second: other sessions' builds and
# tests move the numbers more than anything measured here.
wait_quiet() {
    local a b waited=0
    while (( waited < QUIET_WAIT )); do
        a=$(busy_ticks)
        sleep 1
        b=$(busy_ticks)
        waited=$(( waited + 1 ))
        if awk -v d=$(( b - a )) -v t="$CLK_TCK" -v q="$QUIET_CORES" 'BEGIN { exit !(d / t < q) }'; then
            (( waited > 1 )) && log "machine quiet after ${waited} s"
            return 0
        fi
        (( waited == 1 )) && log "waiting for a quiet machine (other processes at $(( (b - a) * 100 / CLK_TCK )) % of a core)"
    done
    log "machine still busy after ${QUIET_WAIT} s: running anyway"
}

# disturbed FILE: whether the run's other processes (other_cpu_s in its
# JSON) used at least DISTURBED_CORES of a core over its window.
disturbed() {
    awk -v q="$DISTURBED_CORES" '{
        if (match($0, /"other_cpu_s":[0-9.eE+-]+/)) o = substr($0, RSTART + 14, RLENGTH - 14) + 0; else exit 1
        if (match($0, /"cpu_wall_s":[0-9.eE+-]+/)) w = substr($0, RSTART + 13, RLENGTH - 13) + 0; else exit 1
        exit !(w > 0 && o / w >= q)
    }' "$1"
}

# --- one run --------------------------------------------------------------
# run_one MEASURE SETUP N ROUND: one run of SETUP (single, one-node, split,
# spread) at N clients, after waiting for a quiet machine; a run disturbed
# by other processes is set aside (in cluster-disturbed.txt) and made again,
# at most RETRIES more times. Appends the run's JSON line to the
# measurement's results file.
run_one() {
    local attempt
    for attempt in $(seq 0 "$RETRIES"); do
        wait_quiet
        attempt_one "$@" || continue
        if disturbed "$LOGS/run.json" && (( attempt < RETRIES )); then
            log "disturbed: other processes used >= $DISTURBED_CORES of a core; again"
            cat "$LOGS/run.json" >>"$RESULTS/cluster-disturbed.txt"
            continue
        fi
        cat "$LOGS/run.json" >>"$RESULTS/$LABEL-n$3.json"
        return 0
    done
    log "giving up on $LABEL N=$3 round $4"
}

# attempt_one MEASURE SETUP N ROUND: starts the servers, runs the generator
# into $LOGS/run.json, stops the servers; fails if the generator did.
attempt_one() {
    local measure=$1 setup=$2 n=$3 round=$4 ok=0
    LABEL="cluster-$measure-$setup"
    local target=()
    case $setup in
        single)
            local ws_port
            pick_port SERVER_PORT || return 1
            pick_port ws_port || return 1
            if ! start_server relais 127.0.0.1 "$SERVER_PORT" "$ws_port"; then
                stop_and_forget "$SERVER_PID"
                return 1
            fi
            target=(--addr "127.0.0.1:$SERVER_PORT" --server-pid "$SERVER_PID")
            ;;
        one-node|split|spread)
            if ! start_nats || ! start_nodes "$setup"; then
                stop_cluster
                return 1
            fi
            local servers="127.0.0.1:${NODE_PORTS[0]}"
            [ "$setup" != one-node ] && servers+=",127.0.0.1:${NODE_PORTS[1]}"
            target=(--servers "$servers" --server-pid "${NODE_PIDS[0]},${NODE_PIDS[1]}"
                --nats-pid "$NATS_PID")
            ;;
    esac
    log "round $round: $measure, $setup, N=$n"
    if "${PRIO[@]}" "${GEN_PIN[@]}" "$BENCH" --system relais "${target[@]}" \
        --clients "$n" --rate "$RATE" --payload "$PAYLOAD" --duration "$DURATION" \
        --label "$LABEL" --round "$round" --json >"$LOGS/run.json"; then
        ok=1
    else
        log "run failed: $LABEL N=$n round $round"
    fi
    if [ "$setup" = single ]; then
        stop_and_forget "$SERVER_PID"
    else
        stop_cluster
    fi
    [ $ok = 1 ]
}

# run_round MEASURE N ROUND SETUP...: each setup once, forward in odd
# rounds, backward in even ones.
run_round() {
    local measure=$1 n=$2 round=$3
    shift 3
    local setups=("$@") i
    if (( round % 2 == 0 )); then
        for (( i = ${#setups[@]} - 1; i >= 0; i-- )); do
            run_one "$measure" "${setups[$i]}" "$n" "$round"
        done
    else
        for i in "${setups[@]}"; do
            run_one "$measure" "$i" "$n" "$round"
        done
    fi
}

# --- the plan -------------------------------------------------------------
n_runs=0
for m in $MEASURES; do
    case $m in
        latency|cpu) n_runs=$(( n_runs + 3 * ROUNDS )) ;;
        size) n_runs=$(( n_runs + 3 * ROUNDS * $(wc -w <<<"$SIZES") )) ;;
    esac
done
# Per run: D + 1 s warm-up + 0.5 s drain, ~1.5 s to start a cluster (the
# nodes listen 750 ms for each other) and connect, and stop it again, 1 s
# to see that the machine is quiet; more if it is not.
ESTIMATE=$(( n_runs * (DURATION * 10 + 40) / 10 ))
log "$n_runs runs ($MEASURES; $ROUNDS rounds), D = ${DURATION} s:" \
    "about $(( ESTIMATE / 60 )) min $(( ESTIMATE % 60 )) s of measuring"

mkdir -p "$RESULTS"
rm -f "$RESULTS"/cluster-*.json "$RESULTS"/cluster-meta.txt "$RESULTS"/cluster-disturbed.txt
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START_DATE=$(date -u '+%Y-%m-%d %H:%M')
MEASURE_START=$SECONDS

for round in $(seq 1 "$ROUNDS"); do
    for m in $MEASURES; do
        case $m in
            latency) run_round latency "$LATENCY_N" "$round" single one-node split ;;
            cpu) run_round cpu "$CPU_N" "$round" single one-node split ;;
            size)
                for n in $SIZES; do
                    run_round size "$n" "$round" single split spread
                done
                ;;
        esac
    done
done

MEASURED=$(( SECONDS - MEASURE_START ))
log "measuring took $(( MEASURED / 60 )) min $(( MEASURED % 60 )) s" \
    "(estimated $(( ESTIMATE / 60 )) min $(( ESTIMATE % 60 )) s)"

{
    echo "date:       $START_DATE-$(date -u '+%H:%M') UTC (load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg))"
    echo "machine:    $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
    echo "pinning:    $PINNING; nice ${BENCH_NICE:--10} when root"
    echo "relais:     $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)'), release build, per-address limits lifted"
    echo "nats:       $(nats-server --version 2>&1 | head -1), -js, store in a fresh temporary directory per run"
    echo "runs:       $n_runs, D = ${DURATION} s measured (+1 s warm-up, 500 ms drain), R = $RATE Hz, P = $PAYLOAD B; $ROUNDS rounds; measuring took $(( MEASURED / 60 )) min $(( MEASURED % 60 )) s"
    if [ -s "$RESULTS/cluster-disturbed.txt" ]; then
        echo "set aside:  $(wc -l <"$RESULTS/cluster-disturbed.txt") runs disturbed by other processes, made again (bench/results/cluster-disturbed.txt)"
    else
        echo "set aside:  none (no run disturbed by other processes)"
    fi
    echo "command:    $(env | grep -E '^CLUSTER_(DURATION|ROUNDS|SIZES|MEASURES)=' | sort | tr '\n' ' ')bench/cluster.sh"
} >"$RESULTS/cluster-meta.txt"

ARGS=(--results "$RESULTS" --out BENCHMARKS.md --plot bench/benchmarks.png
    --plot-link bench/benchmarks.png --font "$FONT" --notes bench/NOTES.md)
[ -f "$RESULTS/meta.txt" ] && ARGS+=(--meta "$RESULTS/meta.txt")
"$REPORT" "${ARGS[@]}"
log "done: BENCHMARKS.md, $RESULTS/cluster-*"
