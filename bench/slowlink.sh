#!/usr/bin/env bash
# The slow-link benchmark: one client behind a throttled link in a room of N
# senders, for relais, NATS and Redis pub/sub side by side. Reports the
# throttled client's state age (receive time − send time of every update it
# reads), what it received, and the other clients' p99; renders BENCHMARKS.md
# (section "Slow link") and bench/slowlink.png with relais-bench-report, with
# the same flags as bench/compare.sh, so both scripts write one document.
#
#   sudo bench/slowlink.sh                          # 4 rates × 3 systems, ~4.6 min
#   SLOWLINK_RATES=500kbit SLOWLINK_SYSTEMS=relais sudo -E bench/slowlink.sh
#
# Environment (all optional):
#   SLOWLINK_DURATION  measured seconds per run (integer, default 20)
#   SLOWLINK_WINDOW    state age over the last this many seconds of it
#                      (integer, default 60 % of the duration: 12 of 20)
#   SLOWLINK_RATES     tbf rates (default "250kbit 500kbit 1mbit 10mbit";
#                      units kbit or mbit)
#   SLOWLINK_SYSTEMS   systems (default "relais nats redis")
#   SLOWLINK_SENDERS   senders in the room (default 20; each 64 B at 60 Hz)
#   SLOWLINK_SKIP_BUILD=1   use the binaries already in target/release
#   SLOWLINK_RELAIS    the relais server binary (default target/release/relais;
#                      e.g. an older build, to compare)
#
# The network (needs root, iproute2 and the kernel's veth and tbf): two
# network namespaces made for this run, relais-slow-PID-srv and -cli, joined
# by a veth pair with 10.200.X.1/30 (srv) and 10.200.X.2/30 (cli), X random.
# The server and the N senders run in srv (senders connect to 10.200.X.1, a
# local address there: over that namespace's loopback, unthrottled); the one
# reader runs in cli and connects across the veth. srv's end of the veth has
# `tbf rate R burst 16kb latency 200ms`: it throttles server → reader only.
# Nothing is configured outside the two namespaces, and every address used
# lives inside them. On exit, also on error, Ctrl-C or TERM, every process
# started here is stopped and both namespaces (with the veth pair and its
# qdisc) are deleted.
#
# Per run: a fresh server (core 0), the reader and the senders (core 1) given
# one start time (--start-at) so their schedules line up: 1 s warm-up, D s
# measured, 500 ms drain. Results: bench/results/slowlink-RATE-SYSTEM.json,
# two JSON lines each (the reader's report, then the senders'), and
# bench/results/slowlink-meta.txt. Only slowlink-* results are replaced.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DURATION=${SLOWLINK_DURATION:-20}
WINDOW=${SLOWLINK_WINDOW:-$(( DURATION * 6 / 10 > 0 ? DURATION * 6 / 10 : 1 ))}
RATES=${SLOWLINK_RATES:-"250kbit 500kbit 1mbit 10mbit"}
SYSTEMS=${SLOWLINK_SYSTEMS:-"relais nats redis"}
SENDERS=${SLOWLINK_SENDERS:-20}
export RUST_BACKTRACE=0   # a failing generator's message, not its backtrace
MSG_RATE=60
PAYLOAD=64
WARMUP=1
DRAIN_MS=500
LEAD=1            # seconds between starting the clients and the first send
TBF_BURST=16kb
TBF_LATENCY=200ms
FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
RESULTS=bench/results

log() { printf '[slowlink] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, veth, tc)"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 2 ]] || die "SLOWLINK_DURATION must be an integer ≥ 2"
[[ $WINDOW =~ ^[0-9]+$ && $WINDOW -ge 1 && $WINDOW -le $DURATION ]] \
    || die "SLOWLINK_WINDOW must be an integer in 1..SLOWLINK_DURATION"

# rate_kbit 500kbit -> 500, 1mbit -> 1000
rate_kbit() {
    case $1 in
        *kbit) echo "${1%kbit}" ;;
        *mbit) echo $(( ${1%mbit} * 1000 )) ;;
        *) return 1 ;;
    esac
}
for r in $RATES; do
    [[ $(rate_kbit "$r" 2>/dev/null) =~ ^[0-9]+$ ]] || die "rate $r: use e.g. 500kbit or 1mbit"
done

# --- what this script makes, and its cleanup ---------------------------------
TAG=relais-slow-$$
NS_SRV=$TAG-srv
NS_CLI=$TAG-cli
VETH_SRV=rsl$$s        # interface names: at most 15 characters
VETH_CLI=rsl$$c
X=$(( RANDOM % 254 + 1 ))
SRV_IP=10.200.$X.1
CLI_IP=10.200.$X.2
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/relais-slowlink.XXXXXX")
MADE_NS=()     # namespaces this script created
STARTED=()     # PIDs of the processes this script started
FAILED=()      # runs that failed

ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }

