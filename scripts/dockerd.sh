#!/usr/bin/env bash
# A private Docker engine for tests (Debian's docker.io), per shared/reference/real-engines.md §4.
#
# Usage: scripts/dockerd.sh start DIR    install docker.io + debootstrap if missing, start dockerd
#                                        with everything under DIR, wait for the API, and print
#                                        DOCKER_HOST=unix://DIR/docker.sock on stdout
#        scripts/dockerd.sh stop DIR     SIGTERM the daemon, wait, unmount what it left under DIR
#        scripts/dockerd.sh status DIR   exit 0 (and print DOCKER_HOST=...) when the API answers
#
# e.g.   export "$(scripts/dockerd.sh start "$PWD/.cache/docker")"
#
# `start` is idempotent: when the daemon of DIR already answers it only prints DOCKER_HOST.
# The daemon keeps Docker's default networking (docker0 bridge, iptables); never start a
# daemon with --bridge=none: it deletes the shared docker0 interface and breaks other daemons.
# Needs root. Daemon output goes to DIR/dockerd.log.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
log() { echo "dockerd.sh: $*" >&2; }

[ $# -eq 2 ] || usage
CMD="$1"
mkdir -p "$2" 2>/dev/null || true
DIR="$(cd "$2" 2>/dev/null && pwd)" || { log "no such folder: $2"; exit 2; }
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"
LOGFILE="$DIR/dockerd.log"

ensure_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]} with apt (log: $DIR/apt.log)"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
            >"$DIR/apt.log" 2>&1; then
        log "apt failed; last lines of $DIR/apt.log:"
        tail -n 20 "$DIR/apt.log" >&2
        return 1
    fi
}

daemon_pid() {
    local pid
    [ -s "$PIDFILE" ] || return 1
    pid="$(cat "$PIDFILE")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # A stale pidfile whose pid now belongs to another program is not ours.
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "dockerd" ] || return 1
    echo "$pid"
}

api_answers() {
    [ -S "$SOCK" ] && curl -fsS --max-time 2 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1
}

unmount_leftovers() {
    # Mounts the daemon (or a killed one) left under DIR, deepest first.
    local m
    if mountpoint -q "$DIR/exec/netns/default" 2>/dev/null; then
        umount "$DIR/exec/netns/default" 2>/dev/null || umount -l "$DIR/exec/netns/default" 2>/dev/null || true
    fi
    awk -v d="$DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
}

start() {
    # containerd's sockets live under DIR/exec; a unix socket path is limited to 107 bytes.
    if [ ${#DIR} -gt 60 ]; then
        log "DIR path too long for the daemons' unix sockets (${#DIR} > 60 chars): $DIR"
        return 2
    fi
    if daemon_pid >/dev/null && api_answers; then
        echo "DOCKER_HOST=unix://$SOCK"
        return 0
    fi
    ensure_packages
    if pid="$(daemon_pid)"; then
        # Running but not answering yet (another start in progress?): give it time below.
        log "dockerd (pid $pid) is running; waiting for its API"
    else
        rm -f "$PIDFILE" "$SOCK"
        unmount_leftovers
        mkdir -p "$DIR/data" "$DIR/exec"
        log "starting dockerd (log: $LOGFILE)"
        setsid dockerd -H "unix://$SOCK" --data-root "$DIR/data" --exec-root "$DIR/exec" \
            --pidfile "$PIDFILE" </dev/null >>"$LOGFILE" 2>&1 &
        pid=$!
    fi
    local i
    for i in $(seq 1 60); do                    # up to ~30 s
        if api_answers; then
            echo "DOCKER_HOST=unix://$SOCK"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "dockerd exited; last lines of $LOGFILE:"
            tail -n 20 "$LOGFILE" >&2 || true
            return 1
        fi
        sleep 0.5
    done
    log "dockerd's API did not answer within 30 s; last lines of $LOGFILE:"
    tail -n 20 "$LOGFILE" >&2 || true
    return 1
}

stop() {
    local pid i
    if pid="$(daemon_pid)"; then
        log "stopping dockerd (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        # dockerd stops running containers first (their stop timeout, 10 s by default).
        for i in $(seq 1 120); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "dockerd did not exit after 30 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
        fi
    else
        log "dockerd of $DIR is not running"
    fi
    rm -f "$PIDFILE"
    unmount_leftovers
}

case "$CMD" in
    start) start ;;
    stop) stop ;;
    status)
        if daemon_pid >/dev/null && api_answers; then echo "DOCKER_HOST=unix://$SOCK"; else exit 1; fi ;;
    *) usage ;;
esac
