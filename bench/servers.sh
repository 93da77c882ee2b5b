# Sourced by bench/compare.sh, bench/slowlink.sh and bench/cluster.sh:
# starts and stops the servers under test the same way for all.
#
# The caller defines: log MESSAGE..., port_open PORT (something listens on
# the server's address at PORT; pick_port and await_port use it too), RELAIS (the relais binary), LOGS (a
# directory for the servers' output), STARTED (an array of PIDs to stop on
# exit) and SERVER_PREFIX (an array the server command runs under: a
# namespace, nice, taskset; it must exec the command, so that `$!` is the
# server's own PID).

SERVER_PID=""

# install_packages PKG...: installs Debian packages (none: nothing to do),
# with sudo unless root.
install_packages() {
    [ $# -gt 0 ] || return 0
    log "installing $*"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" </dev/null
}

# pin_servers_and_generator: sets SERVER_PIN (core 0) and GEN_PIN (core 1),
# the taskset prefixes of the servers and the generator (empty on one
# core), and PRIO (nice BENCH_NICE, default -10, when root); raises the
# open-file limit as far as it goes.
pin_servers_and_generator() {
    if [ "$(nproc)" -ge 2 ]; then
        SERVER_PIN=(taskset -c 0)
        GEN_PIN=(taskset -c 1)
    else
        log "one core only: no pinning"
        SERVER_PIN=()
        GEN_PIN=()
    fi
    PRIO=()
    if [ "$(id -u)" -eq 0 ]; then
        PRIO=(nice -n "${BENCH_NICE:--10}")
    fi
    ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true
}

# pick_port VAR: sets VAR to a port nothing listens on (port_open), below
# the kernel's ephemeral range (a port in it may be the local end of some
# connection, and then cannot be listened on), and not picked before by
# this script (servers started together get distinct ports).
PICKED_PORTS=" "
pick_port() {
    local low p
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    (( low > 12000 )) || low=32768
    for _ in $(seq 1 100); do
        p=$(( 10000 + RANDOM % (low - 10000) ))
        if [[ $PICKED_PORTS != *" $p "* ]] && ! port_open "$p"; then
            PICKED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    log "no free port found"
    return 1
}

# await_port NAME PID PORT LOG: waits (at most 10 s) until something
# accepts on PORT while process PID lives; if nothing does, shows LOG and
# fails.
await_port() {
    local name=$1 pid=$2 port=$3 logfile=$4
    for _ in $(seq 1 100); do
        port_open "$port" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    log "$name did not start; its log:"
    cat "$logfile" >&2
    return 1
}

# start_server SYSTEM ADDR PORT WS_PORT: starts relais, NATS or Redis
# listening on ADDR:PORT (relais's WebSocket port on 127.0.0.1:WS_PORT),
# records its PID in SERVER_PID and STARTED, and waits until it accepts.
start_server() {
    local system=$1 addr=$2 port=$3 ws_port=$4
    case $system in
        relais)
            "${SERVER_PREFIX[@]}" "$RELAIS" serve --listen "$addr:$port" \
                --ws-listen "127.0.0.1:$ws_port" \
                --max-connections-per-ip 0 --max-handshakes-per-ip 0 --max-joins-per-ip 0 \
                >"$LOGS/relais.log" 2>&1 &
            ;;
        nats)
            "${SERVER_PREFIX[@]}" nats-server -a "$addr" -p "$port" >"$LOGS/nats.log" 2>&1 &
            ;;
        redis)
            # Protected mode refuses clients from other addresses than
            # loopback when there is no password; the callers bind only
            # loopback or an address inside a namespace of their own.
            "${SERVER_PREFIX[@]}" redis-server --port "$port" --bind "$addr" \
                --save '' --appendonly no --daemonize no --maxclients 10000 \
                --protected-mode no >"$LOGS/redis.log" 2>&1 &
            ;;
        *)
            log "unknown system: $system"
            return 1
            ;;
    esac
    SERVER_PID=$!
    STARTED+=("$SERVER_PID")
    await_port "$system" "$SERVER_PID" "$port" "$LOGS/$system.log"
}

# stop_pid PID: stops a process this script started and reaps it.
stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# stop_and_forget PID: stop_pid, and PID leaves STARTED (so that
# stop_started never signals a PID the system has handed out again since).
stop_and_forget() {
    local pid=$1 kept=() p
    stop_pid "$pid"
    for p in "${STARTED[@]}"; do
        [ "$p" = "$pid" ] || kept+=("$p")
    done
    STARTED=("${kept[@]}")
}

# stop_started: stops every process in STARTED still running (the exit
# trap's work).
stop_started() {
    local pid
    for pid in "${STARTED[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            stop_pid "$pid"
        fi
    done
}
