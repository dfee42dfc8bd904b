# shellcheck shell=bash
# Sourced by the scripts under scripts/: messages, the root check, bounded waits.
# Not executable on its own.

# shellcheck disable=SC2034  # used by the scripts that source this file
TG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TG_PROG=${TG_PROG:-scripts/$(basename "$0")}

die() {
    printf '%s: error: %s\n' "$TG_PROG" "$*" >&2
    exit 1
}

note() {
    printf '%s: %s\n' "$TG_PROG" "$*"
}

warn() {
    printf '%s: warning: %s\n' "$TG_PROG" "$*" >&2
}

# header_help: the comment block at the top of the running script (after the shebang), without
# the leading '# ': every script's --help.
header_help() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

require_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (try: sudo $TG_PROG)"
}

# now_ms: milliseconds since the epoch.
now_ms() {
    echo $(($(date +%s%N) / 1000000))
}

# wait_until SECONDS CMD [ARGS]: run CMD every 0.2 s until it succeeds.
# Returns 1 if it has not succeeded after SECONDS.
wait_until() {
    local limit=$1 deadline
    shift
    deadline=$(($(now_ms) + limit * 1000))
    until "$@"; do
        (($(now_ms) < deadline)) || return 1
        sleep 0.2
    done
}

# pid_alive PID: true while PID exists (and is not a zombie).
pid_alive() {
    local state
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

pid_gone() {
    ! pid_alive "$1"
}

# stop_pid PID SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL and wait up to 5 s.
# Prints "term" if it ended on SIGTERM, "kill" if it needed SIGKILL, "gone" if it was not running.
# Returns 1 if it is still there after SIGKILL.
stop_pid() {
    local pid=$1 limit=$2
    if ! pid_alive "$pid"; then
        echo gone
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    if wait_until "$limit" pid_gone "$pid"; then
        echo term
        return 0
    fi
    kill -KILL "$pid" 2>/dev/null || true
    echo kill
    wait_until 5 pid_gone "$pid"
}
