//! The poll-mode worker: a thin DPDK driver around [`Pipeline`]. Each worker
//! owns one RX and one TX queue on each port and its own flow table; it
//! receives, decides, and transmits in bursts, and between bursts it ages
//! flows, publishes counters and reports new flows to the split audit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use dpdk::{
    prefetch, tsc, tsc_hz, Burst, RingConsumer, RingProducer, RxQueue, TxQueue, BURST_SIZE,
};
use tollgate_control::protocol::{FlowFilter, FlowView, RuleHits};

use crate::counters::{DropReason, WorkerCounters};
use crate::flow::FlowKey;
use crate::flow_view;
use crate::pipeline::{Pipeline, PortSide, Prepared, Steer, Verdict};
use crate::policy::PolicyBoard;

/// Requests from the control plane, answered between bursts. The queue is
/// bounded and the control plane waits with a timeout, so neither side can
/// stall the other.
pub enum WorkerCommand {
    /// Flows matching the filter: how many, and the first `limit` of them.
    ListFlows {
        filter: FlowFilter,
        limit: usize,
        reply: Sender<(u64, Vec<FlowView>)>,
    },
    /// Removes the flows matching the filter; replies with how many.
    ClearFlows {
        filter: FlowFilter,
        reply: Sender<u64>,
    },
    /// Applies the current policy to live flows; replies with how many changed.
    Reclassify { reply: Sender<u64> },
    /// Proves the worker is polling.
    Ping { reply: Sender<()> },
}

/// How far ahead of the frame being parsed its successors' headers are
/// prefetched: far enough to hide a memory access, near enough to stay in L1.
/// Measured with bench-fwd: 8 did no better, and prefetching the whole burst
/// at once cost a fifth of the rate at 1k flows and more.
const PREFETCH_AHEAD: usize = 4;

/// Between bursts, how often counters are published and new flows reported.
const PUBLISH_EVERY_MS: u64 = 100;

/// Consecutive empty polls before an idle worker may sleep (when configured).
const IDLE_POLLS_BEFORE_SLEEP: u32 = 1024;

/// What a worker shares with the main thread, refreshed between bursts.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    pub counters: WorkerCounters,
    pub flows_active: usize,
    pub flow_capacity: usize,
    /// Per rule id.
    pub hits: Vec<RuleHits>,
}

/// Everything one worker needs; moved onto its thread.
pub struct Worker {
    pub id: usize,
    pub core: Option<usize>,
    pub pipeline: Pipeline,
    /// Indexed by [`PortSide`].
    pub rx: [RxQueue; 2],
    pub tx: [TxQueue; 2],
    /// DPDK port ids, indexed by [`PortSide`]; frames handed over by another
    /// worker carry their RX port in the mbuf.
    pub port_ids: [u16; 2],
    pub steer: Option<Steer>,
    /// Use the NIC's RSS hash as the flow hash (both ports hash symmetrically).
    pub use_nic_hash: bool,
    /// Rings to the other workers, indexed by worker (None for this one).
    pub handoff_out: Vec<Option<RingProducer>>,
    pub handoff_in: Vec<RingConsumer>,
    pub tx_retries: u32,
    pub idle_sleep: Option<Duration>,
    pub running: Arc<AtomicBool>,
    pub report: Arc<Mutex<WorkerReport>>,
    pub audit: Option<Sender<(u16, Vec<FlowKey>)>>,
    pub policy: Arc<PolicyBoard>,
    pub commands: Receiver<WorkerCommand>,
}

/// Frames waiting to leave, per port and per other worker.
struct Outbox {
    tx: [Burst; 2],
    handoff: Vec<Burst>,
}

