//! The far end of the wire: a traffic generator and sink on its own core, in
//! the role Pktgen plays on a second box in the lab.
//!
//! It works on rings (the ring PMD's queues) rather than through a port, so
//! that it pays only what a NIC's DMA engine would otherwise do for free:
//! writing a frame into a buffer and posting it, and taking sent buffers back.
//! A fixed set of mbufs circulates: each one the device under test sends is
//! taken off its TX ring, overwritten with the next flow's frame, and posted
//! on the RX ring it belongs to. So the buffers stay cache-warm, as a NIC's
//! are with DDIO, while the flows they carry sweep over the whole flow table.
//!
//! A port with several RX queues gets each frame on the queue its NIC's RSS
//! would choose ([`rss_queues`]), and its frames come back on whichever TX
//! queue the device under test sends them by.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context};
use dpdk::{Burst, Mbuf, MbufRing, Mempool};

use crate::frames::{FrameTable, FRAME_LEN};

/// How far ahead in its frame table the wire prefetches: two bursts.
const FRAMES_AHEAD: usize = 2 * dpdk::BURST_SIZE;

/// The wire thread's name, as /proc shows it.
pub const THREAD_NAME: &str = "bench-wire";

/// One direction of traffic through the device under test.
pub struct Lane {
    /// The RX rings of the port these frames arrive on, one per queue.
    pub inject: Vec<Arc<MbufRing>>,
    /// The TX rings of the port they leave by, one per queue.
    pub collect: Vec<Arc<MbufRing>>,
    /// The frames to send, cycled through flow by flow.
    pub frames: Arc<FrameTable>,
    /// Flow `i`'s RX queue, an index into `inject` ([`rss_queues`]); `None`
    /// when the port has one queue.
    pub rss: Option<Arc<Vec<u8>>>,
}

pub struct Wire {
    pub lanes: [Lane; 2],
    /// Frames of flows `0..flows` are sent, round-robin.
    pub flows: usize,
    /// Mbufs circulating in each lane.
    pub mbufs_per_lane: usize,
    pub pool: Arc<Mempool>,
    pub core: Option<usize>,
    /// A device thread shares the wire's core: when the RX rings are full,
    /// give it the CPU rather than spin through the scheduler's slice.
    pub shares_core: bool,
}

/// Counters the wire publishes after every round; only it writes them. Kept
/// on their own cache lines, away from anything the device under test
/// touches.
#[derive(Default)]
#[repr(align(128))]
struct Shared {
    injected: AtomicU64,
    collected: AtomicU64,
    samples: AtomicU64,
    dry: AtomicU64,
    occupancy: AtomicU64,
    phase: AtomicU8,
}

const FEED: u8 = 0;
const DRAIN: u8 = 1;
const STOP: u8 = 2;

/// What the wire has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireStats {
    /// Frames posted on the RX rings.
    pub injected: u64,
    /// Frames taken back off the TX rings: what the device forwarded.
    pub collected: u64,
    /// Times the wire looked at an RX ring before topping it up...
    pub samples: u64,
    /// ...and found it empty: the device under test had caught up with the
    /// wire and was polling an empty queue.
    pub dry: u64,
    /// The frames found waiting in the RX ring, summed over those looks.
    pub occupancy: u64,
}

impl WireStats {
    pub fn since(&self, earlier: &WireStats) -> WireStats {
        WireStats {
            injected: self.injected - earlier.injected,
            collected: self.collected - earlier.collected,
            samples: self.samples - earlier.samples,
            dry: self.dry - earlier.dry,
            occupancy: self.occupancy - earlier.occupancy,
        }
    }

    pub fn plus(&self, other: &WireStats) -> WireStats {
        WireStats {
            injected: self.injected + other.injected,
            collected: self.collected + other.collected,
            samples: self.samples + other.samples,
            dry: self.dry + other.dry,
            occupancy: self.occupancy + other.occupancy,
        }
    }

    /// Frames waiting in an RX ring when the wire looked, on average.
    pub fn mean_occupancy(&self) -> f64 {
        self.occupancy as f64 / self.samples.max(1) as f64
    }

    /// The share of looks that found an RX ring empty.
    pub fn dry_fraction(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.dry as f64 / self.samples as f64
        }
    }
}

/// A running wire.
pub struct WireHandle {
    shared: Arc<Shared>,
    thread: JoinHandle<WireStats>,
}

