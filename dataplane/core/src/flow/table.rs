//! A worker's flow table: one hash lookup per packet, no allocation after
//! construction, idle flows aged out through a lazy timer wheel.
//!
//! # Storage: an index of compact slots over a slab
//!
//! The `FlowEntry`s live in a `Slab` and never move; a `FlowIndex` maps a
//! hash to their positions through one-cache-line buckets of eight (16-bit
//! tag, position) slots. A hit costs a miss on the bucket and a miss on the
//! entry (whose first line holds everything the probe compares and the
//! packet updates; see `FlowEntry`), as it did with the entries inline in a
//! hashbrown table, but both lines sit at addresses we compute ourselves:
//! [`FlowTable::prefetch_index`] starts the first from the hash alone, and
//! [`FlowTable::prefetch_entry`] the second once the first has arrived. A
//! burst's lookups then overlap their misses instead of taking them one
//! after another, which at a million flows, where nothing of the table stays
//! in cache, is most of what a packet costs (the worker went from about 540
//! to about 100 cycles a packet at 1 M flows when it started doing this).
//!
//! Memory is what the flows need: the slab reserves `capacity` entries of
//! 128 bytes (touched as flows first use them), the index a 64-byte bucket
//! per 8 slots at no more than 3/5 load, so 16 MiB for a million flows, and
//! the timer pool 16 bytes a flow. hashbrown needed 516 MiB for the same
//! million, because only a table reserved at twice its capacity was sure
//! never to reallocate on the packet path.
//!
//! Deleting keeps the index exact (see its docs), so churn never degrades
//! lookups or calls for a rebuild. A flow's timer carries its slab position,
//! which stays valid for as long as the timer does: removing a flow cancels
//! its timer.

use super::entry::{FlowEntry, TcpPhase};
use super::index::{FlowIndex, Slot};
use super::key::{FlowKey, Orientation, TCP, UDP};
use super::slab::Slab;
use super::timer::{TimerHandle, TimerWheel};
use crate::pipeline::PortSide;

/// How long a flow may stay idle, by protocol and TCP phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimeouts {
    /// A SYN with no answer yet. 30 s lets a client's SYN retransmissions
    /// (1, 3, 7, 15 s after the first with Linux's 1 s initial RTO) through,
    /// while keeping what a SYN flood occupies short-lived.
    pub tcp_embryonic_ms: u64,
    /// A flow picked up mid-stream (its first packet was not a bare SYN) that
    /// nothing has come back for yet: it has not shown it is a connection at
    /// all (an ACK flood from random sources is made of nothing else), so it
    /// keeps at most this until the other side answers, whatever its phase.
    /// Losing such an entry costs nothing but its counters: the flow's next
    /// packet picks it up again. 5 s still sees the answer of a live
    /// connection: an ACK within one round trip plus the delayed-ACK bound
    /// (500 ms, RFC 9293), or, when that answer is lost, the answer to the
    /// sender's first retransmissions (Linux: 200 ms minimum RTO, doubling:
    /// 0.2 + 0.4 + 0.8 + 1.6 s). Conntrack gives unreplied UDP 30 s, and its
    /// TCP pick-ups the 300 s "unacknowledged" timeout; both would let a flood
    /// of a few hundred thousand packets a second fill a million-flow table.
    pub tcp_unreplied_ms: u64,
    /// An open connection. One hour, as common firewalls do (Cisco ASA's
    /// default connection timeout), so quiet database pools, SSH sessions and
    /// IPsec-over-TCP tunnels idle between rekeys keep their state; anything
    /// idle longer is picked up mid-stream when it speaks again.
    pub tcp_established_ms: u64,
    /// A FIN one way: the other side may still send for a while (half-close).
    /// 120 s covers the 2 × MSL a closing endpoint itself waits.
    pub tcp_closing_ms: u64,
    /// FIN both ways, or a RST: only the last ACK and retransmitted FINs are
    /// still to come. 10 s lets them pass and frees the entry fast.
    pub tcp_closed_ms: u64,
    /// UDP has no close. 120 s outlasts the keepalive interval of the
    /// long-lived UDP users (IPsec NAT-T's 20 s, QUIC's and VPNs' keepalives)
    /// and matches Linux conntrack's timeout for UDP streams.
    pub udp_ms: u64,
    /// ICMP, GRE, ESP and the rest: no connection state to go by. 60 s holds
    /// an echo exchange or a tunnel between its keepalives without keeping
    /// one-off packets around.
    pub other_ms: u64,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        FlowTimeouts {
            tcp_embryonic_ms: 30_000,
            tcp_unreplied_ms: 5_000,
            tcp_established_ms: 3_600_000,
            tcp_closing_ms: 120_000,
            tcp_closed_ms: 10_000,
            udp_ms: 120_000,
            other_ms: 60_000,
        }
    }
}

impl FlowTimeouts {
    /// The idle timeout of a flow of `protocol`; `phase` counts only for TCP.
    pub fn idle_ms(&self, protocol: u8, phase: TcpPhase) -> u64 {
        match protocol {
            TCP => match phase {
                TcpPhase::Embryonic => self.tcp_embryonic_ms,
                TcpPhase::Established => self.tcp_established_ms,
                TcpPhase::Closing => self.tcp_closing_ms,
                TcpPhase::Closed => self.tcp_closed_ms,
            },
            UDP => self.udp_ms,
            _ => self.other_ms,
        }
    }

