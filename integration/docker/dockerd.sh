#!/bin/sh
# Start or stop a private Docker engine for the remote suite: its own data root (kept,
# so built images are cached between runs), its own socket, pidfile and log, no bridge
# and no iptables rules, so containers can only use host networking. It never touches a
# system Docker engine or its socket.
#
#   dockerd.sh start    start it (or reuse the one a previous start left running), wait
#                       until it answers, print the DOCKER_HOST to use
#   dockerd.sh stop     stop it and every container it runs
#   dockerd.sh status   exit 0 when it runs and answers
#   dockerd.sh host     print the DOCKER_HOST of the private engine
#
# GAIA_DOCKERD_DIR (default /var/lib/gaia-dockerd) holds the data root and the log;
# GAIA_DOCKERD_RUN (default /run/gaia-dockerd) the socket, the pidfile and the exec root.
# GAIA_DOCKERD_STORAGE_DRIVER forces a storage driver; by default overlay2 is tried,
# then vfs (slower, more disk) where overlay mounts are refused.
set -eu

DIR=${GAIA_DOCKERD_DIR:-/var/lib/gaia-dockerd}
RUN=${GAIA_DOCKERD_RUN:-/run/gaia-dockerd}
SOCKET="$RUN/docker.sock"
PIDFILE="$RUN/dockerd.pid"
LOG="$DIR/dockerd.log"
HOST="unix://$SOCKET"

say() { echo "dockerd.sh: $*" >&2; }

running_pid() {
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

answers() {
    # the engine's own ping endpoint, through its socket: needs no docker client
    [ -S "$SOCKET" ] && curl -fsS --max-time 2 --unix-socket "$SOCKET" http://engine/_ping >/dev/null 2>&1
}

wait_until_answers() {
    # $1: pid of the daemon, $2: seconds
    waited=0
    while [ "$waited" -lt "$(($2 * 10))" ]; do
        if answers; then
            return 0
        fi
        kill -0 "$1" 2>/dev/null || return 1
        sleep 0.1
        waited=$((waited + 1))
    done
    return 1
}

start_with() {
    # $1: storage driver; returns 0 once the daemon answers
    say "starting dockerd (storage driver $1, data root $DIR/data, log $LOG)"
    mkdir -p "$DIR/data" "$RUN"
    rm -f "$SOCKET" "$PIDFILE"
    # setsid: the daemon outlives this script and ignores the caller's Ctrl-C
    setsid dockerd \
        --data-root "$DIR/data" \
        --exec-root "$RUN/exec" \
        --pidfile "$PIDFILE" \
        --host "$HOST" \
        --bridge=none \
        --iptables=false \
        --ip-masq=false \
        --userland-proxy=false \
        --storage-driver "$1" \
        --log-level warn \
        </dev/null >>"$LOG" 2>&1 &
    pid=$!
    if wait_until_answers "$pid" 60; then
        return 0
    fi
    say "dockerd with $1 did not come up; the end of $LOG:"
    tail -n 15 "$LOG" >&2 || true
    stop_pid "$pid"
    return 1
}

stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    waited=0
    while kill -0 "$1" 2>/dev/null; do
        if [ "$waited" -ge 300 ]; then
            say "dockerd $1 ignored SIGTERM for 30 s; killing it"
            kill -KILL "$1" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

start() {
    if pid=$(running_pid) && answers; then
        say "reusing the private dockerd $pid"
        echo "$HOST"
        return 0
    fi
    command -v dockerd >/dev/null 2>&1 || { say "dockerd is not installed (run integration/docker/install-engine.sh)"; exit 1; }
    command -v curl >/dev/null 2>&1 || { say "curl is needed to ping the engine"; exit 1; }
    if [ -n "${GAIA_DOCKERD_STORAGE_DRIVER:-}" ]; then
        start_with "$GAIA_DOCKERD_STORAGE_DRIVER" || exit 1
    elif ! start_with overlay2; then
        say "overlay2 failed; falling back to the vfs storage driver"
        start_with vfs || exit 1
    fi
    echo "$HOST"
}

stop() {
    if pid=$(running_pid); then
        say "stopping dockerd $pid"
        stop_pid "$pid"
    fi
    rm -f "$PIDFILE"
    # dockerd leaves its bind mount of the host's network namespace (exec/netns/default)
    awk -v run="$RUN/" 'index($2, run) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mount; do
        umount "$mount" 2>/dev/null || true
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) running_pid >/dev/null && answers ;;
    host) echo "$HOST" ;;
    *)
        echo "usage: $0 start|stop|status|host" >&2
        exit 2
        ;;
esac