impl WireHandle {
    pub fn stats(&self) -> WireStats {
        let s = &self.shared;
        WireStats {
            injected: s.injected.load(Ordering::Relaxed),
            collected: s.collected.load(Ordering::Relaxed),
            samples: s.samples.load(Ordering::Relaxed),
            dry: s.dry.load(Ordering::Relaxed),
            occupancy: s.occupancy.load(Ordering::Relaxed),
        }
    }

    /// Stops sending; frames still coming back are collected and freed.
    pub fn stop_feeding(&self) {
        self.shared.phase.store(DRAIN, Ordering::Relaxed);
    }

    /// Stops the thread after a last sweep of the TX rings. Every mbuf the
    /// wire held or collected is back in the pool then.
    pub fn finish(self) -> anyhow::Result<WireStats> {
        self.shared.phase.store(STOP, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow!("the wire thread panicked"))
    }
}

impl Wire {
    /// Allocates the circulating mbufs and starts the thread.
    pub fn start(self) -> anyhow::Result<WireHandle> {
        if self.flows == 0 || self.lanes.iter().any(|l| l.frames.len() < self.flows) {
            bail!("the frame tables hold fewer than {} flows", self.flows);
        }
        for lane in &self.lanes {
            if lane.inject.is_empty() || lane.collect.is_empty() {
                bail!("a lane needs at least one RX and one TX ring");
            }
            match &lane.rss {
                None if lane.inject.len() > 1 || lane.collect.len() > 1 => {
                    bail!("a lane with several queues needs each flow's RX queue")
                }
                Some(queues)
                    if queues.len() < self.flows
                        || queues[..self.flows]
                            .iter()
                            .any(|&q| usize::from(q) >= lane.inject.len()) =>
                {
                    bail!(
                        "the RSS table must give each of {} flows one of {} queues",
                        self.flows,
                        lane.inject.len()
                    )
                }
                _ => {}
            }
        }
        let mut spares: [Vec<Mbuf>; 2] = [Vec::new(), Vec::new()];
        for spare in &mut spares {
            for _ in 0..self.mbufs_per_lane {
                let mut m = self.pool.alloc().with_context(|| {
                    format!(
                        "mempool exhausted allocating {} mbufs per lane (in use {} of {})",
                        self.mbufs_per_lane,
                        self.pool.in_use(),
                        self.pool.size()
                    )
                })?;
                m.append(&[0; FRAME_LEN])
                    .map_err(|_| anyhow!("an mbuf has no room for a {FRAME_LEN}-byte frame"))?;
                spare.push(m);
            }
        }
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || {
                    if let Some(core) = self.core {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                            eprintln!("bench-fwd: wire: could not pin to core {core}");
                        }
                    }
                    // For a mempool cache of its own when it frees at the end.
                    let _ = dpdk::register_thread();
                    self.run(spares, &shared)
                })
                .context("spawning the wire thread")?
        };
        Ok(WireHandle { shared, thread })
    }

    fn run(self, spares: [Vec<Mbuf>; 2], shared: &Shared) -> WireStats {
        let mut stats = WireStats::default();
        let mut lanes: Vec<LaneState> = spares
            .into_iter()
            .zip(&self.lanes)
            .map(|(spares, lane)| LaneState {
                spares,
                pending: (0..lane.inject.len()).map(|_| Burst::new()).collect(),
                cursor: 0,
                back: Burst::new(),
            })
            .collect();
        let publish = |stats: &WireStats| {
            shared.injected.store(stats.injected, Ordering::Relaxed);
            shared.collected.store(stats.collected, Ordering::Relaxed);
            shared.samples.store(stats.samples, Ordering::Relaxed);
            shared.dry.store(stats.dry, Ordering::Relaxed);
            shared.occupancy.store(stats.occupancy, Ordering::Relaxed);
        };

        while shared.phase.load(Ordering::Relaxed) == FEED {
            let mut progress = false;
            for (lane, state) in self.lanes.iter().zip(&mut lanes) {
                progress |= match &lane.rss {
                    None => state.feed_one_queue(lane, self.flows, &mut stats),
                    Some(queues) => state.feed_spread(lane, queues, self.flows, &mut stats),
                };
            }
            publish(&stats);
            if !progress {
                if self.shares_core {
                    std::thread::yield_now();
                } else {
                    // The RX rings are full: give the consumer's cache lines
                    // a rest instead of hammering the ring indices.
                    for _ in 0..32 {
                        std::hint::spin_loop();
                    }
                }
            }
        }

        drop(lanes);
        loop {
            // Read before the sweep: a sweep after STOP is the last.
            let last = shared.phase.load(Ordering::Relaxed) == STOP;
            let mut burst = Burst::new();
            for ring in self.lanes.iter().flat_map(|l| &l.collect) {
                while ring.dequeue_burst(&mut burst) > 0 {
                    stats.collected += burst.len() as u64;
                    burst.clear();
                }
            }
            publish(&stats);
            if last {
                return stats;
            }
            std::thread::yield_now();
        }
    }
}