    fn longest_ms(&self) -> u64 {
        [
            self.tcp_embryonic_ms,
            self.tcp_unreplied_ms,
            self.tcp_established_ms,
            self.tcp_closing_ms,
            self.tcp_closed_ms,
            self.udp_ms,
            self.other_ms,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTableConfig {
    /// The most flows the table holds; all memory for them is reserved by
    /// `FlowTable::new` (see the module docs for how much). At most
    /// `FlowTable::MAX_CAPACITY`.
    pub capacity: usize,
    pub timeouts: FlowTimeouts,
    /// The timer wheel's resolution: a flow expires within one tick after its
    /// deadline (given `expire` is called that often). At least 1.
    pub tick_ms: u64,
    /// The most timers one `expire` call examines. Each costs about two
    /// cache misses (~250 ns), so 64 adds at most ~16 µs between bursts,
    /// well inside the ~69 µs a 1024-descriptor RX ring takes to fill at
    /// 10 GbE line rate; and 64 per call is still millions a second when the
    /// worker calls again between bursts while [`FlowTable::expiry_behind`].
    pub expire_budget: usize,
}

impl Default for FlowTableConfig {
    fn default() -> Self {
        FlowTableConfig {
            capacity: 65_536,
            timeouts: FlowTimeouts::default(),
            tick_ms: 100,
            expire_budget: 64,
        }
    }
}

/// What the worker knows about a packet when it looks up its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    pub key: FlowKey,
    pub orientation: Orientation,
    /// `FlowTable::spread_hash` of the NIC's symmetric RSS hash, or
    /// `FlowKey::software_hash`. Every port that feeds one table must use the
    /// same source (and NICs the same RSS key and fields): a flow whose two
    /// directions arrive with different hashes becomes two entries.
    pub hash: u64,
    /// Frame bytes.
    pub len: u32,
    /// The TCP header's flags byte; `None` for other protocols (and for TCP
    /// packets without a TCP header, such as later fragments).
    pub tcp_flags: Option<u8>,
    /// The port index the packet came in on.
    pub ingress: PortSide,
}

#[derive(Debug)]
pub enum Observation<'a> {
    Existing(&'a mut FlowEntry),
    /// A new flow, already counted, in `FlowMode::Bypass` until the
    /// worker classifies it.
    Created(&'a mut FlowEntry),
    /// A new flow, and no room for it: the table is at capacity. Existing
    /// flows are unaffected.
    Full,
    /// A new flow the caller's classification chose not to track: the entry
    /// as it was classified, stored nowhere.
    Untracked(FlowEntry),
}

/// Where `FlowTable::prefetch_entry` found the entry a packet's lookup will
/// most likely compare. Any hint is safe to pass to
/// `FlowTable::observe_hinted`, however old: one that no longer holds only
/// costs the ordinary lookup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryHint(Option<Slot>);

impl EntryHint {
    pub const NONE: EntryHint = EntryHint(None);
}

/// The wheel need not reach further than the longest timeout, and past 4096
/// slots its list heads (16 bytes each) would outgrow L2, where linking a new
/// flow finds them. Longer timeouts fire early once per revolution and are
/// rescheduled: an hour-long idle flow at 100 ms ticks is looked at 9 times.
const MAX_WHEEL_SLOTS: usize = 4096;

pub struct FlowTable {
    index: FlowIndex,
    entries: Slab<FlowEntry>,
    wheel: TimerWheel,
    timeouts: FlowTimeouts,
    capacity: usize,
    expire_budget: usize,
    /// The last `expire` used its whole budget: more timers may be due already.
    expiry_behind: bool,
}

/// Entry lines worth prefetching: the first holds what the lookup compares,
/// the second the counters every packet updates.
const ENTRY_LINES: usize = 2;

impl FlowTable {
    /// Timer handles are `u32` node indices; this keeps every flow one.
    pub const MAX_CAPACITY: usize = 1 << 31;

    /// Reserves everything up front. `capacity` is clamped to
    /// `MAX_CAPACITY`, `tick_ms` and `expire_budget` to at least 1; checking
    /// them with a helpful message is the configuration's job.
    pub fn new(config: FlowTableConfig) -> FlowTable {
        let tick_ms = config.tick_ms.max(1);
        let slots = config
            .timeouts
            .longest_ms()
            .div_ceil(tick_ms)
            .try_into()
            .unwrap_or(usize::MAX)
            .clamp(1, MAX_WHEEL_SLOTS)
            .next_power_of_two();
        let capacity = config
            .capacity
            .min(Self::MAX_CAPACITY)
            .min(TimerWheel::max_timers(slots));
        FlowTable {
            index: FlowIndex::new(capacity),
            entries: Slab::new(capacity),
            wheel: TimerWheel::new(tick_ms, slots, capacity),
            timeouts: config.timeouts,
            capacity,
            expire_budget: config.expire_budget.max(1),
            expiry_behind: false,
        }
    }

    /// Starts loading the index line a lookup of `hash` reads first. Call it
    /// for a burst's frames well before looking them up.
    #[inline(always)]
    pub fn prefetch_index(&self, hash: u64) {
        self.index.prefetch(hash);
    }

    /// Starts loading the entry a lookup of `hash` will most likely compare,
    /// and returns where it is, for the lookup to start from. Reads the index
    /// line, so call it once `prefetch_index` has had time to bring that in.
    #[inline(always)]
    pub fn prefetch_entry(&self, hash: u64) -> EntryHint {
        let candidate = self.index.first_candidate(hash);
        if let Some(slot) = candidate {
            self.entries.prefetch(slot.position, ENTRY_LINES);
        }
        EntryHint(candidate)
    }

    /// Finds the packet's flow or creates it, and counts the packet.
    ///
    /// The wheel is touched only when a flow is created and when a TCP flag
    /// shortens a flow's timeout (a FIN or RST: at most a few times in a
    /// connection's life); otherwise only `last_seen` moves, and expiry finds
    /// out for itself.
    #[inline]
    pub fn observe(&mut self, pkt: &PacketMeta, now_ms: u64) -> Observation<'_> {
        self.observe_with(pkt, now_ms, |_| {})
    }

    /// `observe`, letting the caller classify a new flow before its idle
    /// timer is set, so a policy's own idle timeout counts from the start.
    #[inline]
    pub fn observe_with(
        &mut self,
        pkt: &PacketMeta,
        now_ms: u64,
        classify: impl FnOnce(&mut FlowEntry),
    ) -> Observation<'_> {
        self.observe_hinted(pkt, EntryHint::NONE, now_ms, |e| {
            classify(e);
            true
        })
    }

    /// `observe_with`, starting from what `prefetch_entry` found for the
    /// packet's hash: the common hit then costs one entry compare instead of
    /// another scan of the index bucket. `classify` also says whether a new
    /// flow is to be tracked at all: one it refuses takes nothing from the
    /// table (not even when the table is full) and comes back as
    /// `Observation::Untracked`.
    #[inline(always)]
    pub fn observe_hinted(
        &mut self,
        pkt: &PacketMeta,
        hint: EntryHint,
        now_ms: u64,
        classify: impl FnOnce(&mut FlowEntry) -> bool,
    ) -> Observation<'_> {
        let hash = pkt.hash;
        if let Some(slot) = self.find_hinted(&pkt.key, hash, hint) {
            let entry = self.entries.get_mut(slot.position);
            if let Some(before) = entry.record(pkt, now_ms) {
                let protocol = entry.key().protocol();
                let after = entry.tcp().phase();
                // A longer timeout needs nothing: the timer fires no later
                // than it should and is moved on then.
                if self.timeouts.idle_ms(protocol, after) < self.timeouts.idle_ms(protocol, before)
                {
                    self.wheel
                        .schedule(entry.timer, entry.deadline_ms(&self.timeouts));
                }
            }
            return Observation::Existing(entry);
        }
        let mut entry = FlowEntry::new(pkt, now_ms, TimerHandle::UNSET);
        if !classify(&mut entry) {
            return Observation::Untracked(entry);
        }
        if self.entries.len() >= self.capacity {
            return Observation::Full;
        }
        // The slab and the timer pool hold `capacity` each, so these only
        // fail if the table's own accounting were broken; a full table is
        // the honest answer then too.
        let Some(position) = self.entries.next_position() else {
            return Observation::Full;
        };
        let Some(timer) = self.wheel.allocate(u64::from(position)) else {
            return Observation::Full;
        };
        if self.index.insert(hash, position).is_none() {
            self.wheel.cancel(timer);
            return Observation::Full;
        }
        entry.timer = timer;
        self.wheel
            .schedule(timer, entry.deadline_ms(&self.timeouts));
        let stored = self.entries.insert(entry);
        debug_assert_eq!(stored, Some(position));
        Observation::Created(self.entries.get_mut(position))
    }

