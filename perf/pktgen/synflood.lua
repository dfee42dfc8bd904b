-- perf/pktgen/synflood.lua: a TCP SYN flood through tollgate at a given rate from ranged
-- sources, for Pktgen-DPDK 23.03.
--
--   sudo pktgen -l 0-4 -n 4 -- -P -m "[1:2].0,[3:4].1" -f perf/pktgen/synflood.lua
--
-- Pktgen's port 0 is cabled to tollgate's inside port and port 1 to its outside port. Port 0
-- sends 64-byte SYNs at RATE_PPS for SECONDS to DST_IP:DST_PORT, with sequence numbers that
-- change from SYN to SYN. Every second it prints what port 0 sent, what port 1 received (SYNs
-- tollgate passed towards the servers: its own when it proxies the flow, the client's when
-- it bypasses it) and what came back to port 0 (SYN-ACKs: SYN cookies, once more handshakes
-- are in progress on a worker than proxy.max_embryonic). Compare with tollgatectl stats:
-- flow-table fill, "SYN cookies" and the drop reasons. It writes the per-second rows as CSV
-- (CSV).
--
-- Sources (SOURCE):
--   range  every source address of SRC_IP with every source port of SRC_PORT in turn (their
--          counts share no factor, so every pair comes up: 65,534 x 61 = 3,997,574 by
--          default). Pktgen builds range frames once per buffer of the port's TX pool
--          (pktgen.info.maxMbufsPerPort, 24,576 in 23.03, per TX queue) when the port starts,
--          then sends those buffers over and over; so every REFRESH_S seconds the script
--          restarts the port, and Pktgen builds the next SYNs of the range (a pause of a few
--          milliseconds while it does). Between restarts the same SYNs come again, as a
--          client's retransmissions would.
--   pcap   the SYNs of the pcap file given to Pktgen with -s 0:FILE, each with a source of its
--          own (pcap-gen syn --frames N writes N), sent over and over.
--
-- Each setting below can also be given in the environment, named as in brackets:
-- sudo SYNFLOOD_RATE_PPS=5000000 pktgen ... (sudo passes VAR=value arguments through).

-- SYNs per second port 0 sends [SYNFLOOD_RATE_PPS]; 0 sends at line rate.
local RATE_PPS = 1000000
-- How long, seconds [SYNFLOOD_SECONDS].
local SECONDS = 30
-- Where the SYNs come from: "range" or "pcap" [SYNFLOOD_SOURCE].
local SOURCE = "range"
-- Range mode: seconds between restarts onto fresh sources; 0 never [SYNFLOOD_REFRESH_S].
local REFRESH_S = 1
-- Sources: {min, max, increment} [SYNFLOOD_SRC_IP_MIN, SYNFLOOD_SRC_IP_MAX,
-- SYNFLOOD_SRC_PORT_MIN, SYNFLOOD_SRC_PORT_MAX].
local SRC_IP = { "198.18.0.1", "198.18.255.254", "0.0.0.1" }
local SRC_PORT = { 1024, 1084, 1 }
-- The server under attack [SYNFLOOD_DST_IP, SYNFLOOD_DST_PORT].
local DST_IP = "198.19.0.1"
local DST_PORT = 443
-- The sending and the receiving port [SYNFLOOD_TX_PORT, SYNFLOOD_RX_PORT].
local TX_PORT = 0
local RX_PORT = 1
-- The destination MAC address of the SYNs; "" keeps Pktgen's (port 1's own address)
-- [SYNFLOOD_DST_MAC].
local DST_MAC = ""
-- Where the per-second rows go; "" writes none [SYNFLOOD_CSV].
local CSV = "synflood.csv"

-- ---------------------------------------------------------------------------------------------

local FRAME = 64 -- a SYN without options, with its FCS

local function setting(name, default)
    local v = os.getenv("SYNFLOOD_" .. name)
    if v == nil or v == "" then
        return default
    end
    if type(default) == "number" then
        local n = tonumber(v)
        if n == nil then
            error(string.format("SYNFLOOD_%s=%s is not a number", name, v))
        end
        return n
    end
    return v
end

local function whole(name, v, min)
    local n = math.tointeger(v)
    if n == nil or n < min then
        error(string.format("SYNFLOOD_%s=%s: a whole number, at least %d", name, tostring(v), min))
    end
    return n