cleanup() {
    local rc=$?
    set +e
    for pid in "${STARTED[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${STARTED[@]}"; do
        wait "$pid" 2>/dev/null
    done
    for ns in "${MADE_NS[@]}"; do
        if ns_exists "$ns"; then
            # Anything still inside was started by this script.
            for pid in $(ip netns pids "$ns" 2>/dev/null); do
                kill -9 "$pid" 2>/dev/null
            done
            ip netns del "$ns" 2>/dev/null || log "could not delete namespace $ns"
        fi
    done
    # The veth pair lives only in the namespaces and goes with them; were one
    # end left in the host namespace (failed move), remove it.
    for dev in "$VETH_SRV" "$VETH_CLI"; do
        ip link show "$dev" >/dev/null 2>&1 && ip link del "$dev" 2>/dev/null
    done
    rm -f "$RESULTS"/slowlink-*.json.tmp "$RESULTS"/slowlink-*.reader "$RESULTS"/slowlink-*.senders 2>/dev/null
    if [ $rc -eq 0 ] && [ ${#FAILED[@]} -eq 0 ]; then
        rm -rf "$LOGS"
    else
        log "logs kept in $LOGS"
    fi
    return $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# --- tools and peers -----------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v ip >/dev/null && command -v tc >/dev/null || missing+=(iproute2)
command -v nats-server >/dev/null || missing+=(nats-server)
command -v redis-server >/dev/null || missing+=(redis-server)
[ -f "$FONT" ] || missing+=(fonts-dejavu-core)
command -v taskset >/dev/null && command -v nsenter >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq "${missing[@]}" </dev/null
fi

if [ "${SLOWLINK_SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    cargo build --release -p relais-cli -p relais-bench
fi
RELAIS=${SLOWLINK_RELAIS:-$ROOT/target/release/relais}
BENCH=$ROOT/target/release/relais-bench
REPORT=$ROOT/target/release/relais-bench-report

if [ "$(nproc)" -ge 2 ]; then
    SERVER_PIN=(taskset -c 0)
    GEN_PIN=(taskset -c 1)
else
    SERVER_PIN=()
    GEN_PIN=()
fi
PRIO=(nice -n "${BENCH_NICE:--10}")
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true

# --- the network ---------------------------------------------------------------
log "namespaces $NS_SRV and $NS_CLI, veth $VETH_SRV ($SRV_IP/30) <-> $VETH_CLI ($CLI_IP/30)"
ip netns add "$NS_SRV"
MADE_NS+=("$NS_SRV")
ip netns add "$NS_CLI"
MADE_NS+=("$NS_CLI")
ip link add "$VETH_SRV" netns "$NS_SRV" type veth peer name "$VETH_CLI" netns "$NS_CLI"
ip -n "$NS_SRV" addr add "$SRV_IP/30" dev "$VETH_SRV"
ip -n "$NS_CLI" addr add "$CLI_IP/30" dev "$VETH_CLI"
for ns in "$NS_SRV" "$NS_CLI"; do
    ip -n "$ns" link set lo up
done
ip -n "$NS_SRV" link set "$VETH_SRV" up
ip -n "$NS_CLI" link set "$VETH_CLI" up

# Command prefixes that run a command in a namespace. nsenter (not `ip netns
# exec`, which forks and waits) execs the command in place, and a prefix (not
# a shell function, which would run in a subshell) keeps it so, so that `$!`
# is the command's own PID: the one to stop, and the server's for its CPU.
IN_SRV=(nsenter --net="/run/netns/$NS_SRV" --)
IN_CLI=(nsenter --net="/run/netns/$NS_CLI" --)

for _ in $(seq 1 50); do
    ip -n "$NS_CLI" link show "$VETH_CLI" | grep -q LOWER_UP && break
    sleep 0.1
done

# port_open PORT: something listens on SRV_IP:PORT (checked inside srv).
port_open() { "${IN_SRV[@]}" bash -c "exec 3<>/dev/tcp/$SRV_IP/$1" 2>/dev/null; }

# shellcheck source=bench/servers.sh
. "$ROOT/bench/servers.sh"
SERVER_PREFIX=("${IN_SRV[@]}" "${PRIO[@]}" "${SERVER_PIN[@]}")

# run_one RATE SYSTEM PORT
run_one() {
    local rate=$1 system=$2 port=$3
    local kbit out start reader_pid senders_pid ok=1
    kbit=$(rate_kbit "$rate")
    out="$RESULTS/slowlink-$(printf '%05d' "$kbit")kbit-$system.json"
    # A fresh qdisc per run (zeroed counters).
    tc -n "$NS_SRV" qdisc del dev "$VETH_SRV" root 2>/dev/null || true
    tc -n "$NS_SRV" qdisc add dev "$VETH_SRV" root tbf rate "$rate" \
        burst "$TBF_BURST" latency "$TBF_LATENCY"
    start_server "$system" "$SRV_IP" "$port" "$((port + 1))"
    start=$(date +%s.%N | awk -v lead="$LEAD" '{printf "%.3f", $1 + lead}')
    local common=(--system "$system" --addr "$SRV_IP:$port" --clients "$SENDERS"
        --rate "$MSG_RATE" --payload "$PAYLOAD" --duration "$DURATION" --warmup "$WARMUP"
        --drain-ms "$DRAIN_MS" --start-at "$start" --label slowlink --link-kbit "$kbit" --json)
    log "$rate: $system, $SENDERS senders + 1 reader, D=${DURATION}s (window: last ${WINDOW}s)"
    "${IN_CLI[@]}" "${PRIO[@]}" "${GEN_PIN[@]}" "$BENCH" --role reader --window "$WINDOW" "${common[@]}" \
        >"$out.reader" 2>"$LOGS/reader.err" &
    reader_pid=$!
    STARTED+=("$reader_pid")
    "${IN_SRV[@]}" "${PRIO[@]}" "${GEN_PIN[@]}" "$BENCH" --server-pid "$SERVER_PID" "${common[@]}" \
        >"$out.senders" 2>"$LOGS/senders.err" &
    senders_pid=$!
    STARTED+=("$senders_pid")
    wait "$reader_pid" || { ok=0; log "reader failed"; }
    wait "$senders_pid" || { ok=0; log "senders failed"; }
    local who
    for who in reader senders; do
        if [ -s "$LOGS/$who.err" ]; then
            log "$who said: $(head -c 600 "$LOGS/$who.err")"
        fi
    done
    if [ $ok = 1 ]; then
        cat "$out.reader" "$out.senders" >"$out.tmp"
        mv "$out.tmp" "$out"
        summary "$out"
    else
        FAILED+=("$rate/$system")
    fi
    rm -f "$out.reader" "$out.senders"
    stop_pid "$SERVER_PID"
    tc -n "$NS_SRV" -s qdisc show dev "$VETH_SRV" | sed -n 's/^ *Sent/    tbf: sent/p' >&2
}

# One line per run, from the two JSON lines (python3 if present).
summary() {
    command -v python3 >/dev/null || return 0
    python3 - "$1" <<'PY' >&2 || true
import json, sys
r, s = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
x = r["reader"]; a = x["state_age_ms"]
print(f"    state age p50 {a['p50']:.1f} / p99 {a['p99']:.1f} / max {a['max']:.1f} ms; "
      f"received {x['received_in_window']} of {x['sent_in_window']}; "
      f"others' p99 {s['latency_ms']['p99']:.2f} ms; failed {r['failed_clients']}+{s['failed_clients']}")
PY
}

mkdir -p "$RESULTS"
rm -f "$RESULTS"/slowlink-*.json "$RESULTS"/slowlink-meta.txt

n_rates=$(wc -w <<<"$RATES")
n_systems=$(wc -w <<<"$SYSTEMS")
per_run=$(( LEAD + WARMUP + DURATION + 2 ))
log "$((n_rates * n_systems)) runs of ~${per_run} s: ~$(( n_rates * n_systems * per_run / 60 )) min $(( n_rates * n_systems * per_run % 60 )) s"

{
    echo "date:       $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine:    $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
    echo "link:       veth between two namespaces; server side: tc tbf rate R burst $TBF_BURST latency $TBF_LATENCY (server → reader only)"
    echo "clients:    $SENDERS senders (and readers) at $MSG_RATE Hz, $PAYLOAD B, with the server; 1 reader behind the link"
    echo "pinning:    server on core 0, senders and reader on core 1 (taskset); nice ${BENCH_NICE:--10}"
    if [ -n "${SLOWLINK_RELAIS:-}" ]; then
        echo "relais:     $RELAIS, default settings"
    else
        echo "relais:     $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)'), release build, default settings"
    fi
    echo "nats:       $(nats-server --version 2>&1 | head -1)"
    echo "redis:      $(redis-server --version 2>&1 | head -1)"
    echo "runs:       D = ${DURATION} s measured (+${WARMUP} s warm-up, ${DRAIN_MS} ms drain); state age over the last ${WINDOW} s"
} >"$RESULTS/slowlink-meta.txt"

began=$(date +%s)
port=20000
for rate in $RATES; do
    for system in $SYSTEMS; do
        port=$((port + 2))
        run_one "$rate" "$system" "$port"
    done
done
log "runs took $(( $(date +%s) - began )) s"
[ ${#FAILED[@]} -eq 0 ] || log "FAILED: ${FAILED[*]} (no results for them)"

"$REPORT" --results "$RESULTS" --out BENCHMARKS.md --plot bench/benchmarks.png \
    --plot-link bench/benchmarks.png --font "$FONT" \
    --meta "$RESULTS/meta.txt" --notes bench/NOTES.md
log "done: BENCHMARKS.md, bench/slowlink.png, $RESULTS/slowlink-*.json"
[ ${#FAILED[@]} -eq 0 ]