    #[inline(always)]
    fn find_hinted(&self, key: &FlowKey, hash: u64, hint: EntryHint) -> Option<Slot> {
        if let Some(slot) = hint.0 {
            // The slot still holding the position under this tag proves the
            // position live, whatever happened since the hint was taken; the
            // entry's key then says whether it is this packet's flow.
            if self.index.holds(hash, slot) {
                let e = self.entries.get(slot.position);
                if e.hash() == hash && e.key() == key {
                    return Some(slot);
                }
            }
        }
        self.find(key, hash)
    }

    #[inline(always)]
    fn find(&self, key: &FlowKey, hash: u64) -> Option<Slot> {
        let entries = &self.entries;
        self.index.find(hash, |position| {
            let e = entries.get(position);
            e.hash() == hash && e.key() == key
        })
    }

    /// Lets `update` change every flow (a new policy applied to live flows);
    /// returns how many it changed. A changed flow's idle timer is set anew,
    /// since its timeout may have changed. Visits the whole table: call it
    /// off the per-packet path, and know it takes time in proportion to the
    /// flows held.
    pub fn update_all(&mut self, mut update: impl FnMut(&mut FlowEntry) -> bool) -> usize {
        let mut changed = 0;
        for position in self.index.positions() {
            let entry = self.entries.get_mut(position);
            if update(entry) {
                changed += 1;
                self.wheel
                    .schedule(entry.timer, entry.deadline_ms(&self.timeouts));
            }
        }
        changed
    }

    /// Lets `update` change one flow, whose idle timer is then set anew; false if there is no
    /// such flow.
    pub fn update(
        &mut self,
        key: &FlowKey,
        hash: u64,
        update: impl FnOnce(&mut FlowEntry),
    ) -> bool {
        let Some(slot) = self.find(key, hash) else {
            return false;
        };
        let entry = self.entries.get_mut(slot.position);
        update(entry);
        self.wheel
            .schedule(entry.timer, entry.deadline_ms(&self.timeouts));
        true
    }

    /// Removes every flow `doomed` picks; returns how many.
    pub fn remove_where(&mut self, mut doomed: impl FnMut(&FlowEntry) -> bool) -> usize {
        let victims: Vec<(FlowKey, u64)> = self
            .iter()
            .filter(|e| doomed(e))
            .map(|e| (*e.key(), e.hash()))
            .collect();
        for (key, hash) in &victims {
            self.remove(key, *hash);
        }
        victims.len()
    }

    /// Whether the last [`FlowTable::expire`] stopped at its budget with timers possibly still
    /// due: the caller should call again before the clock moves on, or expiry falls behind
    /// whatever creates flows faster than one budget per call (a flood).
    pub fn expiry_behind(&self) -> bool {
        self.expiry_behind
    }

