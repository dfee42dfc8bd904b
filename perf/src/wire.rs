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
    /// The RX ring of the port these frames arrive on.
    pub inject: Arc<MbufRing>,
    /// The TX ring of the port they leave by.
    pub collect: Arc<MbufRing>,
    /// The frames to send, cycled through flow by flow.
    pub frames: Arc<FrameTable>,
}

pub struct Wire {
    pub lanes: [Lane; 2],
    /// Frames of flows `0..flows` are sent, round-robin.
    pub flows: usize,
    /// Mbufs circulating in each lane.
    pub mbufs_per_lane: usize,
    pub pool: Arc<Mempool>,
    pub core: Option<usize>,
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

    fn run(self, mut spares: [Vec<Mbuf>; 2], shared: &Shared) -> WireStats {
        let mut stats = WireStats::default();
        let mut pending = [Burst::new(), Burst::new()];
        let mut cursor = [0usize; 2];
        let publish = |stats: &WireStats| {
            shared.injected.store(stats.injected, Ordering::Relaxed);
            shared.collected.store(stats.collected, Ordering::Relaxed);
            shared.samples.store(stats.samples, Ordering::Relaxed);
            shared.dry.store(stats.dry, Ordering::Relaxed);
            shared.occupancy.store(stats.occupancy, Ordering::Relaxed);
        };

        while shared.phase.load(Ordering::Relaxed) == FEED {
            let mut progress = false;
            for (l, lane) in self.lanes.iter().enumerate() {
                let burst = &mut pending[l];
                let fresh = burst.len();
                while let Some(m) = (!burst.is_full()).then(|| spares[l].pop()).flatten() {
                    let _ = burst.push(m);
                }
                let got = lane.collect.dequeue_burst(burst);
                stats.collected += got as u64;
                for m in &mut burst.as_mut_slice()[fresh..] {
                    // The hardware prefetcher stops at every 4 KiB page of
                    // the table; without this a big table costs the wire a
                    // memory round trip every 64 frames.
                    let ahead = (cursor[l] + FRAMES_AHEAD) % self.flows;
                    dpdk::prefetch(lane.frames.frame(ahead).as_ptr());
                    m.data_mut().copy_from_slice(lane.frames.frame(cursor[l]));
                    cursor[l] += 1;
                    if cursor[l] == self.flows {
                        cursor[l] = 0;
                    }
                }
                if burst.is_empty() {
                    continue;
                }
                let waiting = lane.inject.count();
                stats.samples += 1;
                stats.occupancy += u64::from(waiting);
                if waiting == 0 {
                    stats.dry += 1;
                }
                let sent = lane.inject.enqueue_burst(burst);
                stats.injected += sent as u64;
                progress |= sent > 0 || got > 0;
            }
            publish(&stats);
            if !progress {
                // The RX rings are full: give the consumer's cache lines a
                // rest instead of hammering the ring indices.
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
            }
        }

        drop(pending);
        drop(spares);
        loop {
            // Read before the sweep: a sweep after STOP is the last.
            let last = shared.phase.load(Ordering::Relaxed) == STOP;
            let mut burst = Burst::new();
            for lane in &self.lanes {
                while lane.collect.dequeue_burst(&mut burst) > 0 {
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
