-- perf/pktgen/test/pktgen-mock.lua: a stand-in for the `pktgen` table Pktgen-DPDK 23.03 gives
-- its Lua scripts, so that scripts/e2e/pktgen-assets can run rfc2544.lua and synflood.lua
-- under plain Lua 5.3 on a machine without NICs:
--
--   lua5.3 -e 'pktgen = dofile("perf/pktgen/test/pktgen-mock.lua")' perf/pktgen/rfc2544.lua
--
-- Every function the scripts call checks its arguments as Pktgen's binding does
-- (app/lpktgenlib.c: the argument count, the port list, the option names), so a call Pktgen
-- would refuse fails here too. Time is virtual: delay() moves a clock on and traffic flows
-- while it does. The device under test between port 0 and port 1 forwards frames up to
-- MOCK_CAPACITY_PCT % of line rate (default 37.3) and drops the rest; port 0 receives back
-- MOCK_ANSWER_PCT % of what it sent (SYN cookies, default 0). Links run at MOCK_LINK_MBPS
-- (default 10000). A pcap loaded with -s is MOCK_PCAP_SIZE bytes a frame on average (300).
-- As in Pktgen, a rate in % is paced by the single-frame size (pktgen.set(P, "size", N)) in
-- range mode too, and IPv6 range frames are at least 78 bytes; pktgen.info has 23.03's
-- maxMbufsPerPort, and pktgen.mock.starts counts each port's starts. Pktgen CLI command files
-- (pktgen.load) may hold the range commands the scripts use; the mock keeps what they set in
-- pktgen.mock.range_cli.

local function env_number(name, default)
    local v = os.getenv(name)
    return (v and tonumber(v)) or default
end

local CAPACITY_PCT = env_number("MOCK_CAPACITY_PCT", 37.3)
local ANSWER_PCT = env_number("MOCK_ANSWER_PCT", 0)
local LINK_MBPS = env_number("MOCK_LINK_MBPS", 10000)
local PCAP_SIZE = env_number("MOCK_PCAP_SIZE", 300)
local NPORTS = 2
local MBUFS_PER_PORT = 24576
local MIN_IPV6_FRAME = 78

local function fail(fmt, ...)
    error("pktgen mock: " .. string.format(fmt, ...), 3)
end

local function nargs(name, want, ...)
    local n = select("#", ...)
    if n ~= want then
        fail("%s, wrong number of arguments (%d, Pktgen wants %d)", name, n, want)
    end
end

