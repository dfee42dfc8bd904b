# Sourced by scripts/e2e/ctcp and scripts/demo: IPsec-over-TCP tunnels across the lab, run by
# the cTCP peer emulator (perf/src/bin/ctcp-peer.rs), and their figures.
# shellcheck shell=bash
#
# Needs lib/lab.bash, a function ctl (tollgatectl on the lab's socket) and these variables:
# CTCP_PEER_BIN (the emulator), CTCP_WORK (a directory for the reports), CTCP_COUNT datagrams
# each way at CTCP_RATE per second.

CTCP_PORT=10000
ctcp_next_sport=41000
# The headends started, for the caller's clean-up (each also ends by itself).
ctcp_pids=()

# ctcp_tunnel NAME MODE [EMULATOR ARGS...]: a headend in tg-server and a client in tg-client,
# one tunnel from a fresh source port (so a new flow). Their reports are
# $CTCP_WORK/NAME.{client,headend}.json (logs .log), and the flow's entry in tollgate's table
# right after the run $CTCP_WORK/NAME.flow.json ({} if not found). Fails if either side did.
ctcp_tunnel() {
    local name=$1 mode=$2 sport hpid rc=0 limit
    shift 2
    sport=$ctcp_next_sport
    ctcp_next_sport=$((ctcp_next_sport + 1))
    limit=$((CTCP_COUNT / CTCP_RATE + 60))
    rm -f "$CTCP_WORK/$name".*
    timeout "$limit" ip netns exec "$LAB_NS_SERVER" "$CTCP_PEER_BIN" headend \
        --listen "$LAB_V4_SERVER:$CTCP_PORT" --mode "$mode" --count "$CTCP_COUNT" --rate "$CTCP_RATE" \
        "$@" --report "$CTCP_WORK/$name.headend.json" 2>"$CTCP_WORK/$name.headend.log" &
    hpid=$!
    ctcp_pids+=("$hpid")
    # The headend opens its raw socket, then installs its nftables table: once the table is
    # there it answers (the client's SYN retries cover a slow start, but not one past them).
    wait_until 20 ctcp_headend_ready "$hpid" || rc=1
    timeout "$limit" ip netns exec "$LAB_NS_CLIENT" "$CTCP_PEER_BIN" client \
        --local "$LAB_V4_CLIENT" --sport "$sport" --connect "$LAB_V4_SERVER:$CTCP_PORT" \
        --mode "$mode" --count "$CTCP_COUNT" --rate "$CTCP_RATE" "$@" \
        --report "$CTCP_WORK/$name.client.json" 2>"$CTCP_WORK/$name.client.log" || rc=$?
    wait "$hpid" || rc=$((rc ? rc : $?))
    # Workers answer the listing themselves, between bursts: it is current.
    ctl --json flows list --port "$CTCP_PORT" --page-size 1000 2>/dev/null |
        jq -c --arg src "$LAB_V4_CLIENT:$sport" '[.flows[]? | select(.src == $src)][0] // {}' \
            >"$CTCP_WORK/$name.flow.json" 2>/dev/null || echo '{}' >"$CTCP_WORK/$name.flow.json"
    return "$rc"
}

# ctcp_headend_ready PID: the headend started as PID (timeout, whose child runs it in the
# namespace) has installed its nftables table, ip ctcp_peer_<its pid>.
ctcp_headend_ready() {
    local child
    child=$(pgrep -P "$1" | head -n 1) || return 1
    ip netns exec "$LAB_NS_SERVER" nft list tables 2>/dev/null | grep -qx "table ip ctcp_peer_$child"
}

# ctcp_report NAME ROLE FIELD: a field of an emulator's report (0 if absent).
ctcp_report() { jq -r --arg f "$3" '.[$f] // 0' "$CTCP_WORK/$1.$2.json" 2>/dev/null || echo 0; }

# ctcp_ratio NAME [back]: % of the client's datagrams the headend received (with "back", of
# the headend's the client received), one decimal.
ctcp_ratio() {
    local from=client to=headend
    [ "${2:-}" != back ] || { from=headend && to=client; }
    awk -v got="$(ctcp_report "$1" "$to" datagrams_received)" -v sent="$(ctcp_report "$1" "$from" datagrams_sent)" \
        'BEGIN { printf "%.1f", (sent > 0 ? 100 * got / sent : 0) }'
}

# ctcp_flow NAME FIELD: a field of the tunnel's flow as `flows list` showed it ("-" if absent).
ctcp_flow() { jq -r --arg f "$2" '.[$f] // "-"' "$CTCP_WORK/$1.flow.json" 2>/dev/null || echo -; }

# ctcp_logs NAME ROLE: the start of an emulator's messages, on one line.
ctcp_logs() { tr '\n' ' ' <"$CTCP_WORK/$1.$2.log" 2>/dev/null | head -c 300; }

# ctcp_ran NAME: both sides wrote their report.
ctcp_ran() { [ -s "$CTCP_WORK/$1.client.json" ] && [ -s "$CTCP_WORK/$1.headend.json" ]; }

# ctcp_row NAME SETUP: the tunnel as a line of ctcp_table's.
ctcp_row() {
    printf '%-16s %-44s %11s %7s %7s %-8s %s\n' "$1" "$2" \
        "$(ctcp_report "$1" headend datagrams_received)/$(ctcp_report "$1" client datagrams_sent)" \
        "$(ctcp_ratio "$1")%" "$(ctcp_ratio "$1" back)%" "$(ctcp_flow "$1" mode)" \
        "$(ctcp_flow "$1" handed_over | sed 's/^-$//')$([ "$(ctcp_flow "$1" detected)" = - ] || echo " ($(ctcp_flow "$1" detected))")"
}

# ctcp_table ROWS...: the header and the rows.
ctcp_table() {
    printf '%-16s %-44s %11s %7s %7s %-8s %s\n' TUNNEL SETUP "DELIVERED" "C->H" "H->C" MODE "HANDED OVER"
    printf '%s\n' "$@"
}
