//! Plain io-forward, DPDK testpmd's `io` mode: every frame received on one
//! port is sent on the other, untouched and unread. What a core can forward
//! this way on given devices is the ceiling any packet processing on them is
//! measured against.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dpdk::{Burst, RxQueue, TxQueue};

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
        while self.running.load(Ordering::Relaxed) {
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