end

RATE_PPS = setting("RATE_PPS", RATE_PPS)
SECONDS = whole("SECONDS", setting("SECONDS", SECONDS), 1)
SOURCE = setting("SOURCE", SOURCE)
REFRESH_S = whole("REFRESH_S", setting("REFRESH_S", REFRESH_S), 0)
SRC_IP[1] = setting("SRC_IP_MIN", SRC_IP[1])
SRC_IP[2] = setting("SRC_IP_MAX", SRC_IP[2])
SRC_PORT[1] = whole("SRC_PORT_MIN", setting("SRC_PORT_MIN", SRC_PORT[1]), 0)
SRC_PORT[2] = whole("SRC_PORT_MAX", setting("SRC_PORT_MAX", SRC_PORT[2]), 0)
DST_IP = setting("DST_IP", DST_IP)
DST_PORT = whole("DST_PORT", setting("DST_PORT", DST_PORT), 0)
TX_PORT = whole("TX_PORT", setting("TX_PORT", TX_PORT), 0)
RX_PORT = whole("RX_PORT", setting("RX_PORT", RX_PORT), 0)
DST_MAC = setting("DST_MAC", DST_MAC)
CSV = setting("CSV", CSV)
if SOURCE ~= "range" and SOURCE ~= "pcap" then
    error("SYNFLOOD_SOURCE=" .. SOURCE .. ": range or pcap")
end

local function say(fmt, ...)
    print(string.format(fmt, ...))
end