-- Pktgen's portlist_parse: "all", "0", "0-1", "0,1"; Lua numbers pass as strings.
local function ports(list, name)
    if type(list) ~= "string" and type(list) ~= "number" then
        fail("%s: the port list must be a string, got %s", name, type(list))
    end
    local s = tostring(list)
    local out = {}
    if s == "all" then
        for p = 0, NPORTS - 1 do
            out[#out + 1] = p
        end
        return out
    end
    for part in string.gmatch(s, "[^,]+") do
        local a, b = string.match(part, "^(%d+)%-(%d+)$")
        a = tonumber(a or part)
        b = tonumber(b or part)
        if a == nil or b == nil or b < a then
            fail("%s: '%s' is not a port list", name, s)
        end
        for p = a, b do
            if p >= NPORTS then
                fail("%s: port %d does not exist (%d ports)", name, p, NPORTS)
            end
            out[#out + 1] = p
        end
    end
    return out
end

local function is_addr(s)
    return type(s) == "string" and
        (string.match(s, "^%d+%.%d+%.%d+%.%d+$") ~= nil or string.match(s, "^[%x:]+$") ~= nil)
end

local function is_mac(s)
    return type(s) == "string" and string.match(s, "^%x%x:%x%x:%x%x:%x%x:%x%x:%x%x$") ~= nil
end

local WHAT = { start = true, min = true, max = true, inc = true, minimum = true,
               maximum = true, increment = true }

local clock_ms = 0
local state = {}
for p = 0, NPORTS - 1 do
    state[p] = { sending = false, rate = 100, size = 64, count = 0, mode = "single",
                 range = { pkt_size = { start = 64 } }, carry = 0,
                 stats = { ipackets = 0, opackets = 0, ibytes = 0, obytes = 0, ierrors = 0,
                           oerrors = 0, rx_nombuf = 0, imissed = 0 },
                 last = nil, rate_stats = nil }
end

-- The size of the frames a port sends, and the size its rate is paced by.
local function frame_size(s)
    if s.mode == "pcap" then
        return PCAP_SIZE, PCAP_SIZE
    elseif s.mode == "range" then
        local size = s.range.pkt_size.start
        if s.range_type == "ipv6" and size < MIN_IPV6_FRAME then
            size = MIN_IPV6_FRAME
        end
        return size, s.size
    end
    return s.size, s.size
end

local function zero()
    return { ipackets = 0, opackets = 0, ibytes = 0, obytes = 0, ierrors = 0, oerrors = 0,
             rx_nombuf = 0, imissed = 0 }
end

-- Traffic for `ms` of virtual time.
local function flow(ms)
    for p = 0, NPORTS - 1 do
        local s = state[p]
        if s.sending then
            local size, paced = frame_size(s)
            local pps = LINK_MBPS * 1e6 / ((paced + 20) * 8) * s.rate / 100
            local exact = pps * ms / 1000 + s.carry
            local frames = math.floor(exact)
            s.carry = exact - frames
            local peer = state[(p + 1) % NPORTS]
            local passed = frames
            if s.rate > CAPACITY_PCT then
                passed = math.floor(frames * CAPACITY_PCT / s.rate)
            end
            local answered = math.floor(frames * ANSWER_PCT / 100)
            s.stats.opackets = s.stats.opackets + frames
            s.stats.obytes = s.stats.obytes + frames * (size - 4)
            peer.stats.ipackets = peer.stats.ipackets + passed
            peer.stats.ibytes = peer.stats.ibytes + passed * (size - 4)
            s.stats.ipackets = s.stats.ipackets + answered
            s.stats.ibytes = s.stats.ibytes + answered * (size - 4)
        end
    end
end

local function copy(t)
    local c = {}
    for k, v in pairs(t) do
        c[k] = v
    end
    return c
end

local pktgen = {
    range = {},
    info = { Pktgen_Version = "Pktgen 23.03.0 (mock)", maxMbufsPerPort = MBUFS_PER_PORT,
             minPktSize = 64, maxPktSize = 1518 },
    mock = { range_cli = {}, calls = 0, clock_ms = 0, loaded = {}, starts = {} },
}

local function count_call()
    pktgen.mock.calls = pktgen.mock.calls + 1
end

function pktgen.screen(onoff)
    count_call()
    if onoff ~= "on" and onoff ~= "off" then
        fail("screen: 'on' or 'off', got %s", tostring(onoff))
    end
end

function pktgen.delay(...)
    nargs("delay", 1, ...)
    count_call()
    local ms = math.tointeger(...)
    if ms == nil or ms < 0 then
        fail("delay: a whole number of ms, got %s", tostring(...))
    end
    -- Pktgen's counters: per-second rates are what moved in the last second.
    local before = {}
    for p = 0, NPORTS - 1 do
        before[p] = copy(state[p].stats)
    end
    flow(ms)
    clock_ms = clock_ms + ms
    pktgen.mock.clock_ms = clock_ms
    for p = 0, NPORTS - 1 do
        local r = {}
        local scale = (ms > 0) and (1000 / ms) or 0
        for k, v in pairs(state[p].stats) do
            r[k] = math.floor((v - before[p][k]) * scale)
        end
        state[p].rate_stats = r
    end
end

function pktgen.pause(...)
    nargs("pause", 2, ...)
    local msg, ms = ...
    io.write(tostring(msg))
    pktgen.delay(ms)
end

function pktgen.set(...)
    nargs("set", 3, ...)
    count_call()
    local list, what, value = ...
    if type(value) ~= "number" and tonumber(value) == nil then
        fail("set: the value must be a number, got %s", tostring(value))
    end
    value = tonumber(value)
    for _, p in ipairs(ports(list, "set")) do
        local s = state[p]
        if what == "rate" then
            s.rate = (value == 0) and 0.01 or math.min(value, 100)
        elseif what == "size" then
            s.size = math.min(math.max(value, 64), 1518)
        elseif what == "count" then
            s.count = value
        elseif what == "burst" or what == "sport" or what == "dport" or what == "ttl" then
            -- accepted, not modelled
        else
            fail("set does not support %s", tostring(what))
        end
    end
end

function pktgen.start(...)
    nargs("start", 1, ...)
    count_call()
    for _, p in ipairs(ports(..., "start")) do
        if not state[p].sending then
            pktgen.mock.starts[p] = (pktgen.mock.starts[p] or 0) + 1
        end
        state[p].sending = true
    end
end

function pktgen.stop(...)
    nargs("stop", 1, ...)
    count_call()
    for _, p in ipairs(ports(..., "stop")) do
        state[p].sending = false
        state[p].carry = 0
    end
end

function pktgen.clr(...)
    nargs("clr", 0, ...)
    count_call()
    for p = 0, NPORTS - 1 do
        state[p].stats = zero()
        state[p].rate_stats = zero()
    end
end

function pktgen.portStats(...)
    nargs("portStats", 2, ...)
    count_call()
    local list, kind = ...
    if kind ~= "port" and kind ~= "rate" then
        fail("portStats: 'port' or 'rate', got %s", tostring(kind))
    end
    local out = { n = 0 }
    for _, p in ipairs(ports(list, "portStats")) do
        local src = (kind == "port") and state[p].stats or (state[p].rate_stats or zero())
        out[p] = copy(src)
        out.n = out.n + 1
    end
    return out
end

function pktgen.linkState(...)
    nargs("linkState", 1, ...)
    count_call()
    local out = { n = 0 }
    for _, p in ipairs(ports(..., "linkState")) do
        out[p] = string.format("<UP-%d-FD>", LINK_MBPS)
        out.n = out.n + 1
    end
    return out
end

function pktgen.set_range(...)
    nargs("set_range", 2, ...)
    count_call()
    local list, onoff = ...
    for _, p in ipairs(ports(list, "set_range")) do
        if state[p].sending then
            fail("set_range: Cannot enable the range settings while sending packets!")
        end
        if onoff == "on" or onoff == "enable" then
            state[p].mode = "range"
        elseif state[p].mode == "range" then
            state[p].mode = "single"
        end
    end
end

function pktgen.pcap(...)
    nargs("pcap", 2, ...)
    count_call()
    local list, onoff = ...
    for _, p in ipairs(ports(list, "pcap")) do
        if onoff == "on" or onoff == "enable" then
            state[p].mode = "pcap"
        elseif state[p].mode == "pcap" then
            state[p].mode = "single"
        end
    end
end

-- A Pktgen CLI command file: only the range commands Pktgen's Lua API lacks.
function pktgen.load(...)
    nargs("load", 1, ...)
    count_call()
    local path = ...
    if string.find(tostring(path), ".lua", 1, true) then
        fail("load: Pktgen would run %s as a Lua script, not as commands", tostring(path))
    end
    local f = io.open(path, "r")
    if f == nil then
        fail("load command failed for %s", tostring(path))
    end
    for line in f:lines() do
        pktgen.mock.loaded[#pktgen.mock.loaded + 1] = line
        local list, rest = string.match(line, "^range (%S+) tcp (.+)$")
        if list == nil then
            fail("load: a command the mock does not know: %s", line)
        end
        ports(list, "load")
        local op, flag = string.match(rest, "^flag (%a+) (%a+)$")
        local seq = { string.match(rest, "^seq (%d+) (%d+) (%d+) (%d+)$") }
        if op and (op == "set" or op == "clr") and
            string.match(" urg ack psh rst syn fin all ", " " .. flag .. " ") then
            pktgen.mock.range_cli[#pktgen.mock.range_cli + 1] = op .. " " .. flag
        elseif #seq == 4 then
            for _, v in ipairs(seq) do
                if tonumber(v) > 2147483647 then
                    fail("load: tcp seq %s does not fit Pktgen's atoi", v)
                end
            end
            pktgen.mock.range_cli[#pktgen.mock.range_cli + 1] = "seq " .. table.concat(seq, " ")
        else
            fail("load: a command the mock does not know: %s", line)
        end
    end
    f:close()
end

-- The tcp flags range mode would send, from the flag commands loaded so far.
function pktgen.mock.range_flags()
    local flags = { ack = true }
    for _, c in ipairs(pktgen.mock.range_cli) do
        local op, flag = string.match(c, "^(%a+) (%a+)$")
        if op == "clr" and flag == "all" then
            flags = {}
        elseif op == "clr" then
            flags[flag] = nil
        elseif op == "set" and flag ~= "all" then
            flags[flag] = true
        end
    end
    local names = {}
    for k in pairs(flags) do
        names[#names + 1] = k
    end
    table.sort(names)
    return table.concat(names, ",")
end

local function range_field(name, check)
    pktgen.range[name] = function(...)
        nargs(name, 3, ...)
        count_call()
        local list, what, value = ...
        if not WHAT[what] then
            fail("range.%s: '%s' is not start, min, max or inc", name, tostring(what))
        end
        check(value)
        for _, p in ipairs(ports(list, "range." .. name)) do
            state[p].range[name] = state[p].range[name] or {}
            state[p].range[name][what] = value
        end
    end
end

local function address(name)
    return function(v)
        if not is_addr(v) then
            fail("range.%s: '%s' is not an address", name, tostring(v))
        end
    end
end

local function integer(name, max)
    return function(v)
        local n = math.tointeger(v)
        if n == nil or n < 0 or n > max then
            fail("range.%s: %s is not an integer 0..%d", name, tostring(v), max)
        end
    end
end

range_field("src_ip", address("src_ip"))
range_field("dst_ip", address("dst_ip"))
range_field("src_port", integer("src_port", 65535))
range_field("dst_port", integer("dst_port", 65535))
range_field("pkt_size", integer("pkt_size", 9018))
range_field("ttl", integer("ttl", 255))
range_field("dst_mac", function(v)
    if not is_mac(v) then
        fail("range.dst_mac: '%s' is not a MAC address", tostring(v))
    end
end)

function pktgen.range.set_type(...)
    nargs("range.set_type", 2, ...)
    count_call()
    local list, t = ...
    if t ~= "ipv4" and t ~= "ipv6" and t ~= "arp" then
        fail("range.set_type: ipv4, ipv6 or arp, got %s", tostring(t))
    end
    for _, p in ipairs(ports(list, "range.set_type")) do
        state[p].range_type = t
    end
end

function pktgen.range.ip_proto(...)
    nargs("range.ip_proto", 2, ...)
    count_call()
    local list, proto = ...
    if proto ~= "tcp" and proto ~= "udp" and proto ~= "icmp" then
        fail("range.ip_proto: tcp, udp or icmp, got %s", tostring(proto))
    end
    ports(list, "range.ip_proto")
end

-- What the mock was asked to do, for the test to look at.
function pktgen.mock.range(port)
    return state[port].range
end

return pktgen
