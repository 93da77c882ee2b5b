# Sourced by bench/compare.sh and bench/slowlink.sh: starts and stops the
# servers under test the same way for both.
#
# The caller defines: log MESSAGE..., port_open PORT (something listens on
# the server's address at PORT), RELAIS (the relais binary), LOGS (a
# directory for the servers' output), STARTED (an array of PIDs to stop on
# exit) and SERVER_PREFIX (an array the server command runs under: a
# namespace, nice, taskset; it must exec the command, so that `$!` is the
# server's own PID).

SERVER_PID=""

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
    for _ in $(seq 1 100); do
        port_open "$port" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "$system did not start; its log:"
    cat "$LOGS/$system.log" >&2
    return 1
}

# stop_pid PID: stops a process this script started and reaps it.
stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