/// A lane's mbufs and place in the flow sequence, between rounds.
struct LaneState {
    spares: Vec<Mbuf>,
    /// Frames written and waiting for room in their RX ring, per queue.
    pending: Vec<Burst>,
    /// The next flow to send.
    cursor: usize,
    /// Where frames taken off several TX rings land before they are reused.
    back: Burst,
}

/// Writes flow `cursor`'s frame into `m` and moves the cursor on.
#[inline(always)]
fn write_frame(cursor: &mut usize, m: &mut Mbuf, frames: &FrameTable, flows: usize) {
    // The hardware prefetcher stops at every 4 KiB page of the table; without
    // this a big table costs the wire a memory round trip every 64 frames.
    let ahead = (*cursor + FRAMES_AHEAD) % flows;
    dpdk::prefetch(frames.frame(ahead).as_ptr());
    m.data_mut().copy_from_slice(frames.frame(*cursor));
    *cursor += 1;
    if *cursor == flows {
        *cursor = 0;
    }
}

impl LaneState {
    /// Offers queue `q`'s written frames to its RX ring, noting first whether
    /// the device had emptied it.
    #[inline(always)]
    fn post(&mut self, lane: &Lane, q: usize, stats: &mut WireStats) -> bool {
        let burst = &mut self.pending[q];
        if burst.is_empty() {
            return false;
        }
        let ring = &lane.inject[q];
        let waiting = ring.count();
        stats.samples += 1;
        stats.occupancy += u64::from(waiting);
        if waiting == 0 {
            stats.dry += 1;
        }
        let sent = ring.enqueue_burst(burst);
        stats.injected += sent as u64;
        sent > 0
    }

    /// One round on a port with one queue pair: what comes back off the TX
    /// ring is rewritten in place and posted, with no detour through the
    /// spares.
    fn feed_one_queue(&mut self, lane: &Lane, flows: usize, stats: &mut WireStats) -> bool {
        let burst = &mut self.pending[0];
        let fresh = burst.len();
        while let Some(m) = (!burst.is_full()).then(|| self.spares.pop()).flatten() {
            let _ = burst.push(m);
        }
        let got = lane.collect[0].dequeue_burst(burst);
        stats.collected += got as u64;
        for m in &mut burst.as_mut_slice()[fresh..] {
            write_frame(&mut self.cursor, m, &lane.frames, flows);
        }
        self.post(lane, 0, stats) || got > 0
    }

    /// One round on a port with several queues: frames go out in flow order,
    /// each to its flow's queue. When that queue's ring is full the lane
    /// waits for it, as a generator's single stream would, rather than send
    /// later flows ahead.
    fn feed_spread(
        &mut self,
        lane: &Lane,
        queues: &[u8],
        flows: usize,
        stats: &mut WireStats,
    ) -> bool {
        let mut got = 0;
        for ring in &lane.collect {
            while ring.dequeue_burst(&mut self.back) > 0 {
                got += self.back.len();
                self.spares.extend(self.back.drain());
            }
        }
        stats.collected += got as u64;
        loop {
            let q = usize::from(queues[self.cursor]);
            if self.pending[q].is_full() {
                break;
            }
            let Some(mut m) = self.spares.pop() else {
                break;
            };
            write_frame(&mut self.cursor, &mut m, &lane.frames, flows);
            let _ = self.pending[q].push(m);
        }
        let mut sent = false;
        for q in 0..self.pending.len() {
            sent |= self.post(lane, q, stats);
        }
        sent || got > 0
    }
}