impl Worker {
    /// Polls until `running` goes false, then flushes and returns the final
    /// counters. Nothing in here can panic on packet input.
    pub fn run(mut self) -> WorkerReport {
        let hz = tsc_hz().max(1);
        let start = tsc();
        let mut out = Outbox {
            tx: [Burst::new(), Burst::new()],
            handoff: (0..self.handoff_out.len()).map(|_| Burst::new()).collect(),
        };
        let mut rx = Burst::new();
        let mut last_ms = 0u64;
        let mut last_publish = 0u64;
        let mut idle_polls = 0u32;

        while self.running.load(Ordering::Relaxed) {
            let now_ms = (tsc() - start) as u128 * 1000 / hz as u128;
            let now_ms = now_ms as u64;
            let mut work = 0usize;

            for side in PortSide::BOTH {
                let n = self.rx[side.index()].rx_burst(&mut rx);
                if n > 0 {
                    work += n;
                    self.pipeline.counters.rx_packets += n as u64;
                    self.process(&mut rx, Some(side), self.steer, now_ms, &mut out);
                }
            }
            for i in 0..self.handoff_in.len() {
                let n = self.handoff_in[i].dequeue_burst(&mut rx);
                if n > 0 {
                    work += n;
                    self.pipeline.counters.handoff_in += n as u64;
                    self.process(&mut rx, None, None, now_ms, &mut out);
                }
            }
            self.flush(&mut out);

            if let Some(policy) = self
                .policy
                .update(self.id, self.pipeline.policy().generation)
            {
                self.pipeline.set_policy(policy);
            }
            while let Ok(command) = self.commands.try_recv() {
                self.execute(command, now_ms);
            }

            if now_ms != last_ms {
                last_ms = now_ms;
                self.pipeline.expire(now_ms);
                if now_ms - last_publish >= PUBLISH_EVERY_MS {
                    last_publish = now_ms;
                    self.publish();
                }
            }

            if work == 0 {
                idle_polls = idle_polls.saturating_add(1);
                if let Some(pause) = self.idle_sleep {
                    if idle_polls >= IDLE_POLLS_BEFORE_SLEEP {
                        std::thread::sleep(pause);
                    }
                }
            } else {
                idle_polls = 0;
            }
        }
        self.flush(&mut out);
        self.publish();
        self.snapshot()
    }

    /// Decides every frame of a burst. `side` is the RX port for frames from
    /// a port, or None for frames handed over (their mbuf names the port).
    ///
    /// In three passes over the burst, so that the cache misses of different
    /// frames overlap rather than follow one another: parse and hash every
    /// frame, prefetching its flow's index line; then prefetch every flow
    /// entry those lines point at; then look up, decide and dispatch.
    #[inline]
    fn process(
        &mut self,
        rx: &mut Burst,
        side: Option<PortSide>,
        steer: Option<Steer>,
        now_ms: u64,
        out: &mut Outbox,
    ) {
        let n = rx.len();
        let mut prepared = [Prepared::NONE; BURST_SIZE];
        let mut ingress = [PortSide::Inside; BURST_SIZE];
        {
            let mbufs = rx.as_slice();
            let mut data = [std::ptr::null::<u8>(); BURST_SIZE];
            for (slot, m) in data.iter_mut().zip(mbufs) {
                *slot = m.data_ptr();
            }
            for &p in data.iter().take(PREFETCH_AHEAD.min(n)) {
                prefetch(p);
            }
            let mut rx_bytes = 0u64;
            for (i, m) in mbufs.iter().enumerate() {
                if i + PREFETCH_AHEAD < n {
                    prefetch(data[i + PREFETCH_AHEAD]);
                }
                ingress[i] = match side {
                    Some(s) => s,
                    None if m.port() == self.port_ids[PortSide::Outside.index()] => {
                        PortSide::Outside
                    }
                    None => PortSide::Inside,
                };
                let nic_hash = if self.use_nic_hash {
                    m.rss_hash()
                } else {
                    None
                };
                rx_bytes += u64::from(m.pkt_len());
                prepared[i] = self.pipeline.prepare(m.data(), ingress[i], nic_hash, steer);
            }
            if side.is_some() {
                self.pipeline.counters.rx_bytes += rx_bytes;
            }
        }
        for p in &mut prepared[..n] {
            self.pipeline.prefetch_entry(p);
        }
        for ((mut m, p), ingress) in rx.drain().zip(&prepared).zip(ingress) {
            match self.pipeline.finish(p, now_ms) {
                Verdict::Forward(egress) => {
                    let burst = &mut out.tx[egress.index()];
                    if burst.is_full() {
                        Self::transmit(
                            &mut self.tx[egress.index()],
                            burst,
                            self.tx_retries,
                            &mut self.pipeline.counters,
                        );
                    }
                    // Cannot fail: the burst was just emptied if it was full.
                    let _ = burst.push(m);
                }
                Verdict::Drop(reason) => {
                    self.pipeline.counters.drop(reason, 1);
                    drop(m);
                }
                Verdict::HandOff(worker) => match out.handoff.get_mut(worker) {
                    Some(burst) => {
                        // The owner learns the ingress port from the mbuf.
                        m.set_port(self.port_ids[ingress.index()]);
                        if burst.is_full() {
                            Self::hand_over(
                                self.handoff_out[worker].as_mut(),
                                burst,
                                &mut self.pipeline.counters,
                            );
                        }
                        let _ = burst.push(m);
                    }
                    None => {
                        self.pipeline.counters.drop(DropReason::HandoffFull, 1);
                        drop(m);
                    }
                },
            }
        }
    }