    /// Advances the wheel to `now_ms` and removes the flows found idle past
    /// their timeout; returns how many.
    ///
    /// Work is bounded by `expire_budget` timers examined per call (the rest
    /// wait for the next call, which resumes where this one stopped) plus, at
    /// most, one O(1) look at each of the wheel's slots after a long pause.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        self.expire_with(now_ms, |_| {})
    }

    /// `expire`, handing each removed flow to `on_expired` (for logging, or to
    /// release state a mode keeps outside the entry).
    pub fn expire_with(&mut self, now_ms: u64, mut on_expired: impl FnMut(FlowEntry)) -> usize {
        let mut removed = 0;
        self.expiry_behind = true;
        for _ in 0..self.expire_budget {
            let Some(timer) = self.wheel.next_fired(now_ms) else {
                self.expiry_behind = false;
                break;
            };
            // The timer's position holds its flow: every removal cancels the
            // flow's timer, so a live timer never outlasts its flow.
            let position = u32::try_from(self.wheel.payload(timer)).ok();
            let live = position
                .filter(|&p| self.entries.contains(p) && self.entries.get(p).timer == timer);
            let Some(position) = live else {
                // Cannot happen; if it ever did, the timer goes back to the pool.
                self.wheel.cancel(timer);
                continue;
            };
            let entry = self.entries.get(position);
            let deadline = entry.deadline_ms(&self.timeouts);
            if deadline > now_ms {
                self.wheel.schedule(timer, deadline);
                continue;
            }
            let hash = entry.hash();
            match self.index.find(hash, |p| p == position) {
                Some(slot) => {
                    self.index.remove(hash, slot);
                    self.wheel.cancel(timer);
                    removed += 1;
                    on_expired(self.entries.remove(position));
                }
                None => self.wheel.cancel(timer),
            }
        }
        removed
    }

    pub fn get(&self, key: &FlowKey, hash: u64) -> Option<&FlowEntry> {
        let slot = self.find(key, hash)?;
        Some(self.entries.get(slot.position))
    }

    pub fn get_mut(&mut self, key: &FlowKey, hash: u64) -> Option<&mut FlowEntry> {
        let slot = self.find(key, hash)?;
        Some(self.entries.get_mut(slot.position))
    }

    /// The data plane reset the flow's connection itself (the proxy's RSTs never pass through
    /// the table): the entry shows it closed and goes after the closed timeout, as it would
    /// had an endpoint sent the RST.
    pub fn record_own_reset(&mut self, key: &FlowKey, hash: u64) {
        let Some(slot) = self.find(key, hash) else {
            return;
        };
        let entry = self.entries.get_mut(slot.position);
        entry.record_own_reset();
        // The closed timeout is the shortest: the timer comes forward.
        self.wheel
            .schedule(entry.timer, entry.deadline_ms(&self.timeouts));
    }

    pub fn remove(&mut self, key: &FlowKey, hash: u64) -> Option<FlowEntry> {
        let slot = self.find(key, hash)?;
        self.index.remove(hash, slot);
        let entry = self.entries.remove(slot.position);
        self.wheel.cancel(entry.timer);
        Some(entry)
    }

    /// Removes every flow; the memory stays reserved.
    pub fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
        self.wheel.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most flows the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn timeouts(&self) -> &FlowTimeouts {
        &self.timeouts
    }

    /// In no particular order. Walks the whole index: for listings, not for
    /// the packet path.
    pub fn iter(&self) -> impl Iterator<Item = &FlowEntry> {
        self.index.positions().map(|p| self.entries.get(p))
    }

    /// A 32-bit NIC hash spread to 64 bits. A multiply by an odd constant
    /// (a bijection) fills the high half, from which the index takes its
    /// tag; folding that half onto the low one gives the bucket index every
    /// input bit too. That matters because RSS steers to queues by the
    /// hash's low bits, so all the hashes one worker sees agree there.
    #[inline]
    pub fn spread_hash(nic_hash: u32) -> u64 {
        let x = u64::from(nic_hash).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^ (x >> 32)
    }

    /// Which of `shards` workers owns a flow, for software steering.
    ///
    /// It must not use the bits that pick the bucket, or every flow on one
    /// worker would share them: the index takes its bucket from the low bits
    /// (fewer than 32 for any table that fits in memory). Bits 32..57 are
    /// free of them; a multiply-shift maps them onto `0..shards`. The index's
    /// 32-bit tag comes from bits 32..64, so a worker's flows agree on about
    /// `log2(shards)` tag bits: a tag then falsely matches one slot in tens
    /// of millions rather than one in billions, and costs a key compare.
    #[inline]
    pub fn shard_of(hash: u64, shards: usize) -> usize {
        let bits = u128::from((hash >> 32) & ((1 << 25) - 1));
        ((bits * shards as u128) >> 25) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::entry::{Direction, FlowMode};
    use crate::flow::key::tests::assert_spread;

    use crate::wire::tcp::flags::{ACK, FIN, RST, SYN};

    fn packet(src: &str, sport: u16, dst: &str, dport: u16, protocol: u8) -> PacketMeta {
        let (key, orientation) = FlowKey::from_packet(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            protocol,
            sport,
            dport,
        );
        PacketMeta {
            key,
            orientation,
            hash: key.software_hash(),
            len: 100,
            tcp_flags: None,
            ingress: PortSide::Inside,
        }
    }

    fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> PacketMeta {
        PacketMeta {
            tcp_flags: Some(flags),
            ..packet(src, sport, dst, dport, TCP)
        }
    }

    fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> PacketMeta {
        packet(src, sport, dst, dport, UDP)
    }

    /// Default timeouts and tick; no expiry budget unless a test is about it.
    fn table(capacity: usize) -> FlowTable {
        FlowTable::new(FlowTableConfig {
            capacity,
            expire_budget: usize::MAX,
            ..FlowTableConfig::default()
        })
    }

    fn created(observation: Observation<'_>) -> &mut FlowEntry {
        match observation {
            Observation::Created(entry) => entry,
            other => panic!("expected a new flow, got {other:?}"),
        }
    }

    fn existing(observation: Observation<'_>) -> &mut FlowEntry {
        match observation {
            Observation::Existing(entry) => entry,
            other => panic!("expected an existing flow, got {other:?}"),
        }
    }

    fn present(table: &FlowTable, pkt: &PacketMeta) -> bool {
        table.get(&pkt.key, pkt.hash).is_some()
    }

    #[test]
    fn both_directions_hit_one_entry_with_per_direction_counters() {
        for (client, server) in [("198.18.0.1", "198.18.0.2"), ("2001:db8::2", "2001:db8::1")] {
            let mut table = table(16);
            let syn = tcp(client, 40000, server, 80, SYN);
            let syn_ack = tcp(server, 80, client, 40000, SYN | ACK);
            let ack = PacketMeta {
                len: 1500,
                ..tcp(client, 40000, server, 80, ACK)
            };
            let entry = created(table.observe(&syn, 10));
            assert_eq!(entry.initiator(), syn.orientation);
            assert_eq!(entry.tcp_phase(), Some(TcpPhase::Embryonic));
            let entry = existing(table.observe(&syn_ack, 11));
            assert_eq!(
                entry.direction(syn_ack.orientation),
                Direction::ServerToClient
            );
            assert_eq!(entry.tcp_phase(), Some(TcpPhase::Established));
            existing(table.observe(&ack, 12));

            assert_eq!(table.len(), 1);
            let entry = table.get(&syn.key, syn.hash).unwrap();
            assert_eq!(entry.packets(Direction::ClientToServer), 2);
            assert_eq!(entry.bytes(Direction::ClientToServer), 1600);
            assert_eq!(entry.packets(Direction::ServerToClient), 1);
            assert_eq!(entry.bytes(Direction::ServerToClient), 100);
            assert_eq!(entry.first_seen_ms(), 10);
            assert_eq!(entry.last_seen_ms(), 12);
            assert_eq!(entry.key().endpoints(entry.initiator()).0.port(), 40000);
        }
    }

    #[test]
    fn the_initiator_is_whoever_spoke_first_even_from_the_high_side() {
        let mut table = table(16);
        // 198.18.0.9 > 198.18.0.1: the first packet goes high to low.
        let query = PacketMeta {
            ingress: PortSide::Outside,
            ..udp("198.18.0.9", 5353, "198.18.0.1", 53)
        };
        let answer = udp("198.18.0.1", 53, "198.18.0.9", 5353);
        assert_eq!(query.orientation, Orientation::HighToLow);
        let entry = created(table.observe(&query, 0));
        assert_eq!(entry.initiator(), Orientation::HighToLow);
        assert_eq!(entry.tcp_phase(), None);
        table.observe(&answer, 1);
        table.observe(&answer, 2);
        let entry = table.get(&query.key, query.hash).unwrap();
        assert_eq!(entry.packets(Direction::ClientToServer), 1);
        assert_eq!(entry.packets(Direction::ServerToClient), 2);
        assert_eq!(entry.ingress(), PortSide::Outside);
    }

    #[test]
    fn a_full_table_refuses_new_flows_and_keeps_serving_the_old() {
        let mut table = table(2);
        let a = udp("198.18.0.1", 1, "198.18.0.2", 53);
        let b = udp("198.18.0.1", 2, "198.18.0.2", 53);
        let c = udp("198.18.0.1", 3, "198.18.0.2", 53);
        created(table.observe(&a, 0));
        created(table.observe(&b, 0));
        assert!(matches!(table.observe(&c, 0), Observation::Full));
        assert_eq!(table.len(), 2);
        assert_eq!(table.capacity(), 2);
        assert!(!present(&table, &c));
        let entry = existing(table.observe(&a, 1));
        assert_eq!(entry.packets(Direction::ClientToServer), 2);

        table.remove(&b.key, b.hash).unwrap();
        created(table.observe(&c, 2));
        assert!(matches!(table.observe(&b, 3), Observation::Full));
    }

    #[test]
    fn everything_is_reserved_for_the_capacity_up_front() {
        for capacity in [0, 1, 2, 3, 100, 1_000, 65_536] {
            let table = table(capacity);
            assert!(table.entries.reserved() >= capacity, "{capacity}");
            // At most 3/5 full, where probes stay short.
            assert!(table.index.slots() * 3 >= capacity * 5, "{capacity}");
        }
    }

    /// Replacing flows at full capacity reuses slab positions and index
    /// slots: nothing grows, and the index stays exact.
    #[test]
    fn churn_at_full_capacity_never_grows_the_table() {
        const CAPACITY: u16 = 1_000;
        let mut table = table(CAPACITY.into());
        let reserved = table.entries.reserved();
        let slots = table.index.slots();
        let flow = |n: u32| {
            let src = std::net::Ipv4Addr::from(0xC612_0000 | n >> 16).to_string();
            udp(&src, n as u16, "198.19.0.1", 53)
        };
        for n in 0..u32::from(CAPACITY) {
            created(table.observe(&flow(n), 0));
        }
        for n in u32::from(CAPACITY)..200_000 {
            let old = flow(n - u32::from(CAPACITY));
            table.remove(&old.key, old.hash).unwrap();
            created(table.observe(&flow(n), 0));
            assert!(table.entries.reserved() <= reserved, "grew after {n} flows");
        }
        assert_eq!(table.len(), usize::from(CAPACITY));
        assert_eq!(table.index.slots(), slots);
        for n in 200_000 - u32::from(CAPACITY)..200_000 {
            assert!(present(&table, &flow(n)));
        }
    }

    /// Flows whose hashes share their low bits, so all start at one index
    /// bucket and most spill past it.
    fn colliding(n: u16) -> Vec<PacketMeta> {
        (0..n)
            .map(|i| PacketMeta {
                hash: 0x2a | u64::from(i + 1) << 40,
                ..udp("198.18.0.1", 1000 + i, "198.18.0.2", 53)
            })
            .collect()
    }

    #[test]
    fn flows_that_spill_past_full_buckets_are_found_and_expire() {
        let mut table = table(64);
        let flows = colliding(20);
        for (i, f) in flows.iter().enumerate() {
            created(table.observe(f, i as u64));
        }
        for f in &flows {
            existing(table.observe(f, 1_000));
        }
        // A flow with a colliding hash but another key is a new flow.
        let stranger = PacketMeta {
            hash: flows[15].hash,
            ..udp("198.18.0.9", 9, "198.18.0.2", 53)
        };
        assert!(!present(&table, &stranger));
        created(table.observe(&stranger, 1_000));
        assert_eq!(table.len(), 21);
        assert_eq!(table.expire(120_999), 0);
        assert_eq!(table.expire(121_000), 21);
        assert!(table.is_empty());
        assert!(flows.iter().all(|f| !present(&table, f)));
    }

    #[test]
    fn a_hint_leads_to_the_flow_and_a_stale_or_wrong_one_misleads_nothing() {
        let mut table = table(16);
        let a = udp("198.18.0.1", 1, "198.18.0.2", 53);
        let b = udp("198.18.0.1", 2, "198.18.0.2", 53);
        assert_eq!(table.prefetch_entry(a.hash), EntryHint::NONE);
        created(table.observe(&a, 0));
        let hint_a = table.prefetch_entry(a.hash);
        assert_ne!(hint_a, EntryHint::NONE);
        let entry = existing(table.observe_hinted(&a, hint_a, 1, |_| true));
        assert_eq!(entry.packets(Direction::ClientToServer), 2);
        // Another flow's hint, or none: the ordinary lookup.
        created(table.observe_hinted(&b, hint_a, 2, |_| true));
        existing(table.observe_hinted(&a, table.prefetch_entry(b.hash), 3, |_| true));
        existing(table.observe_hinted(&b, EntryHint::NONE, 3, |_| true));

        // `a` goes, and a flow with `a`'s hash but another key takes its
        // slab position (freed last, reused first) and its index slot.
        table.remove(&a.key, a.hash).unwrap();
        let impostor = PacketMeta {
            hash: a.hash,
            ..udp("198.18.0.9", 1, "198.18.0.2", 53)
        };
        created(table.observe(&impostor, 4));
        assert_eq!(table.prefetch_entry(a.hash), hint_a, "the same slot");
        let entry = created(table.observe_hinted(&a, hint_a, 5, |_| true));
        assert_eq!(entry.key(), &a.key);
        assert_eq!(table.len(), 3);
        // Vacated: the hint points at nothing.
        table.remove(&impostor.key, impostor.hash).unwrap();
        table.remove(&a.key, a.hash).unwrap();
        created(table.observe_hinted(&a, hint_a, 6, |_| true));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn removing_flows_keeps_the_others_findable() {
        let mut table = table(64);
        let flows = colliding(24);
        for f in &flows {
            created(table.observe(f, 0));
        }
        // Empty the home bucket and part of the next: what spilled further
        // is still found, the removed are not, and re-adding reuses space.
        for f in flows.iter().take(10) {
            assert!(table.remove(&f.key, f.hash).is_some());
        }
        for (i, f) in flows.iter().enumerate() {
            assert_eq!(present(&table, f), i >= 10, "flow {i}");
        }
        for f in flows.iter().take(10) {
            created(table.observe(f, 0));
        }
        assert_eq!(table.len(), 24);
        assert_eq!(table.iter().count(), 24);
        let removed = table.remove_where(|e| e.key().low().port() % 2 == 0);
        assert_eq!(removed, 12);
        for (i, f) in flows.iter().enumerate() {
            assert_eq!(present(&table, f), i % 2 == 1, "flow {i}");
        }
    }

    #[test]
    fn an_idle_udp_flow_expires_at_its_timeout_and_not_before() {
        let mut table = table(16);
        let flow = udp("198.18.0.1", 4500, "198.18.0.2", 4500);
        table.observe(&flow, 1_000);
        let mut now = 1_000;
        while now < 121_000 {
            assert_eq!(table.expire(now), 0, "removed early at {now} ms");
            now += 100;
        }
        assert_eq!(table.expire(120_999), 0);
        assert_eq!(table.expire(121_000), 1);
        assert!(table.is_empty());
    }

    #[test]
    fn an_active_flow_is_kept_and_expires_after_its_last_packet() {
        let mut table = table(16);
        let flow = udp("198.18.0.1", 4500, "198.18.0.2", 4500);
        let mut last = 0;
        for now in (0..=600_000).step_by(100) {
            if now % 60_000 == 0 {
                table.observe(&flow, now);
                last = now;
            }
            assert_eq!(table.expire(now), 0, "active flow removed at {now} ms");
        }
        assert_eq!(last, 600_000);
        for now in (600_100..720_000).step_by(100) {
            assert_eq!(table.expire(now), 0, "removed early at {now} ms");
        }
        assert_eq!(table.expire(720_000), 1);
    }

    #[test]
    fn a_flow_beyond_the_wheels_horizon_expires_on_time() {
        let mut table = table(16);
        let horizon_ms = table.wheel.slots() as u64 * 100;
        assert!(horizon_ms < table.timeouts().tcp_established_ms);
        // Picked up mid-stream and answered: established, one hour.
        let flow = tcp("198.18.0.1", 40000, "198.18.0.2", 22, ACK);
        table.observe(&flow, 0);
        table.observe(&tcp("198.18.0.2", 22, "198.18.0.1", 40000, ACK), 50);
        for now in (0..3_600_050).step_by(1_000) {
            assert_eq!(table.expire(now), 0, "removed early at {now} ms");
        }
        assert_eq!(table.expire(3_600_049), 0);
        assert_eq!(table.expire(3_600_100), 1);
    }

    /// An established flow's timer sits an hour away; a RST or the second FIN
    /// must bring it forward.
    fn closes_after_the_closed_timeout(closing: &[PacketMeta]) {
        let mut table = table(16);
        let c = "198.18.0.1";
        let s = "198.18.0.2";
        table.observe(&tcp(c, 40000, s, 443, SYN), 0);
        table.observe(&tcp(s, 443, c, 40000, SYN | ACK), 0);
        table.observe(&tcp(c, 40000, s, 443, ACK), 0);
        for pkt in closing {
            table.observe(pkt, 5_000);
        }
        let flow = &closing[0];
        assert_eq!(
            table.get(&flow.key, flow.hash).unwrap().tcp_phase(),
            Some(TcpPhase::Closed)
        );
        for now in (0..15_000).step_by(100) {
            assert_eq!(table.expire(now), 0, "removed early at {now} ms");
        }
        assert_eq!(table.expire(15_000), 1);
    }

    /// A connection tollgate reset itself keeps its entry, closed, for the closed timeout:
    /// a late segment from the responder meets it instead of making a flow the wrong way round.
    #[test]
    fn a_flow_closed_by_tollgate_keeps_its_orientation_until_the_closed_timeout() {
        let mut table = table(16);
        let (c, s) = ("198.18.0.1", "198.18.0.2");
        let first = tcp(c, 40000, s, 443, SYN);
        table.observe(&first, 0);
        table.observe(&tcp(s, 443, c, 40000, SYN | ACK), 0);
        table.observe(&tcp(c, 40000, s, 443, ACK), 5_000);
        assert!(table.update(&first.key, first.hash, FlowEntry::close_by_reset));
        let late = tcp(s, 443, c, 40000, ACK);
        let entry = existing(table.observe(&late, 6_000));
        assert_eq!(entry.tcp_phase(), Some(TcpPhase::Closed));
        assert_eq!(entry.initiator(), first.orientation);
        assert_eq!(entry.packets(Direction::ServerToClient), 2);
        for now in (0..16_000).step_by(100) {
            assert_eq!(table.expire(now), 0, "removed early at {now} ms");
        }
        assert_eq!(table.expire(16_000), 1);
        assert!(!table.update(&first.key, first.hash, FlowEntry::close_by_reset));
    }

    #[test]
    fn a_reset_flow_goes_after_the_closed_timeout() {
        closes_after_the_closed_timeout(&[tcp("198.18.0.2", 443, "198.18.0.1", 40000, RST)]);
    }

    #[test]
    fn a_flow_the_data_plane_reset_goes_after_the_closed_timeout() {
        let mut table = table(16);
        let (c, s) = ("198.18.0.1", "198.18.0.2");
        let flow = tcp(c, 40000, s, 443, SYN);
        table.observe(&flow, 0);
        table.observe(&tcp(s, 443, c, 40000, SYN | ACK), 0);
        table.observe(&tcp(c, 40000, s, 443, ACK), 5_000);
        table.record_own_reset(&flow.key, flow.hash);
        assert_eq!(
            table.get(&flow.key, flow.hash).unwrap().tcp_phase(),
            Some(TcpPhase::Closed)
        );
        for now in (0..15_000).step_by(100) {
            assert_eq!(table.expire(now), 0, "removed early at {now} ms");
        }
        assert_eq!(table.expire(15_000), 1);
    }

    #[test]
    fn a_flow_closed_both_ways_goes_after_the_closed_timeout() {
        closes_after_the_closed_timeout(&[
            tcp("198.18.0.1", 40000, "198.18.0.2", 443, FIN | ACK),
            tcp("198.18.0.2", 443, "198.18.0.1", 40000, FIN | ACK),
        ]);
    }

    #[test]
    fn a_half_closed_flow_gets_the_closing_timeout() {
        let mut table = table(16);
        let flow = tcp("198.18.0.1", 40000, "198.18.0.2", 443, ACK);
        table.observe(&flow, 0);
        table.observe(
            &tcp("198.18.0.2", 443, "198.18.0.1", 40000, FIN | ACK),
            1_000,
        );
        assert_eq!(table.expire(120_900), 0);
        assert_eq!(table.expire(121_000), 1);
    }

    #[test]
    fn a_pick_up_nothing_answers_goes_after_the_unreplied_timeout_whatever_its_phase() {
        let c = "198.18.0.1";
        let s = "198.18.0.2";
        // An ACK flood's packets, a pick-up on a FIN, on a SYN-ACK, on a fragment.
        let firsts = [
            tcp(c, 40000, s, 443, ACK),
            tcp(c, 40001, s, 443, FIN | ACK),
            tcp(c, 40002, s, 443, SYN | ACK),
            PacketMeta {
                tcp_flags: None,
                ..tcp(c, 40003, s, 443, 0)
            },
        ];
        let mut table = table(16);
        for pkt in &firsts {
            let entry = created(table.observe(pkt, 0));
            assert!(entry.unreplied(), "{:?}", pkt.tcp_flags);
        }
        // More from the same side keeps each alive, but does not answer it.
        for pkt in &firsts {
            assert!(existing(table.observe(pkt, 1_000)).unreplied());
        }
        assert_eq!(table.timeouts().tcp_unreplied_ms, 5_000);
        assert_eq!(table.expire(5_900), 0);
        assert_eq!(table.expire(6_000), firsts.len());
    }

    #[test]
    fn a_pick_up_answered_gets_the_timeout_of_its_phase() {
        let c = "198.18.0.1";
        let s = "198.18.0.2";
        let mut table = table(16);
        table.observe(&tcp(c, 40000, s, 443, ACK), 0);
        let entry = existing(table.observe(&tcp(s, 443, c, 40000, ACK), 4_000));
        assert!(!entry.unreplied());
        assert!(entry.tcp().mid_stream());
        assert_eq!(table.expire(60_000), 0);
        assert_eq!(table.expire(3_603_900), 0);
        assert_eq!(table.expire(3_604_000), 1);

        // An answer that is a RST: the closed timeout, since the flow is over.
        let t = 4_000_000;
        table.observe(&tcp(c, 40001, s, 443, ACK), t);
        table.observe(&tcp(s, 443, c, 40001, RST), t);
        assert_eq!(table.expire(t + 9_900), 0);
        assert_eq!(table.expire(t + 10_000), 1);
    }

    #[test]
    fn a_rule_idle_timeout_does_not_lengthen_an_unreplied_pick_up() {
        let mut t = table(16);
        let p = tcp("198.18.0.1", 40000, "198.18.0.2", 10000, ACK);
        created(t.observe_with(&p, 0, |e| e.classify(FlowMode::Bypass, 1, 600)));
        assert_eq!(t.expire(4_900), 0);
        assert_eq!(t.expire(5_000), 1);
        // With a SYN: the rule's 600 s.
        created(t.observe_with(
            &tcp("198.18.0.1", 40001, "198.18.0.2", 10000, SYN),
            0,
            |e| e.classify(FlowMode::Bypass, 1, 600),
        ));
        assert_eq!(t.expire(599_900), 0);
        assert_eq!(t.expire(600_000), 1);
    }

    #[test]
    fn a_flow_classified_as_untracked_takes_nothing_even_from_a_full_table() {
        let mut t = table(1);
        let a = tcp("198.18.0.1", 40000, "198.18.0.2", 443, SYN);
        let rst = tcp("198.18.0.1", 40001, "198.18.0.2", 443, RST);
        match t.observe_hinted(&rst, EntryHint::NONE, 0, |e| {
            e.classify(FlowMode::Drop, 4, 0);
            false
        }) {
            Observation::Untracked(e) => {
                assert_eq!((e.mode(), e.rule(), e.key()), (FlowMode::Drop, 4, &rst.key));
            }
            other => panic!("expected an untracked flow, got {other:?}"),
        }
        assert!(t.is_empty());
        created(t.observe(&a, 0));
        assert!(matches!(
            t.observe_hinted(&rst, EntryHint::NONE, 0, |_| false),
            Observation::Untracked(_)
        ));
        assert!(matches!(
            t.observe_hinted(&rst, EntryHint::NONE, 0, |_| true),
            Observation::Full
        ));
        assert_eq!(t.len(), 1);
        assert_eq!(t.expire(30_000), 1, "only the tracked flow's timer was set");
        assert_eq!(t.expire(1_000_000), 0);
    }

    #[test]
    fn an_unanswered_syn_goes_after_the_embryonic_timeout() {
        let mut table = table(16);
        let syn = tcp("198.18.0.1", 40000, "198.18.0.2", 443, SYN);
        table.observe(&syn, 0);
        table.observe(&syn, 1_000);
        table.observe(&syn, 3_000);
        assert_eq!(table.expire(32_900), 0);
        assert_eq!(table.expire(33_000), 1);
    }

    #[test]
    fn a_port_reused_after_a_reset_lives_as_a_new_connection() {
        let mut table = table(16);
        let c = "198.18.0.1";
        let s = "198.18.0.2";
        table.observe(&tcp(c, 40000, s, 443, SYN), 0);
        table.observe(&tcp(s, 443, c, 40000, RST | ACK), 0);
        let entry = existing(table.observe(&tcp(c, 40000, s, 443, SYN), 5_000));
        assert_eq!(entry.tcp_phase(), Some(TcpPhase::Embryonic));
        // The closed timer still fires at 10 s; it finds the flow younger.
        assert_eq!(table.expire(10_000), 0);
        assert_eq!(table.expire(34_900), 0);
        assert_eq!(table.expire(35_000), 1);
    }

    #[test]
    fn a_removed_flows_timer_cannot_remove_its_successor() {
        let mut table = table(16);
        let flow = udp("198.18.0.1", 4500, "198.18.0.2", 4500);
        created(table.observe(&flow, 0));
        let old = table.remove(&flow.key, flow.hash).unwrap();
        assert_eq!(old.packets(Direction::ClientToServer), 1);
        assert!(table.remove(&flow.key, flow.hash).is_none());
        assert!(table.is_empty());

        let entry = created(table.observe(&flow, 100_000));
        assert_eq!(entry.packets(Direction::ClientToServer), 1);
        assert_eq!(table.expire(120_000), 0);
        assert!(present(&table, &flow));
        assert_eq!(table.expire(219_900), 0);
        assert_eq!(table.expire(220_000), 1);
        assert!(table.is_empty());
    }

    #[test]
    fn a_hundred_thousand_flows_all_expire() {
        const FLOWS: usize = 100_000;
        let mut table = FlowTable::new(FlowTableConfig {
            capacity: FLOWS,
            ..FlowTableConfig::default()
        });
        for i in 0..FLOWS {
            let src = std::net::Ipv4Addr::from(0xC612_0000 + (i as u32 >> 8));
            let pkt = udp(&src.to_string(), 1024 + (i & 0xff) as u16, "198.19.0.1", 53);
            // Spread over the first 10 s, so the flows sit in many slots.
            assert!(matches!(
                table.observe(&pkt, (i as u64 * 10_000) / FLOWS as u64),
                Observation::Created(_)
            ));
        }
        assert_eq!(table.len(), FLOWS);
        assert_eq!(table.iter().count(), FLOWS);

        let mut removed = 0;
        for now in (0..=130_000).step_by(100) {
            // The worker calls expire between bursts; several times a tick.
            for _ in 0..50 {
                let n = table.expire(now);
                assert!(n == 0 || now >= 120_000, "removed early at {now} ms");
                removed += n;
            }
        }
        assert_eq!(removed, FLOWS);
        assert_eq!(table.len(), 0);
        assert!(table.is_empty());
        assert_eq!(table.iter().count(), 0);
    }

    #[test]
    fn expire_examines_at_most_its_budget_per_call() {
        let mut table = FlowTable::new(FlowTableConfig {
            capacity: 1_000,
            expire_budget: 64,
            ..FlowTableConfig::default()
        });
        for port in 0..1_000 {
            table.observe(&udp("198.18.0.1", port, "198.18.0.2", 53), 0);
        }
        let mut calls = 0;
        let mut expired = Vec::new();
        while !table.is_empty() {
            let n = table.expire_with(120_000, |entry| expired.push(*entry.key()));
            assert!(n <= 64);
            calls += 1;
            // Behind while a whole budget went: the driver calls again before the clock moves.
            assert_eq!(table.expiry_behind(), n == 64, "call {calls}");
        }
        assert_eq!(calls, 1_000usize.div_ceil(64));
        assert_eq!(expired.len(), 1_000);
        table.expire(120_001);
        assert!(!table.expiry_behind(), "nothing was due");
    }

    #[test]
    fn get_mut_and_iter_see_the_stored_entries() {
        let mut table = table(16);
        let a = udp("198.18.0.1", 1, "198.18.0.2", 53);
        let b = tcp("2001:db8::1", 2, "2001:db8::2", 80, SYN);
        table.observe(&a, 0);
        table.observe(&b, 0);
        let entry = table.get_mut(&a.key, a.hash).unwrap();
        entry.set_mode(FlowMode::Drop);
        assert_eq!(entry.mode(), FlowMode::Drop);
        let mut keys: Vec<String> = table.iter().map(|e| e.key().to_string()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "tcp [2001:db8::1]:2 <-> [2001:db8::2]:80",
                "udp 198.18.0.1:1 <-> 198.18.0.2:53"
            ]
        );
        // The wrong hash finds nothing: the caller's hash is the truth.
        assert!(table.get(&a.key, a.hash ^ 1).is_none());
    }

    #[test]
    fn clear_empties_the_table_and_its_timers() {
        let mut table = table(4);
        for port in 0..4 {
            table.observe(&udp("198.18.0.1", port, "198.18.0.2", 53), 0);
        }
        table.clear();
        assert!(table.is_empty());
        for port in 10..14 {
            created(table.observe(&udp("198.18.0.1", port, "198.18.0.2", 53), 60_000));
        }
        assert_eq!(table.expire(120_000), 0);
        assert_eq!(table.expire(180_000), 4);
    }

    #[test]
    fn nic_hashes_that_share_their_low_bits_still_spread() {
        // RSS picks the queue from the low bits through the redirection
        // table, so one worker sees hashes that agree there.
        let spread: Vec<u64> = (0..65_536u32)
            .map(|i| FlowTable::spread_hash(i << 7 | 0x2a))
            .collect();
        assert_spread(&spread);
        let sequential: Vec<u64> = (0..65_536u32).map(FlowTable::spread_hash).collect();
        assert_spread(&sequential);
    }

    #[test]
    fn one_shards_hashes_still_spread_where_the_table_looks() {
        let mut shards = [0usize; 6];
        let mut shard_zero = Vec::new();
        for port in 0..=u16::MAX {
            let hash = packet("198.18.0.1", port, "198.18.0.2", 80, TCP)
                .key
                .software_hash();
            let shard = FlowTable::shard_of(hash, shards.len());
            shards[shard] += 1;
            if shard == 0 {
                shard_zero.push(hash);
            }
        }
        let mean = 65_536 / shards.len();
        assert!(
            shards.iter().all(|&n| n.abs_diff(mean) * 20 <= mean),
            "{shards:?}"
        );
        assert_spread(&shard_zero);
    }

    #[test]
    fn a_rule_idle_timeout_set_at_creation_governs_expiry() {
        let mut t = table(16);
        let p = udp("198.18.0.1", 5000, "198.18.0.2", 53);
        let e = match t.observe_with(&p, 0, |e| e.classify(FlowMode::Bypass, 7, 5)) {
            Observation::Created(e) => e,
            other => panic!("expected a new flow, got {other:?}"),
        };
        assert_eq!((e.rule(), e.mode()), (7, FlowMode::Bypass));
        assert_eq!(t.expire(4_900), 0);
        assert_eq!(
            t.expire(5_200),
            1,
            "expired on the rule's 5 s, not UDP's 120 s"
        );
    }

    #[test]
    fn update_all_reclassifies_and_resets_timers() {
        let mut t = table(16);
        for port in 1..=4 {
            created(t.observe(&udp("198.18.0.1", port, "198.18.0.2", 53), 0));
        }
        let changed = t.update_all(|e| {
            if e.key().low().port() % 2 == 0 || e.key().high().port() % 2 == 0 {
                false
            } else {
                e.classify(FlowMode::Drop, 3, 2);
                true
            }
        });
        assert!((1..=4).contains(&changed));
        assert_eq!(
            t.iter().filter(|e| e.mode() == FlowMode::Drop).count(),
            changed
        );
        assert_eq!(
            t.expire(2_200),
            changed,
            "the new, shorter timeout applies at once"
        );
        assert_eq!(t.len(), 4 - changed);
    }

    #[test]
    fn remove_where_removes_exactly_the_chosen_flows_and_their_timers() {
        let mut t = table(16);
        for port in 1..=6 {
            created(t.observe(&udp("198.18.0.1", port, "198.18.0.2", 53), 0));
        }
        let removed = t.remove_where(|e| (1..=3).contains(&e.key().low().port()));
        assert_eq!(t.len(), 6 - removed);
        // Re-creating a removed flow works and no stale timer removes it early.
        created(t.observe(&udp("198.18.0.1", 1, "198.18.0.2", 53), 100_000));
        assert_eq!(t.expire(150_000), 6 - removed);
        assert_eq!(t.len(), 1);
    }
}