/// The 40-byte Toeplitz key Microsoft publishes for RSS, which most NICs
/// (and DPDK's drivers for them) use unless given another.
pub const RSS_DEFAULT_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// Entries in the RSS redirection table (RETA) of a typical 10 GbE NIC.
pub const RETA_SIZE: u32 = 128;

/// The Toeplitz hash of `input` under `key`, as a NIC computes it for RSS:
/// for every set bit of the input, the 32 key bits starting at that bit
/// position are XORed in. `key` must be at least 4 bytes longer than `input`.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    debug_assert!(key.len() >= input.len() + 4);
    let key_bit = |i: usize| u32::from(key.get(i / 8).map_or(0, |b| (b >> (7 - i % 8)) & 1));
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    let mut hash = 0;
    for (i, byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window = (window << 1) | key_bit(32 + i * 8 + bit);
        }
    }
    hash
}

/// The RSS hash a NIC with [`RSS_DEFAULT_KEY`] gives an Ethernet frame:
/// over source and destination address and, for TCP and UDP, source and
/// destination port, in that order. `None` for anything but IPv4.
pub fn rss_hash(frame: &[u8]) -> Option<u32> {
    const L3: usize = 14;
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ihl = usize::from(frame.get(L3)? & 0x0f) * 4;
    let mut input = [0u8; 12];
    input[..8].copy_from_slice(frame.get(L3 + 12..L3 + 20)?);
    let len = match frame.get(L3 + 9)? {
        6 | 17 => {
            input[8..].copy_from_slice(frame.get(L3 + ihl..L3 + ihl + 4)?);
            12
        }
        _ => 8,
    };
    Some(toeplitz(&RSS_DEFAULT_KEY, &input[..len]))
}

/// The RX queue, out of `queues`, a NIC's RSS puts each of the first `flows`
/// frames of `frames` on: the default key, and a redirection table of
/// [`RETA_SIZE`] entries filled round-robin over the queues, indexed by the
/// hash's low bits, as DPDK's drivers set it up. The key is not symmetric,
/// so a flow's two directions are hashed apart: which worker owns the flow
/// is the data plane's business (software steering).
pub fn rss_queues(frames: &FrameTable, flows: usize, queues: usize) -> Vec<u8> {
    assert!((1..=usize::from(u8::MAX)).contains(&queues));
    (0..flows)
        .map(|i| {
            let hash = rss_hash(frames.frame(i)).unwrap_or(0);
            ((hash % RETA_SIZE) as usize % queues) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::Way;

    fn input(src: [u8; 4], dst: [u8; 4], ports: Option<(u16, u16)>) -> Vec<u8> {
        let mut v = [src, dst].concat();
        if let Some((s, d)) = ports {
            v.extend(s.to_be_bytes());
            v.extend(d.to_be_bytes());
        }
        v
    }

    /// The examples of Microsoft's "Verifying the RSS Hash Calculation".
    #[test]
    fn toeplitz_matches_the_published_examples() {
        for (src, sport, dst, dport, ip_only, tcp) in [
            (
                [66, 9, 149, 187],
                2794,
                [161, 142, 100, 80],
                1766,
                0x323e_8fc2,
                0x51cc_c178,
            ),
            (
                [199, 92, 111, 2],
                14230,
                [65, 69, 140, 83],
                4739,
                0xd718_262a,
                0xc626_b0ea,
            ),
        ] {
            let key = &RSS_DEFAULT_KEY;
            assert_eq!(toeplitz(key, &input(src, dst, None)), ip_only);
            assert_eq!(toeplitz(key, &input(src, dst, Some((sport, dport)))), tcp);
        }
    }

    #[test]
    fn rss_reads_the_frame_as_a_nic_does_and_spreads_flows() {
        let frames = FrameTable::build(4096, Way::ToServer);
        let f = frames.frame(7);
        let expected = toeplitz(&RSS_DEFAULT_KEY, &[&f[26..34], &f[34..38]].concat());
        assert_eq!(rss_hash(f), Some(expected));

        let queues = rss_queues(&frames, 4096, 2);
        let on_first = queues.iter().filter(|&&q| q == 0).count();
        assert!((1792..2304).contains(&on_first), "{on_first} of 4096");
        let back = FrameTable::build(4096, Way::ToClient);
        let same = rss_queues(&back, 4096, 2)
            .iter()
            .zip(&queues)
            .filter(|(a, b)| a == b)
            .count();
        assert!(same < 4096, "the default key is not symmetric");
    }
}
