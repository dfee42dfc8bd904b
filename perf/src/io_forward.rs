//! Plain io-forward, DPDK testpmd's `io` mode: every frame received on one
//! port is sent on the other, untouched and unread. What a core can forward
//! this way on given devices is the ceiling any packet processing on them is
//! measured against.
//!
//! With [`IoForward::reads_frames`] it is read-forward: the same, but each
//! frame's EtherType is loaded first, with the prefetching tollgate's worker
//! does. That is the least any worker that looks at its frames must pay, so
//! on devices where io-forward never touches a frame (ring PMDs) it is the
//! floor under the ratio to the ceiling.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dpdk::{prefetch, Burst, Poller, RxQueue, TxQueue};
use tollgate::worker::PREFETCH_AHEAD;

pub struct IoForward {
    /// Indexed by port: frames from `rx[0]` leave by `tx[1]` and the reverse.
    pub rx: [RxQueue; 2],
    pub tx: [TxQueue; 2],
    /// As tollgate's worker: offer refused frames again this many times, then
    /// free them.
    pub tx_retries: u32,
    /// As tollgate's worker with `workers.idle_sleep_us`: sleep this long
    /// after [`IDLE_POLLS_BEFORE_SLEEP`] empty polls in a row, to leave a
    /// shared core to whoever else needs it. `None` polls without pause.
    pub idle_sleep: Option<Duration>,
    /// Read each frame's EtherType before sending it on (read-forward).
    pub reads_frames: bool,
    pub running: Arc<AtomicBool>,
}

/// Empty polls in a row before an idle thread may sleep, as in tollgate's worker.
pub const IDLE_POLLS_BEFORE_SLEEP: u32 = 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoForwardReport {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub dropped: u64,
    /// RX bursts attempted, and how many of them found nothing.
    pub polls: u64,
    pub empty_polls: u64,
}

impl IoForward {
    /// Forwards until `running` goes false.
    pub fn run(mut self) -> IoForwardReport {
        let mut report = IoForwardReport::default();
        let mut burst = Burst::new();
        let mut idle_polls = 0u32;
        // A memif peer that leaves gets its rings unmapped only between this loop's bursts.
        let poller = Poller::register();
        while self.running.load(Ordering::Relaxed) {
            poller.quiescent();
            if let Some(pause) = self.idle_sleep {
                if idle_polls >= IDLE_POLLS_BEFORE_SLEEP {
                    std::thread::sleep(pause);
                }
            }
            idle_polls = idle_polls.saturating_add(1);
            for side in 0..2 {
                report.polls += 1;
                let n = self.rx[side].rx_burst(&mut burst);
                if n == 0 {
                    report.empty_polls += 1;
                    continue;
                }
                idle_polls = 0;
                report.rx_packets += n as u64;
                if self.reads_frames {
                    std::hint::black_box(read_ethertypes(&burst));
                }
                let txq = &mut self.tx[1 - side];
                let mut attempts = 0;
                loop {
                    report.tx_packets += txq.tx_burst(&mut burst) as u64;
                    if burst.is_empty() {
                        break;
                    }
                    if attempts == self.tx_retries {
                        report.dropped += burst.len() as u64;
                        burst.clear();
                        break;
                    }
                    attempts += 1;
                }
            }
        }
        report
    }
}

/// Loads each frame's EtherType as the worker's first look at a frame does,
/// prefetching [`PREFETCH_AHEAD`] frames ahead as it does.
#[inline(always)]
fn read_ethertypes(burst: &Burst) -> u16 {
    let frames = burst.as_slice();
    for m in frames.iter().take(PREFETCH_AHEAD) {
        prefetch(m.data_ptr());
    }
    let mut folded = 0u16;
    for (i, m) in frames.iter().enumerate() {
        if let Some(ahead) = frames.get(i + PREFETCH_AHEAD) {
            prefetch(ahead.data_ptr());
        }
        if let Some(ethertype) = m.data().get(12..14) {
            folded ^= u16::from_be_bytes([ethertype[0], ethertype[1]]);
        }
    }
    folded
}