    fn flush(&mut self, out: &mut Outbox) {
        for side in PortSide::BOTH {
            let burst = &mut out.tx[side.index()];
            if !burst.is_empty() {
                Self::transmit(
                    &mut self.tx[side.index()],
                    burst,
                    self.tx_retries,
                    &mut self.pipeline.counters,
                );
            }
        }
        for (worker, burst) in out.handoff.iter_mut().enumerate() {
            if !burst.is_empty() {
                Self::hand_over(
                    self.handoff_out[worker].as_mut(),
                    burst,
                    &mut self.pipeline.counters,
                );
            }
        }
    }

    /// Offers the burst to the driver up to `1 + retries` times; what it
    /// still refuses is freed and counted, never leaked.
    #[inline]
    fn transmit(txq: &mut TxQueue, burst: &mut Burst, retries: u32, counters: &mut WorkerCounters) {
        let mut attempts = 0;
        loop {
            counters.tx_packets += txq.tx_burst(burst) as u64;
            if burst.is_empty() {
                return;
            }
            if attempts == retries {
                counters.drop(DropReason::TxFull, burst.len() as u64);
                burst.clear();
                return;
            }
            attempts += 1;
        }
    }

    #[inline]
    fn hand_over(
        ring: Option<&mut RingProducer>,
        burst: &mut Burst,
        counters: &mut WorkerCounters,
    ) {
        if let Some(ring) = ring {
            ring.enqueue_burst(burst);
        }
        if !burst.is_empty() {
            counters.drop(DropReason::HandoffFull, burst.len() as u64);
            burst.clear();
        }
    }

    fn execute(&mut self, command: WorkerCommand, now_ms: u64) {
        // A control plane that gave up waiting has dropped its receiver; the
        // failed send is of no consequence.
        match command {
            WorkerCommand::ListFlows {
                filter,
                limit,
                reply,
            } => {
                let mut total = 0u64;
                let mut flows = Vec::new();
                for e in self.pipeline.flows().iter() {
                    if flow_view::matches(&filter, e) {
                        total += 1;
                        if flows.len() < limit {
                            flows.push(flow_view::view(self.id as u16, e, now_ms));
                        }
                    }
                }
                let _ = reply.send((total, flows));
            }
            WorkerCommand::ClearFlows { filter, reply } => {
                let removed = self
                    .pipeline
                    .flows_mut()
                    .remove_where(|e| flow_view::matches(&filter, e));
                let _ = reply.send(removed as u64);
            }
            WorkerCommand::Reclassify { reply } => {
                let _ = reply.send(self.pipeline.reclassify());
            }
            WorkerCommand::Ping { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn snapshot(&self) -> WorkerReport {
        WorkerReport {
            counters: self.pipeline.counters.clone(),
            flows_active: self.pipeline.flows().len(),
            flow_capacity: self.pipeline.flows().capacity(),
            hits: self.pipeline.hits().to_vec(),
        }
    }

    fn publish(&mut self) {
        if let Some(audit) = &self.audit {
            if self.pipeline.has_new_flows() {
                let keys = self.pipeline.take_new_flows();
                // A full channel means the main thread is behind; the audit
                // counts what it could not check rather than block a worker.
                let _ = audit.try_send((self.id as u16, keys));
            }
        }
        // Never wait for the main thread: if it holds the lock, publish next
        // time. Copy into the published buffers to reuse their allocations.
        if let Ok(mut report) = self.report.try_lock() {
            report.counters.clone_from(&self.pipeline.counters);
            report.flows_active = self.pipeline.flows().len();
            report.flow_capacity = self.pipeline.flows().capacity();
            report.hits.clear();
            report.hits.extend_from_slice(self.pipeline.hits());
        }
    }
}
