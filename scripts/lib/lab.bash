# shellcheck shell=bash
# The lab's names, addresses and paths, shared by scripts/lab, scripts/demo and scripts/e2e/*.
# Not executable on its own.
#
#   netns tg-client                    root namespace                     netns tg-server
#   tg-c0 198.18.0.1/24  <-veth->  tg-cl [ tollgate ] tg-sv  <-veth->  tg-s0 198.18.0.2/24
#         2001:2::1/64              inside           outside                  2001:2::2/64
# shellcheck disable=SC2034  # the names are used by the scripts that source this file

LAB_NS_CLIENT=tg-client
LAB_NS_SERVER=tg-server
LAB_IF_CLIENT=tg-c0 # in tg-client
LAB_IF_SERVER=tg-s0 # in tg-server
LAB_PEER_CLIENT=tg-cl # root namespace, tollgate's inside port
LAB_PEER_SERVER=tg-sv # root namespace, tollgate's outside port
LAB_V4_CLIENT=198.18.0.1
LAB_V4_SERVER=198.18.0.2
LAB_V6_CLIENT=2001:2::1
LAB_V6_SERVER=2001:2::2
LAB_V4_PREFIX=24
LAB_V6_PREFIX=64
LAB_MTU=1500

LAB_STATE=/run/tollgate-lab       # while the lab is up
LAB_LAST=/run/tollgate-lab.last   # kept by 'lab down': the last run's log and final stats
LAB_FILE_PREFIX=tollgate-lab      # DPDK --file-prefix, unique to the lab's tollgate
LAB_PID_FILE=$LAB_STATE/tollgate.pid
LAB_LOG=$LAB_STATE/tollgate.log
LAB_STATS=$LAB_STATE/stats.json
LAB_CONTROL_SOCKET=$LAB_STATE/control.sock
LAB_POLICY=$LAB_STATE/policy.json  # the lab's policy lives and dies with the lab
LAB_IDLE_SLEEP_US=20              # when the workers take every CPU (see 'lab up')
LAB_LOSS_TABLE=tollgate_lab_loss  # nftables table (family inet) inside a namespace

# lab_ns client|server -> namespace name
lab_ns() {
    case "$1" in
        client) echo "$LAB_NS_CLIENT" ;;
        server) echo "$LAB_NS_SERVER" ;;
        *) return 1 ;;
    esac
}

# lab_if client|server -> the veth end inside that namespace
lab_if() {
    case "$1" in
        client) echo "$LAB_IF_CLIENT" ;;
        server) echo "$LAB_IF_SERVER" ;;
        *) return 1 ;;
    esac
}

lab_ns_exists() {
    [ -e "/run/netns/$1" ]
}

# lab_listening NS PORT: something listens on TCP PORT inside namespace NS.
lab_listening() {
    ip netns exec "$1" ss -Hltn "sport = :$2" 2>/dev/null | grep -q .
}

# lab_python: Debian's python3 when present (setup installs it), else whatever python3 is on PATH.
lab_python() {
    if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else command -v python3; fi
}

# lab_wait_free SECONDS: wait, polling every 10 s, until no scripts/e2e/ test runs and
# 'scripts/lab status' says the lab is down (exit 3): the lab is shared. Returns 1 if it is
# still busy after SECONDS. Needs scripts/lib/shell.bash (TG_ROOT, now_ms).
lab_wait_free() {
    local limit=$1 deadline rc
    deadline=$(($(now_ms) + limit * 1000))
    while :; do
        rc=0
        "$TG_ROOT/scripts/lab" status >/dev/null 2>&1 || rc=$?
        if ((rc == 3)) && ! pgrep -f 'scripts/e2e/' >/dev/null; then return 0; fi
        (($(now_ms) < deadline)) || return 1
        sleep 10
    done
}