-- Runs Pktgen CLI commands (the TCP flags and sequence numbers of range mode have no Lua
-- call in 23.03) from a command file; Pktgen reads a file whose name has ".lua" in it as Lua.
local function cli(lines)
    local base = os.tmpname()
    local path = base .. ".pkt"
    local f = assert(io.open(path, "w"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
    pktgen.load(path)
    os.remove(path)
    os.remove(base)
end

local function link_mbps(port)
    local state = pktgen.linkState(tostring(port))[port] or ""
    return tonumber(string.match(state, "UP%-(%d+)")) or 0
end

-- Source addresses an IPv4 range from min to max by inc gives.
local function ipv4_count(min, max, inc)
    local function value(a)
        local w, x, y, z = string.match(a, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
        if w == nil then
            error("not an IPv4 address: " .. a)
        end
        return ((tonumber(w) * 256 + tonumber(x)) * 256 + tonumber(y)) * 256 + tonumber(z)
    end
    local step = value(inc)
    if step == 0 then
        return 1
    end
    return (value(max) - value(min)) // step + 1
end

local function gcd(a, b)
    while b ~= 0 do
        a, b = b, a % b
    end
    return a
end

local function range_setup(p)
    pktgen.range.set_type(p, "ipv4")
    pktgen.range.ip_proto(p, "tcp")
    pktgen.range.src_ip(p, "start", SRC_IP[1])
    pktgen.range.src_ip(p, "min", SRC_IP[1])
    pktgen.range.src_ip(p, "max", SRC_IP[2])
    pktgen.range.src_ip(p, "inc", SRC_IP[3])
    pktgen.range.src_port(p, "start", SRC_PORT[1])
    pktgen.range.src_port(p, "min", SRC_PORT[1])
    pktgen.range.src_port(p, "max", SRC_PORT[2])
    pktgen.range.src_port(p, "inc", SRC_PORT[3])
    pktgen.range.dst_ip(p, "start", DST_IP)
    pktgen.range.dst_ip(p, "min", DST_IP)
    pktgen.range.dst_ip(p, "max", DST_IP)
    pktgen.range.dst_ip(p, "inc", "0.0.0.0")
    pktgen.range.dst_port(p, "start", DST_PORT)
    pktgen.range.dst_port(p, "min", DST_PORT)
    pktgen.range.dst_port(p, "max", DST_PORT)
    pktgen.range.dst_port(p, "inc", 0)
    pktgen.range.pkt_size(p, "start", FRAME)
    pktgen.range.pkt_size(p, "min", FRAME)
    pktgen.range.pkt_size(p, "max", FRAME)
    pktgen.range.pkt_size(p, "inc", 0)
    if DST_MAC ~= "" then
        pktgen.range.dst_mac(p, "start", DST_MAC)
    end
    -- SYN only, and an initial sequence number that moves on by a prime from SYN to SYN.
    cli({
        "range " .. p .. " tcp flag clr all",
        "range " .. p .. " tcp flag set syn",
        "range " .. p .. " tcp seq 1000 1000 2000000000 7919",
    })
    -- Pktgen paces a rate in % by the single-frame size, in range mode too.
    pktgen.set(p, "size", FRAME)
    pktgen.set_range(p, "on")
end

local function main()
    local p = tostring(TX_PORT)
    if TX_PORT == RX_PORT then
        error("the sending and the receiving port are both " .. TX_PORT)
    end
    pktgen.screen("off")
    pktgen.stop("all")

    local mbps = link_mbps(TX_PORT)
    local line_pps = mbps * 1e6 / ((FRAME + 20) * 8)
    local rate = 100
    if RATE_PPS > 0 then
        if mbps == 0 then
            error("port " .. TX_PORT .. " has no link: cannot turn SYNFLOOD_RATE_PPS into a rate")
        end
        rate = math.min(RATE_PPS / line_pps * 100, 100)
    end

    say("SYN flood through tollgate: port %d -> tollgate -> port %d, link %d Mb/s", TX_PORT,
        RX_PORT, mbps)
    local refresh = 0
    if SOURCE == "range" then
        range_setup(p)
        local addrs = ipv4_count(SRC_IP[1], SRC_IP[2], SRC_IP[3])
        local ports = (SRC_PORT[3] == 0) and 1 or ((SRC_PORT[2] - SRC_PORT[1]) // SRC_PORT[3] + 1)
        local sources = addrs // gcd(addrs, ports) * ports
        local per_start = math.min(sources, pktgen.info.maxMbufsPerPort or sources)
        refresh = (per_start < sources) and REFRESH_S or 0
        say("%s..%s x ports %d..%d: %d sources, %d a start%s", SRC_IP[1], SRC_IP[2], SRC_PORT[1],
            SRC_PORT[2], sources, per_start,
            (refresh > 0) and string.format(", fresh ones every %d s", refresh) or "")
    else
        pktgen.pcap(p, "on")
        say("sources: the SYNs of the pcap file given with -s %d:FILE", TX_PORT)
    end
    say("-> %s:%d at %.3f %% of line rate (%.0f SYN/s) for %d s", DST_IP, DST_PORT, rate,
        line_pps * rate / 100, SECONDS)

    local out
    if CSV ~= "" then
        out = io.open(CSV, "w")
        if out then
            out:write("second,syn_sent_per_s,passed_per_s,answered_per_s\n")
        else
            say("cannot write %s; printing only", CSV)
        end
    end

    pktgen.clr()
    pktgen.set(p, "count", 0)
    pktgen.set(p, "rate", rate)
    pktgen.start(p)
    say("%6s %14s %14s %14s", "second", "SYNs sent/s", "passed/s", "answered/s")
    for second = 1, SECONDS do
        pktgen.delay(1000)
        local tx = pktgen.portStats(p, "rate")[TX_PORT]
        local rx = pktgen.portStats(tostring(RX_PORT), "rate")[RX_PORT]
        say("%6d %14d %14d %14d", second, tx.opackets, rx.ipackets, tx.ipackets)
        if out then
            out:write(string.format("%d,%d,%d,%d\n", second, tx.opackets, rx.ipackets, tx.ipackets))
        end
        if refresh > 0 and second % refresh == 0 and second < SECONDS then
            -- A start builds the next SYNs of the range.
            pktgen.stop(p)
            pktgen.start(p)
        end
    end
    pktgen.stop(p)
    pktgen.delay(2000)
    local tx = pktgen.portStats(p, "port")[TX_PORT]
    local rx = pktgen.portStats(tostring(RX_PORT), "port")[RX_PORT]
    say("total: %d SYNs sent, %d frames passed to port %d, %d frames back to port %d", tx.opackets,
        rx.ipackets, RX_PORT, tx.ipackets, TX_PORT)
    if out then
        out:close()
        say("per-second rows written to %s", CSV)
    end

    if SOURCE == "range" then
        -- Range mode back to Pktgen's default TCP flags (ACK) for whatever runs next.
        cli({ "range " .. p .. " tcp flag clr all", "range " .. p .. " tcp flag set ack" })
        pktgen.set_range(p, "off")
    else
        pktgen.pcap(p, "off")
    end
end

main()
