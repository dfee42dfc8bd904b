-- perf/pktgen/rfc2544.lua: RFC 2544 throughput (section 26.1) through tollgate, for
-- Pktgen-DPDK 23.03.
--
--   sudo pktgen -l 0-4 -n 4 -- -P -m "[1:2].0,[3:4].1" -f perf/pktgen/rfc2544.lua
--
-- Pktgen's port 0 is cabled to tollgate's inside port and port 1 to its outside port. Port 0
-- sends, port 1 counts what tollgate forwarded. For each frame size, trials at rates chosen by
-- a binary search between 0 and 100 % of port 0's line rate find the highest rate at which
-- port 1 received every frame port 0 sent (RFC 2544's throughput), to RESOLUTION percentage
-- points; a last trial of CONFIRM_MS at that rate confirms it. The frames come from one of the
-- FLOW_SETS below (Pktgen's range mode), or from a pcap file given to Pktgen with -s 0:FILE
-- (FLOWS = "pcap": the many-flows mix, written by pcap-gen in perf/; one run per file).
--
-- tollgate must pass the flows statelessly for the result to be the bypass path's:
--   ctcp, ctcp6   tollgatectl policy add --proto tcp --dst-port 10000 --action bypass
--   udp           nothing: UDP is bypassed by default
--   pcap          tollgatectl policy add --proto tcp --action bypass (the mix has TCP flows
--                 that open with a SYN, which the proxy would answer itself)
-- Without a rule, TCP frames of flows whose handshake tollgate never saw are forwarded as
-- they are and counted as picked up mid-stream (proxy midstream_passthrough).
--
-- It prints a line per trial and, at the end, a table; the table is also written as CSV
-- (CSV). Each setting below can also be given in the environment, named as in brackets:
-- sudo RFC2544_SIZES=64,1518 pktgen ... (sudo passes VAR=value arguments through).

-- Frame sizes on the wire, FCS included [RFC2544_SIZES, comma-separated]. IPv6 TCP frames
-- cannot be shorter than 78 bytes; smaller sizes are raised to 78 for the IPv6 flow sets.
local SIZES = "64,128,256,512,1024,1280,1518"
-- Each search trial's sending time, ms [RFC2544_TRIAL_MS]. RFC 2544 asks for 60 s trials;
-- the search uses shorter ones and the confirmation trial the full length.
local TRIAL_MS = 10000
-- The confirmation trial at the rate found, ms; 0 skips it [RFC2544_CONFIRM_MS].
local CONFIRM_MS = 60000
-- The search's upper bound, % of line rate [RFC2544_MAX_RATE]. Lower it when the generator
-- cannot reach line rate: virtual links (memif) report 100 Gb/s.
local MAX_RATE = 100
-- The search stops when the highest passing and the lowest failing rate are this close,
-- in percentage points of line rate [RFC2544_RESOLUTION].
local RESOLUTION = 0.5
-- The share of frames a trial may lose and still pass, percent [RFC2544_LOSS_PCT]. RFC 2544's
-- throughput is 0; a lab with a lossy generator may want 0.001.
local LOSS_PCT = 0
-- Which flows: a name from FLOW_SETS, or "pcap" [RFC2544_FLOWS].
local FLOWS = "ctcp"
-- Before each frame size, the flows are sent at LEARN_RATE % for LEARN_MS, so tollgate has
-- set them up before the first trial (RFC 2544 section 23) [RFC2544_LEARN_MS].
local LEARN_MS = 2000
local LEARN_RATE = 1
-- After a trial stops, how long to wait before reading the counters: frames in flight
-- arrive, and Pktgen refreshes its counters once a second [RFC2544_SETTLE_MS].
local SETTLE_MS = 2000
-- The sending and the receiving port [RFC2544_TX_PORT, RFC2544_RX_PORT].
local TX_PORT = 0
local RX_PORT = 1
-- TX queues of the sending port: the TX cores -m gives it (1 with "[1:2].0")
-- [RFC2544_TX_QUEUES]. Only used to count the flows.
local TX_QUEUES = 1
-- The destination MAC address of the frames; "" keeps Pktgen's (port 1's own address, which
-- is right for a bump in the wire between Pktgen's two ports) [RFC2544_DST_MAC].
local DST_MAC = ""
-- Where the CSV goes; "" names it rfc2544-FLOWS.csv in Pktgen's working directory
-- [RFC2544_CSV].
local CSV = ""

-- Flow sets for Pktgen's range mode. Each field counts up by its increment from frame to
-- frame and wraps at its maximum, on its own: when the fields' counts share no factor, every
-- combination appears, and the flows are their product. Pktgen builds the range frames once
-- per buffer of the port's TX pool (pktgen.info.maxMbufsPerPort, 24,576 in 23.03, per TX
-- queue) when the port starts, and sends those buffers over and over: a set larger than that
-- is cut short. These sets stay under it (the script prints the count).
local FLOW_SETS = {
    -- cTCP tunnels: 251 VPN clients x 97 source ports to one headend on TCP port 10000
    -- (24,347 flows). TCP ACK segments, the payload filling the frame, as in an established
    -- tunnel.
    ctcp = {
        type = "ipv4", proto = "tcp",
        src_ip = { "198.18.0.1", "198.18.0.251", "0.0.0.1" },
        dst_ip = { "198.19.0.1", "198.19.0.1", "0.0.0.0" },
        src_port = { 1024, 1120, 1 },
        dst_port = { 10000, 10000, 0 },
    },
    -- The same over IPv6.
    ctcp6 = {
        type = "ipv6", proto = "tcp",
        src_ip = { "2001:2:0:1::1", "2001:2:0:1::fb", "::1" },
        dst_ip = { "2001:2:0:2::1", "2001:2:0:2::1", "::" },
        src_port = { 1024, 1120, 1 },
        dst_port = { 10000, 10000, 0 },
    },
    -- IPsec NAT traversal: the same clients over UDP to port 4500 (24,347 flows).
    udp = {
        type = "ipv4", proto = "udp",
        src_ip = { "198.18.0.1", "198.18.0.251", "0.0.0.1" },
        dst_ip = { "198.19.0.1", "198.19.0.1", "0.0.0.0" },
        src_port = { 1024, 1120, 1 },
        dst_port = { 4500, 4500, 0 },
    },
}

-- ---------------------------------------------------------------------------------------------

local MIN_IPV6_FRAME = 78

local function setting(name, default)
    local v = os.getenv("RFC2544_" .. name)
    if v == nil or v == "" then
        return default
    end
    if type(default) == "number" then
        local n = tonumber(v)
        if n == nil then
            error(string.format("RFC2544_%s=%s is not a number", name, v))
        end
        return n
    end
    return v
end

local function whole(name, v, min)
    local n = math.tointeger(v)
    if n == nil or n < min then
        error(string.format("RFC2544_%s=%s: a whole number, at least %d", name, tostring(v), min))
    end
    return n
end

SIZES = setting("SIZES", SIZES)
-- pktgen.delay() takes whole milliseconds.
TRIAL_MS = whole("TRIAL_MS", setting("TRIAL_MS", TRIAL_MS), 1)
CONFIRM_MS = whole("CONFIRM_MS", setting("CONFIRM_MS", CONFIRM_MS), 0)
MAX_RATE = setting("MAX_RATE", MAX_RATE)
RESOLUTION = setting("RESOLUTION", RESOLUTION)
LOSS_PCT = setting("LOSS_PCT", LOSS_PCT)
FLOWS = setting("FLOWS", FLOWS)
LEARN_MS = whole("LEARN_MS", setting("LEARN_MS", LEARN_MS), 0)
SETTLE_MS = whole("SETTLE_MS", setting("SETTLE_MS", SETTLE_MS), 0)
TX_PORT = whole("TX_PORT", setting("TX_PORT", TX_PORT), 0)
RX_PORT = whole("RX_PORT", setting("RX_PORT", RX_PORT), 0)
TX_QUEUES = whole("TX_QUEUES", setting("TX_QUEUES", TX_QUEUES), 1)
DST_MAC = setting("DST_MAC", DST_MAC)
CSV = setting("CSV", CSV)
if CSV == "" then
    CSV = "rfc2544-" .. FLOWS .. ".csv"
end
if RESOLUTION <= 0 then
    error("RFC2544_RESOLUTION must be above 0")
end
if MAX_RATE <= 0 or MAX_RATE > 100 then
    error("RFC2544_MAX_RATE must be above 0 and at most 100")
end

local function say(fmt, ...)
    print(string.format(fmt, ...))
end

-- The sizes to test, checked.
local function parse_sizes(s)
    local sizes = {}
    for word in string.gmatch(s, "[^,%s]+") do
        local n = math.tointeger(tonumber(word))
        if n == nil or n < 64 or n > 1518 then
            error("RFC2544_SIZES: '" .. word .. "' is not a frame size 64..1518")
        end
        sizes[#sizes + 1] = n
    end
    if #sizes == 0 then
        error("RFC2544_SIZES names no frame size")
    end
    return sizes
end

-- An address as a list of 16-bit groups (IPv4: 2 groups, IPv6: 8), or nil.
local function groups(addr)
    local a, b, c, d = string.match(addr, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if a then
        return { tonumber(a) * 256 + tonumber(b), tonumber(c) * 256 + tonumber(d) }
    end
    local head, tail = string.match(addr, "^([%x:]*)::([%x:]*)$")
    local parts = {}
    local function add(s)
        for g in string.gmatch(s, "[^:]+") do
            parts[#parts + 1] = tonumber(g, 16)
        end
    end
    if head then
        add(head)
        local n_tail = 0
        for _ in string.gmatch(tail, "[^:]+") do
            n_tail = n_tail + 1
        end
        for _ = #parts + 1, 8 - n_tail do
            parts[#parts + 1] = 0
        end
        add(tail)
    else
        add(addr)
    end
    if #parts ~= 8 then
        return nil
    end
    return parts
end

-- How many values a {min, max, inc} field takes: Pktgen counts min, min + inc, ... up to max.
local function field_count(min, max, inc)
    if type(min) == "number" then
        if inc == 0 then
            return 1
        end
        return (max - min) // inc + 1
    end
    local lo, hi, step = groups(min), groups(max), groups(inc)
    if lo == nil or hi == nil or step == nil or #lo ~= #hi or #lo ~= #step then
        error("not an address range: " .. min .. " .. " .. max .. " by " .. inc)
    end
    -- The ranges here differ in the low 48 bits at most; compare those as one number.
    local function low(g)
        local v = 0
        for i = math.max(#g - 2, 1), #g do
            v = v * 65536 + g[i]
        end
        return v
    end
    for i = 1, #lo - 3 do
        if lo[i] ~= hi[i] then
            error("address range " .. min .. " .. " .. max .. " is wider than 2^48")
        end
    end
    if low(step) == 0 then
        return 1
    end
    return (low(hi) - low(lo)) // low(step) + 1
end

local function gcd(a, b)
    while b ~= 0 do
        a, b = b, a % b
    end
    return a
end

-- The flows a set makes: the frames' cycle (the least common multiple of the fields' counts),
-- cut to the frames Pktgen builds when the port starts. Returns flows, cycle, product.
local function flow_count(set)
    local cycle, product = 1, 1
    for _, f in ipairs({ "src_ip", "dst_ip", "src_port", "dst_port" }) do
        local r = set[f]
        local n = field_count(r[1], r[2], r[3])
        product = product * n
        cycle = cycle // gcd(cycle, n) * n
    end
    local built = (pktgen.info.maxMbufsPerPort or cycle) * TX_QUEUES
    return math.min(cycle, built), cycle, product
end

-- The frame size Pktgen sends for a set: IPv6 frames are at least 78 bytes.
local function frame_size(set, size)
    if set and set.type == "ipv6" and size < MIN_IPV6_FRAME then
        return MIN_IPV6_FRAME
    end
    return size
end

-- Port TX_PORT's range settings for one flow set and frame size.
local function apply_flow_set(set, size)
    local p = tostring(TX_PORT)
    -- The type first: Pktgen checks range sizes against it.
    pktgen.range.set_type(p, set.type)
    pktgen.range.ip_proto(p, set.proto)
    for _, f in ipairs({ "src_ip", "dst_ip", "src_port", "dst_port" }) do
        local r = set[f]
        pktgen.range[f](p, "start", r[1])
        pktgen.range[f](p, "min", r[1])
        pktgen.range[f](p, "max", r[2])
        pktgen.range[f](p, "inc", r[3])
    end
    pktgen.range.pkt_size(p, "start", size)
    pktgen.range.pkt_size(p, "min", size)
    pktgen.range.pkt_size(p, "max", size)
    pktgen.range.pkt_size(p, "inc", 0)
    if DST_MAC ~= "" then
        pktgen.range.dst_mac(p, "start", DST_MAC)
    end
    -- Pktgen turns a rate in % into frames per second from the single-frame size, even in
    -- range mode: without this, every size would be sent at 64-byte frame rates.
    pktgen.set(p, "size", size)
    pktgen.set_range(p, "on")
end

local function link_mbps(port)
    local state = pktgen.linkState(tostring(port))[port] or ""
    return tonumber(string.match(state, "UP%-(%d+)")) or 0
end

local function counters()
    local tx = pktgen.portStats(tostring(TX_PORT), "port")[TX_PORT]
    local rx = pktgen.portStats(tostring(RX_PORT), "port")[RX_PORT]
    return tx, rx
end

-- One trial: sends at `rate` % for `ms`, then counts. Returns sent, received, bytes sent.
local function trial(rate, ms)
    local p = tostring(TX_PORT)
    pktgen.stop(p)
    pktgen.clr()
    pktgen.set(p, "count", 0)
    pktgen.set(p, "rate", rate)
    pktgen.start(p)
    pktgen.delay(ms)
    pktgen.stop(p)
    pktgen.delay(SETTLE_MS)
    local tx, rx = counters()
    return tx.opackets, rx.ipackets, tx.obytes
end

local function passes(sent, received)
    if sent == 0 then
        return false
    end
    local lost = math.max(sent - received, 0)
    return lost * 100 <= sent * LOSS_PCT
end

-- The binary search for one frame size. Returns the result row.
local function search(label, flows)
    local row = { flows = FLOWS, flow_count = flows, size = label, rate = 0, trials = 0,
                  sent = 0, received = 0, bytes = 0, ms = TRIAL_MS, confirmed = "no" }
    local function run(rate, ms)
        local sent, received, bytes = trial(rate, ms)
        row.trials = row.trials + 1
        local ok = passes(sent, received)
        say("  %5s B  trial %2d  rate %7.3f %%  sent %12d  received %12d  lost %10d  %s",
            label, row.trials, rate, sent, received, math.max(sent - received, 0),
            ok and "pass" or "FAIL")
        return ok, sent, received, bytes
    end
    local function keep(rate, ms, sent, received, bytes)
        row.rate, row.ms, row.sent, row.received, row.bytes = rate, ms, sent, received, bytes
    end

    -- The upper bound first: a device that keeps up needs no search.
    local lo, hi = 0, MAX_RATE
    local ok, sent, received, bytes = run(hi, TRIAL_MS)
    if ok then
        lo = hi
        keep(hi, TRIAL_MS, sent, received, bytes)
    end
    while hi - lo > RESOLUTION do
        local mid = (lo + hi) / 2
        ok, sent, received, bytes = run(mid, TRIAL_MS)
        if ok then
            lo = mid
            keep(mid, TRIAL_MS, sent, received, bytes)
        else
            hi = mid
        end
    end
    if lo == 0 then
        row.confirmed = "none passed"
        return row
    end
    if CONFIRM_MS > 0 then
        ok, sent, received, bytes = run(lo, CONFIRM_MS)
        row.confirmed = ok and "yes" or "FAILED"
        keep(lo, CONFIRM_MS, sent, received, bytes)
    else
        row.confirmed = "skipped"
    end
    return row
end

local function main()
    local sizes = parse_sizes(SIZES)
    local set = FLOW_SETS[FLOWS]
    if set == nil and FLOWS ~= "pcap" then
        local names = {}
        for name in pairs(FLOW_SETS) do
            names[#names + 1] = name
        end
        table.sort(names)
        error("RFC2544_FLOWS=" .. FLOWS .. ": not a flow set (" .. table.concat(names, ", ") .. ", pcap)")
    end
    if TX_PORT == RX_PORT then
        error("the sending and the receiving port are both " .. TX_PORT)
    end
    pktgen.screen("off")
    pktgen.stop("all")

    local flows = 0
    local mbps = link_mbps(TX_PORT)
    say("RFC 2544 throughput through tollgate: port %d -> tollgate -> port %d, link %d Mb/s", TX_PORT,
        RX_PORT, mbps)
    if mbps == 0 then
        say("warning: port %d reports no link speed; Pktgen cannot pace a rate in %% without one", TX_PORT)
    end
    if set then
        local cycle, product
        flows, cycle, product = flow_count(set)
        say("flows: %s, %d flows (%s %s, %s..%s:%d..%d to %s:%d)", FLOWS, flows, set.type, set.proto,
            set.src_ip[1], set.src_ip[2], set.src_port[1], set.src_port[2], set.dst_ip[1], set.dst_port[1])
        if cycle < product then
            say("note: the ranges' counts share a factor, so only %d of their %d combinations appear",
                cycle, product)
        end
        if flows < cycle then
            say("note: Pktgen builds %d frames per start, so only %d of the set's %d flows are sent",
                flows, flows, cycle)
        end
        local raised = {}
        for i, size in ipairs(sizes) do
            local s = frame_size(set, size)
            if s ~= size then
                raised[#raised + 1] = tostring(size)
                sizes[i] = s
            end
        end
        if #raised > 0 then
            say("note: %s B raised to %d B, the shortest IPv6 TCP frame", table.concat(raised, ", "),
                MIN_IPV6_FRAME)
        end
    else
        sizes = { "pcap" }
        say("flows: the frames of the pcap file given with -s %d:FILE (without one, Pktgen sends its single 64-byte frame)",
            TX_PORT)
    end
    say("trials of %d ms, confirmation %d ms, search 0..%s %%, resolution %s points, loss accepted %s %%",
        TRIAL_MS, CONFIRM_MS, tostring(MAX_RATE), tostring(RESOLUTION), tostring(LOSS_PCT))

    local rows = {}
    local last_size
    for _, size in ipairs(sizes) do
        if size ~= last_size then
            last_size = size
            local p = tostring(TX_PORT)
            if set then
                apply_flow_set(set, size)
            else
                pktgen.pcap(p, "on")
            end
            if LEARN_MS > 0 then
                trial(LEARN_RATE, LEARN_MS)
            end
            local row = search(tostring(size), flows)
            rows[#rows + 1] = row
            local secs = row.ms / 1000
            row.tx_mpps = row.sent / secs / 1e6
            row.rx_mpps = row.received / secs / 1e6
            -- The frame with its FCS; from a pcap, the average of what was sent (the NIC's byte
            -- counter leaves the FCS out). On the wire each frame also takes a preamble and an
            -- inter-frame gap (20 bytes).
            local avg = size
            if size == "pcap" then
                avg = (row.sent > 0) and (row.bytes / row.sent + 4) or 0
            end
            row.avg = avg
            row.l1_gbps = row.received * (avg + 20) * 8 / secs / 1e9
            row.l2_gbps = row.received * avg * 8 / secs / 1e9
        end
    end
    pktgen.stop("all")
    if set then
        pktgen.set_range(tostring(TX_PORT), "off")
    end

    say("")
    say("RFC 2544 throughput, flows %s%s, link %d Mb/s:", FLOWS,
        (flows > 0) and string.format(" (%d)", flows) or "", mbps)
    say("%6s %9s %9s %9s %11s %11s %15s %6s  %s", "size", "rate %", "tx Mpps", "rx Mpps",
        "Gb/s (L1)", "Gb/s (L2)", "frames", "trials", "confirmed")
    for _, r in ipairs(rows) do
        local label = r.size
        if r.size == "pcap" then
            label = string.format("~%d", math.floor(r.avg + 0.5))
        end
        say("%6s %9.3f %9.3f %9.3f %11.3f %11.3f %15d %6d  %s", label, r.rate, r.tx_mpps, r.rx_mpps,
            r.l1_gbps, r.l2_gbps, r.received, r.trials, r.confirmed)
    end

    local f, err = io.open(CSV, "w")
    if f == nil then
        say("cannot write %s: %s", CSV, tostring(err))
        return
    end
    f:write("flows,flow_count,frame_size,rate_pct,tx_mpps,rx_mpps,l1_gbps,l2_gbps,",
            "frames_sent,frames_received,trial_ms,trials,confirmed\n")
    for _, r in ipairs(rows) do
        local size = r.size
        if size == "pcap" then
            size = string.format("%.1f", r.avg)
        end
        f:write(string.format("%s,%d,%s,%.3f,%.4f,%.4f,%.4f,%.4f,%d,%d,%d,%d,%s\n", r.flows,
            r.flow_count, size, r.rate, r.tx_mpps, r.rx_mpps, r.l1_gbps, r.l2_gbps, r.sent,
            r.received, r.ms, r.trials, r.confirmed))
    end
    f:close()
    say("results written to %s", CSV)
end

main()
