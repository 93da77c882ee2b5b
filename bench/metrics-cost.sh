#!/usr/bin/env bash
# The cost of metrics: ONE relais binary, run with metrics off (no
# --metrics-listen: Metrics::disabled, nothing recorded) and on
# (--metrics-listen 127.0.0.1:0, /metrics fetched once a second during the
# run, as Prometheus would), alternating, with this tree's generator: server
# pinned to core 0, generator (and the scraper's curl) to core 1.
#
#   bench/metrics-cost.sh               # N=100 R=60 P=64 D=10, 40 rounds: ~16 min
#   ROUNDS=12 D=5 RELAIS=/path/to/relais RELAIS_BENCH=/path/to/relais-bench \
#     OUT=runs.txt bench/metrics-cost.sh
#
# Binaries: $CARGO_TARGET_DIR (or target)/release/{relais,relais-bench}.
# One round's on/off ratio moves by ~10 % (sd) on a shared 2-core VM, so
# telling 3 % apart takes ~40 rounds; the summary prints the interval.
#
# Round r runs off then on when r is odd, on then off when even (ABBA), so a
# drift in the machine's load falls on both sides alike. The server answering
# the scrapes is part of "on"'s server CPU, which is the point; curl's own
# CPU is not (it runs on core 1, as a Prometheus elsewhere would). Prints
# one line per run, then for each side the medians (and min-max) of server
# CPU per million deliveries and of p50/p99 latency, the ratio on/off of the
# medians, the per-round ratios (median, range, geometric mean with a ~95 %
# interval), and the same interval for server CPU / generator CPU (the
# generator's CPU tracks how fast the shared machine ran that run). A run
# marked † had its generator at >= 75 % of its core (as in BENCHMARKS.md):
# the generator, not the server, may have set its numbers; SHORT, under
# 99.5 % delivered: the server fell behind (its CPU per delivery then drops).
#
# Talks to nothing but 127.0.0.1; lifts the per-address limits (every client
# comes from 127.0.0.1); stops its servers and scrapers. OUT=FILE keeps the
# raw lines ("side round scrapes_ok scrapes metrics_deliveries load1 JSON").
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${RELAIS:-$TARGET/release/relais}
BENCH=${RELAIS_BENCH:-$TARGET/release/relais-bench}
N=${N:-100}; R=${R:-60}; P=${P:-64}; D=${D:-10}; ROUNDS=${ROUNDS:-40}
for f in "$BIN" "$BENCH"; do
  [ -x "$f" ] || { echo "no $f: cargo build --release -p relais-cli -p relais-bench" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "needs curl" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || true
PIN_S=(); PIN_G=()
if [ "$(nproc)" -ge 2 ]; then PIN_S=(taskset -c 0); PIN_G=(taskset -c 1); fi
out=${OUT:-$(mktemp)}
[ -n "${OUT:-}" ] && : >"$out"
tmp=$(mktemp -d)
pid=; spid=
cleanup() {
  [ -n "$spid" ] && kill "$spid" 2>/dev/null
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$tmp"; if [ -z "${OUT:-}" ]; then rm -f "$out"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# The scraper's bound: warm-up (1 s), D, drain (0.5 s), connecting, and spare.
SCRAPES_MAX=$(( ${D%.*} + 8 ))

echo "$BIN ($("$BIN" --version 2>/dev/null)), N=$N R=$R P=$P D=$D, $ROUNDS rounds" >&2
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="off on"; else order="on off"; fi
  for side in $order; do
    extra=()
    [ $side = on ] && extra=(--metrics-listen 127.0.0.1:0)
    : >"$tmp/stdout"; : >"$tmp/scrapes"; rm -f "$tmp/last"
    "${PIN_S[@]}" "$BIN" serve --listen 127.0.0.1:0 --ws-listen 127.0.0.1:0 \
      --max-connections-per-ip 0 --max-handshakes-per-ip 0 --max-joins-per-ip 0 \
      "${extra[@]}" >"$tmp/stdout" 2>/dev/null &
    pid=$!
    # The addresses it bound (port 0), from its stdout.
    addr=; url=
    for _ in $(seq 1 50); do
      addr=$(sed -n 's/^relais listening on //p' "$tmp/stdout")
      url=$(sed -n 's/^relais metrics on //p' "$tmp/stdout")
      [ -n "$addr" ] && { [ $side = off ] || [ -n "$url" ]; } && break
      sleep 0.1
    done
    if [ -z "$addr" ] || { [ $side = on ] && [ -z "$url" ]; }; then
      echo "$side run $r: the server did not start" >&2
      kill $pid 2>/dev/null; wait $pid 2>/dev/null; pid=
      continue
    fi
    if [ $side = on ]; then
      # Once a second until the generator is done (bounded in any case).
      ( for _ in $(seq 1 "$SCRAPES_MAX"); do
          "${PIN_G[@]}" curl -s -o /dev/null -w '%{http_code}\n' --max-time 2 "$url" >>"$tmp/scrapes"
          sleep 1
        done ) &
      spid=$!
    fi
    load=$(cut -d' ' -f1 /proc/loadavg)
    json=$("${PIN_G[@]}" "$BENCH" --system relais --addr "$addr" -n "$N" -r "$R" -p "$P" \
        -d "$D" --server-pid $pid --json 2>/dev/null)
    ok=$?
    mdel=-
    if [ $side = on ]; then
      kill $spid 2>/dev/null; wait $spid 2>/dev/null; spid=
      # One more, after the measured span: did the server count what it sent?
      curl -s --max-time 2 "$url" >"$tmp/last" 2>/dev/null
      mdel=$(awk '$1 == "relais_deliveries_total" { print $2 }' "$tmp/last")
      mdel=${mdel:--}
    fi
    if [ $ok = 0 ] && [ -n "$json" ]; then
      echo "$side $r $(grep -c '^200$' "$tmp/scrapes") $(wc -l <"$tmp/scrapes") $mdel $load $json" >>"$out"
    else
      echo "$side run $r failed" >&2
    fi
    kill $pid; wait $pid 2>/dev/null; pid=
  done
done
python3 - "$out" <<'PY'
import json, math, statistics as st, sys
runs = {"off": {}, "on": {}}
for line in open(sys.argv[1]):
    side, rnd, ok, scrapes, mdel, load, j = line.split(" ", 6)
    d = json.loads(j)
    gen = d["generator_cpu_s"] / d["cpu_wall_s"] if d.get("generator_cpu_s") is not None else float("nan")
    dag = " †" if gen >= 0.75 else ""
    # Short: the server fell behind (conflated) or lost CPU to other work on
    # the machine; its CPU per delivery then drops (bigger batches).
    short = d["delivered_ratio"] < 0.995
    row = dict(cpu=d["server_cpu_s_per_million"], p50=d["latency_ms"]["p50"],
               p99=d["latency_ms"]["p99"], dagger=bool(dag), short=short)
    # The generator's CPU per run: a gauge of how fast the machine ran then
    # (it does the same work on both sides).
    row["per_gen"] = d["server_cpu_s"] / d["generator_cpu_s"] if d.get("generator_cpu_s") else None
    runs[side][int(rnd)] = row
    extra = ""
    if side == "on":
        extra = "  scrapes %s/%s  counted %s" % (ok, scrapes, mdel)
    print("round %2s %-3s cpu %.3f s/M  p50 %.3f ms  p99 %.3f ms  delivered %.2f%%  %.0f/s"
          "  generator %2.0f%%%s  load %s%s"
          % (rnd, side, row["cpu"], row["p50"], row["p99"], 100 * d["delivered_ratio"],
             d["deliveries_per_s"], 100 * gen, dag, load, extra + ("  SHORT" if short else "")))
med = {}
for side, rs in runs.items():
    if not rs:
        continue
    vals = {k: [r[k] for r in rs.values()] for k in ("cpu", "p50", "p99")}
    med[side] = {k: st.median(v) for k, v in vals.items()}
    daggers = sum(r["dagger"] for r in rs.values())
    shorts = sum(r["short"] for r in rs.values())
    print("median %-3s (%d runs%s%s): cpu %.3f s/M (%.3f-%.3f)  p50 %.3f ms (%.3f-%.3f)  p99 %.3f ms (%.3f-%.3f)"
          % (side, len(rs), ", %d †" % daggers if daggers else "",
             ", %d short" % shorts if shorts else "",
             med[side]["cpu"], min(vals["cpu"]), max(vals["cpu"]),
             med[side]["p50"], min(vals["p50"]), max(vals["p50"]),
             med[side]["p99"], min(vals["p99"]), max(vals["p99"])))
if "off" in med and "on" in med:
    print("on/off of the medians: cpu %.3f  p50 %.3f  p99 %.3f"
          % tuple(med["on"][k] / med["off"][k] for k in ("cpu", "p50", "p99")))
    both = [r for r in sorted(runs["on"]) if r in runs["off"]]
    clean = [r for r in both if not any(runs[s][r]["short"] or runs[s][r]["dagger"] for s in runs)]
    sets = [("all rounds", both)]
    if len(clean) < len(both):
        sets.append(("clean rounds (both >= 99.5 % delivered, no †)", clean))
    for what, rounds in sets:
        pairs = [runs["on"][r]["cpu"] / runs["off"][r]["cpu"] for r in rounds]
        if pairs:
            print("on/off cpu per round, %s (%d): median %.3f, range %.3f-%.3f: %s"
                  % (what, len(pairs), st.median(pairs), min(pairs), max(pairs),
                     " ".join("%.3f" % p for p in pairs)))
    def interval(what, ratios):
        # Geometric mean of the per-round ratios and its ~95 % interval (t).
        if len(ratios) < 3:
            return
        logs = [math.log(x) for x in ratios]
        m, se = st.mean(logs), st.stdev(logs) / math.sqrt(len(logs))
        t = 1.96 + 2.4 / (len(logs) - 1)
        print("%s: geometric mean %.3f, ~95%% interval %.3f-%.3f (sd of one round %.1f %%)"
              % (what, math.exp(m), math.exp(m - t * se), math.exp(m + t * se),
                 100 * st.stdev(logs)))
    interval("on/off cpu per round", [runs["on"][r]["cpu"] / runs["off"][r]["cpu"] for r in both])
    if all(runs[s][r]["per_gen"] for s in runs for r in both):
        interval("on/off server CPU / generator CPU per round",
                 [runs["on"][r]["per_gen"] / runs["off"][r]["per_gen"] for r in both])
    if not clean:
        print("no clean rounds")
    elif len(clean) < len(both):
        m = {s: st.median(runs[s][r]["cpu"] for r in clean) for s in runs}
        print("clean rounds only: cpu off %.3f, on %.3f s/M: on/off %.3f" % (m["off"], m["on"], m["on"] / m["off"]))
PY
