//! The poll-mode worker: a thin DPDK driver around its [`Shard`]. Each worker owns one RX and
//! one TX queue on each port and its shard of the flow table; it receives, lets the shard
//! decide, and transmits in bursts, and between bursts it runs the shard's timers and expiry,
//! answers the control plane, publishes counters and reports new flows to the split audit.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use dpdk::{
    prefetch, tsc, tsc_hz, Burst, Mbuf, MbufSlice, Mempool, Poller, RingConsumer, RingProducer,
    RxQueue, TxQueue, BURST_SIZE,
};
use tollgate_control::protocol::{FlowFilter, FlowView, FlowsClearReply, RuleHits};
use tollgate_control::{LimitCounters, ProxyCounters, ReassemblyCounters};

use tollgate_core::counters::{DropReason, WorkerCounters};
use tollgate_core::flow::FlowKey;
use tollgate_core::ip_reassembly::{tcp_fragment, FragmentTable, Outcome};
use tollgate_core::notice::Notices;
use tollgate_core::pipeline::{PortSide, Prepared, Steer, Verdict};
use tollgate_core::policy::PolicyBoard;
use tollgate_core::proxy::{ClearAction, FrameSink};
use tollgate_core::shard::{Dispatch, RxFrame, Shard};
use tollgate_core::tcp::payload::Payload;

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
    /// Clears the flows matching the filter: proxied connections reset or handed over (by
    /// `action`), other entries forgotten; replies with what became of them.
    ClearFlows {
        filter: FlowFilter,
        action: ClearAction,
        reply: Sender<FlowsClearReply>,
    },
    /// Applies the current policy to live flows; replies with how many changed.
    Reclassify { reply: Sender<u64> },
    /// Proves the worker is polling.
    Ping { reply: Sender<()> },
    /// Publishes the counters now, so that a reading taken after the reply includes every
    /// frame the worker had taken before it; replies false if the report was locked.
    Publish { reply: Sender<bool> },
}

/// How far ahead of the frame being parsed its successors' headers are
/// prefetched: far enough to hide a memory access, near enough to stay in L1.
/// Measured with bench-fwd: 8 did no better, and prefetching the whole burst
/// at once cost a fifth of the rate at 1k flows and more. Public so that
/// bench-fwd's floor reads frames the way the worker does.
pub const PREFETCH_AHEAD: usize = 4;

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
    pub proxy: ProxyCounters,
    /// Per proxy signature, in configuration order: connections reset.
    pub signature_hits: Vec<u64>,
    /// Per rule id, for rules whose connection limits refused new flows here.
    pub limit_hits: Vec<(u32, LimitCounters)>,
    pub reassembly: ReassemblyCounters,
    /// Exception actions on single flows, not yet logged by the main thread.
    pub notices: Notices,
}

/// The workers that have stopped handing frames to one another. At shutdown each worker hands
/// over its last frames, says so here, and then takes what the others hand it until all have:
/// a frame left in a ring would be freed with the ring, neither forwarded nor counted.
#[derive(Debug)]
pub struct HandoffsDone {
    workers: usize,
    done: AtomicUsize,
}

impl HandoffsDone {
    pub fn new(workers: usize) -> HandoffsDone {
        HandoffsDone {
            workers,
            done: AtomicUsize::new(0),
        }
    }

    fn all(&self) -> bool {
        self.done.load(Ordering::Acquire) >= self.workers
    }
}

/// Says a worker is done handing frames over when dropped, so that one that panics does not
/// keep the others waiting.
struct HandoffsDoneOnDrop(Option<Arc<HandoffsDone>>);

impl HandoffsDoneOnDrop {
    fn done(&mut self) {
        if let Some(h) = self.0.take() {
            h.done.fetch_add(1, Ordering::Release);
        }
    }
}

impl Drop for HandoffsDoneOnDrop {
    fn drop(&mut self) {
        self.done();
    }
}

/// Everything one worker needs; moved onto its thread.
pub struct Worker {
    pub id: usize,
    pub core: Option<usize>,
    /// This worker's flows, proxied connections and what they do to frames.
    pub shard: Shard<MbufPayload>,
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
    /// Shared by all the workers, for the last frames handed over at shutdown.
    pub handoffs_done: Arc<HandoffsDone>,
    pub tx_retries: u32,
    pub idle_sleep: Option<Duration>,
    pub running: Arc<AtomicBool>,
    /// Tollgate is stopping: new flows are not proxied, the proxied ones finish.
    pub draining: Arc<AtomicBool>,
    pub report: Arc<Mutex<WorkerReport>>,
    pub audit: Option<Sender<(u16, Vec<FlowKey>)>>,
    pub policy: Arc<PolicyBoard>,
    pub commands: Receiver<WorkerCommand>,
    /// Where the proxy's frames get their buffers (the ports' pool).
    pub pool: Arc<Mempool>,
    /// Both ports take multi-segment frames, so relayed payload is chained, not copied.
    pub tx_multi_seg: bool,
    /// TCP datagrams whose fragments are arriving (`[reassembly]`).
    pub fragments: FragmentTable<HeldFragment>,
    /// For reassembled datagrams longer than a buffer of `pool` holds.
    pub large_pool: Option<Arc<Mempool>>,
}

impl AsRef<[u8]> for HeldFragment {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.0.data()
    }
}

/// A fragment's frame, held until its datagram is whole.
pub struct HeldFragment(Mbuf);

/// A received frame as the shard takes it: the mbuf, whose payload the proxy keeps as a slice.
struct Received(Mbuf);

impl RxFrame for Received {
    type Payload = MbufPayload;

    #[inline]
    fn data(&self) -> &[u8] {
        self.0.data()
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        self.0.data_mut()
    }

    #[inline]
    fn is_contiguous(&self) -> bool {
        self.0.segments() == 1
    }

    fn into_payload(self, offset: usize, len: usize) -> Option<MbufPayload> {
        self.0.into_slice(offset, len).ok().map(MbufPayload)
    }
}

/// The proxy's payload in the data plane: a received segment's bytes, kept in the mbuf they
/// arrived in and chained, not copied, behind the headers of each frame that relays them.
#[derive(Clone)]
pub struct MbufPayload(pub MbufSlice);

impl Payload for MbufPayload {
    #[inline]
    fn len(&self) -> usize {
        self.0.len()
    }

    #[inline]
    fn slice(&self, start: usize, end: usize) -> Self {
        MbufPayload(self.0.slice(start, end))
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// This worker's TX side for a while (a burst, a round of timers, a command): the frames the
/// shard forwards and the ones its proxy makes, onto the TX bursts, sent when a burst fills;
/// what was sent and what the driver refused are counted when it is settled.
struct TxSink<'a> {
    pool: &'a Mempool,
    bursts: &'a mut [Burst; 2],
    queues: &'a mut [TxQueue; 2],
    retries: u32,
    chain: bool,
    sent: u64,
    refused: u64,
}

impl FrameSink<MbufPayload> for TxSink<'_> {
    /// A frame of the proxy's: a fresh mbuf for the headers, the payload chained after it
    /// from the mbuf it arrived in (or copied, for devices that cannot send chains).
    fn send(&mut self, side: PortSide, headers: &[u8], payload: Option<&MbufPayload>) -> bool {
        let Some(mut m) = Mbuf::alloc(self.pool) else {
            return false;
        };
        if m.append(headers).is_err() {
            return false;
        }
        if let Some(payload) = payload {
            let attached = if self.chain {
                m.chain_slice(&payload.0, self.pool).is_ok()
            } else {
                m.append_slice_copy(&payload.0).is_ok()
            };
            if !attached {
                return false;
            }
        }
        self.forward(m, side);
        true
    }
}

impl<'a> TxSink<'a> {
    fn new(
        pool: &'a Mempool,
        bursts: &'a mut [Burst; 2],
        queues: &'a mut [TxQueue; 2],
        retries: u32,
        chain: bool,
    ) -> TxSink<'a> {
        TxSink {
            pool,
            bursts,
            queues,
            retries,
            chain,
            sent: 0,
            refused: 0,
        }
    }

    /// Once per forwarded frame: inlined, like the rest of the burst's last stage.
    #[inline(always)]
    fn forward(&mut self, m: Mbuf, egress: PortSide) {
        if self.bursts[egress.index()].is_full() {
            self.send(egress);
        }
        // Cannot fail: the burst was just emptied if it was full.
        let _ = self.bursts[egress.index()].push(m);
    }

    /// Sends what the bursts hold.
    fn flush(&mut self) {
        for side in PortSide::BOTH {
            if !self.bursts[side.index()].is_empty() {
                self.send(side);
            }
        }
    }

    /// Offers `side`'s burst to its queue, counting what went and what the driver refused.
    fn send(&mut self, side: PortSide) {
        let (sent, refused) = Worker::transmit(
            &mut self.queues[side.index()],
            &mut self.bursts[side.index()],
            self.retries,
        );
        self.sent += sent;
        self.refused += refused;
    }

    /// Adds what was sent and what the driver refused to the worker's counters.
    #[inline]
    fn settle(self, counters: &mut WorkerCounters) {
        counters.tx_packets += self.sent;
        if self.refused > 0 {
            counters.drop(DropReason::TxFull, self.refused);
        }
    }
}

/// Frames waiting to leave, per port and per other worker.
struct Outbox {
    tx: [Burst; 2],
    handoff: Vec<Burst>,
    /// IP fragments a burst brought, for reassembly once it is through.
    fragments: Burst,
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
            fragments: Burst::new(),
        };
        let mut rx = Burst::new();
        let mut last_ms = 0u64;
        let mut last_publish = 0u64;
        let mut idle_polls = 0u32;
        let mut handing_over = HandoffsDoneOnDrop(Some(self.handoffs_done.clone()));
        let clock = move || ((tsc() - start) as u128 * 1000 / hz as u128) as u64;
        // The interrupt thread unmaps a memif port's rings once every poller has been
        // between bursts since its peer left (`dpdk::Poller`).
        let poller = Poller::register();

        while self.running.load(Ordering::Relaxed) {
            poller.quiescent();
            let now_ms = clock();
            let mut work = 0usize;

            for side in PortSide::BOTH {
                let n = self.rx[side.index()].rx_burst(&mut rx);
                if n > 0 {
                    work += n;
                    self.counters().rx_packets += n as u64;
                    self.process(&mut rx, Some(side), self.steer, now_ms, &mut out);
                }
            }
            work += self.take_handoffs(&mut rx, now_ms, &mut out);
            if now_ms != last_ms {
                self.proxy_timers(now_ms, &mut out);
                if !self.fragments.is_empty() {
                    let counters = &mut self.shard.pipeline_mut().counters;
                    self.fragments
                        .expire(now_ms, |_| counters.drop(DropReason::Fragment, 1));
                }
            }
            self.flush(&mut out);

            if let Some(policy) = self
                .policy
                .update(self.id, self.shard.pipeline().policy().generation)
            {
                self.shard.set_policy(policy);
            }
            while let Ok(command) = self.commands.try_recv() {
                self.execute(command, now_ms, &mut out);
            }

            // Once a millisecond, and between every two bursts while a budget's worth was not
            // enough: expiry must keep pace with a flood's new flows (one budget a
            // millisecond is 64,000 flows a second, which an ACK flood outruns).
            if now_ms != last_ms || self.shard.expiry_behind() {
                self.with_sink(&mut out, |shard, sink| shard.expire(now_ms, sink));
            }
            if now_ms != last_ms {
                last_ms = now_ms;
                if now_ms - last_publish >= PUBLISH_EVERY_MS {
                    last_publish = now_ms;
                    self.publish();
                }
            }

            if work == 0 {
                idle_polls = idle_polls.saturating_add(1);
                if let Some(pause) = self.idle_sleep {
                    if idle_polls >= IDLE_POLLS_BEFORE_SLEEP {
                        poller.quiescent();
                        std::thread::sleep(pause);
                    }
                }
            } else {
                idle_polls = 0;
            }
        }
        self.flush(&mut out);
        handing_over.done();
        // Frames handed over are never handed on (they are processed without steering), so
        // once every worker is done handing over, one last pass empties the rings for good.
        loop {
            poller.quiescent();
            let all_done = self.handoffs_done.all();
            while self.take_handoffs(&mut rx, clock(), &mut out) > 0 {}
            self.flush(&mut out);
            if all_done || self.handoff_in.is_empty() {
                break;
            }
            std::thread::yield_now();
        }
        self.publish();
        self.snapshot()
    }

    fn counters(&mut self) -> &mut WorkerCounters {
        &mut self.shard.pipeline_mut().counters
    }

    /// Runs `f` on the shard with a sink onto this worker's TX bursts, then counts what was
    /// sent and what the driver refused.
    fn with_sink<R>(
        &mut self,
        out: &mut Outbox,
        f: impl FnOnce(&mut Shard<MbufPayload>, &mut TxSink<'_>) -> R,
    ) -> R {
        let mut sink = TxSink::new(
            &self.pool,
            &mut out.tx,
            &mut self.tx,
            self.tx_retries,
            self.tx_multi_seg,
        );
        let result = f(&mut self.shard, &mut sink);
        sink.settle(&mut self.shard.pipeline_mut().counters);
        result
    }

    /// Processes a burst from each ring of frames other workers handed over; returns how many.
    fn take_handoffs(&mut self, rx: &mut Burst, now_ms: u64, out: &mut Outbox) -> usize {
        let mut taken = 0;
        for i in 0..self.handoff_in.len() {
            let n = self.handoff_in[i].dequeue_burst(rx);
            if n > 0 {
                taken += n;
                self.counters().handoff_in += n as u64;
                self.process(rx, None, None, now_ms, out);
            }
        }
        taken
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
        // Read per burst, not with the timers, which a descheduled worker runs only after
        // the frames it finds waiting: a SYN that arrives after the drain began is not proxied.
        self.shard
            .set_draining(self.draining.load(Ordering::Relaxed));
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
                ingress[i] = side.unwrap_or_else(|| self.ingress_of(m));
                let nic_hash = if self.use_nic_hash {
                    m.rss_hash()
                } else {
                    None
                };
                rx_bytes += u64::from(m.pkt_len());
                prepared[i] = self.shard.prepare(m.data(), ingress[i], nic_hash, steer);
            }
            if side.is_some() {
                self.counters().rx_bytes += rx_bytes;
            }
        }
        for p in &mut prepared[..n] {
            self.shard.prefetch_entry(p);
        }
        let mut sink = TxSink::new(
            &self.pool,
            &mut out.tx,
            &mut self.tx,
            self.tx_retries,
            self.tx_multi_seg,
        );
        for ((m, p), ingress) in rx.drain().zip(&prepared).zip(ingress) {
            match self.shard.dispatch(Received(m), p, now_ms, &mut sink) {
                Dispatch::Forward(Received(m), egress) => sink.forward(m, egress),
                Dispatch::Done => {}
                Dispatch::HandOff(Received(m), worker) => Self::hand_off(
                    &mut out.handoff,
                    &mut self.handoff_out,
                    &mut self.shard.pipeline_mut().counters,
                    m,
                    worker,
                    self.port_ids[ingress.index()],
                ),
                Dispatch::Reassemble(Received(mut m)) => {
                    // Each fragment keeps its port for the whole datagram's decision and for
                    // a hand-off; taken once the burst is through.
                    m.set_port(self.port_ids[ingress.index()]);
                    let _ = out.fragments.push(m);
                }
            }
        }
        sink.settle(&mut self.shard.pipeline_mut().counters);
        if !out.fragments.is_empty() {
            let mut fragments = std::mem::take(&mut out.fragments);
            for m in fragments.drain() {
                self.reassemble(m, now_ms, out);
            }
            out.fragments = fragments;
        }
    }

    /// Puts a frame on the burst to `worker`, with the DPDK id of the port it arrived on (the
    /// owner learns the ingress port from the mbuf); a full ring's frames are dropped, counted.
    fn hand_off(
        bursts: &mut [Burst],
        rings: &mut [Option<RingProducer>],
        counters: &mut WorkerCounters,
        mut m: Mbuf,
        worker: usize,
        port: u16,
    ) {
        match bursts.get_mut(worker) {
            Some(burst) => {
                m.set_port(port);
                if burst.is_full() {
                    Self::hand_over(rings[worker].as_mut(), burst, counters);
                }
                let _ = burst.push(m);
            }
            None => {
                counters.drop(DropReason::HandoffFull, 1);
                drop(m);
            }
        }
    }

    fn ingress_of(&self, m: &Mbuf) -> PortSide {
        if m.port() == self.port_ids[PortSide::Outside.index()] {
            PortSide::Outside
        } else {
            PortSide::Inside
        }
    }

    /// A fragment of a TCP datagram (its mbuf names its port): held until the datagram is
    /// whole, which then goes where its flow says, as one segment to the proxy, or as the
    /// fragments it came in otherwise.
    #[cold]
    fn reassemble(&mut self, m: Mbuf, now_ms: u64, out: &mut Outbox) {
        // A frame spread over several buffers is not read whole here: it passes as it came.
        let Some(info) = tcp_fragment(m.data()).filter(|_| m.segments() == 1) else {
            let egress = self.ingress_of(&m).other();
            return self.with_sink(out, |_, sink| sink.forward(m, egress));
        };
        let whole = match self.fragments.insert(info, HeldFragment(m), now_ms) {
            Outcome::Held => return,
            Outcome::Dropped(_, frames) => {
                self.counters()
                    .drop(DropReason::Fragment, frames.len() as u64);
                return;
            }
            Outcome::Complete(whole) => whole,
        };
        let mut frame = Vec::with_capacity(whole.frame_len());
        whole.write_frame(&mut frame);
        let first = &whole.fragments[whole.first].0;
        let ingress = self.ingress_of(first);
        let nic_hashed = self.use_nic_hash && first.rss_hash().is_some();
        let verdict = self
            .shard
            .decide_whole(&frame, ingress, self.steer, nic_hashed, now_ms);
        let first = whole.first;
        let fragments = whole.fragments.into_iter().map(|f| f.0);
        match verdict {
            // Its flow is another worker's: the fragments go there, to be put together again.
            Verdict::HandOff(worker) => {
                // Counted once, by the worker that puts them together for good.
                let c = &mut self.fragments.counters;
                c.fragments -= fragments.len() as u64;
                c.reassembled -= 1;
                // The decision counted one frame handed off.
                self.counters().handoff_out += fragments.len() as u64 - 1;
                for m in fragments {
                    let port = m.port();
                    Self::hand_off(
                        &mut out.handoff,
                        &mut self.handoff_out,
                        &mut self.shard.pipeline_mut().counters,
                        m,
                        worker,
                        port,
                    );
                }
            }
            Verdict::Proxy(target) => {
                // The proxy reads a frame from one buffer.
                let copy = [Some(&self.pool), self.large_pool.as_ref()]
                    .into_iter()
                    .flatten()
                    .find_map(|pool| {
                        let mut m = Mbuf::alloc(pool)?;
                        m.append(&frame).is_ok().then_some(m)
                    });
                match copy {
                    Some(m) => {
                        let n = fragments.len() as u64;
                        // What the proxy lets pass leaves as it came, in its fragments.
                        let egress = target.ingress.other();
                        self.with_sink(out, |shard, sink| {
                            if shard.proxy(Received(m), target, now_ms, sink, n).is_some() {
                                for m in fragments {
                                    sink.forward(m, egress);
                                }
                            }
                        });
                    }
                    _ => {
                        self.fragments.counters.too_big += 1;
                        self.counters()
                            .drop(DropReason::Fragment, fragments.len() as u64);
                    }
                }
            }
            Verdict::Forward(egress) => self.with_sink(out, |_, sink| {
                for m in fragments {
                    sink.forward(m, egress);
                }
            }),
            Verdict::Translate {
                slot,
                from_client,
                egress,
            } => self.with_sink(out, |shard, sink| {
                // The TCP header is in the first fragment.
                for (i, mut m) in fragments.enumerate() {
                    if i == first {
                        shard.translate(m.data_mut(), slot, from_client, now_ms, sink);
                    }
                    sink.forward(m, egress);
                }
            }),
            Verdict::Drop(reason) => {
                self.counters().drop(reason, fragments.len() as u64);
            }
            Verdict::Reassemble => {
                self.counters()
                    .drop(DropReason::Fragment, fragments.len() as u64);
            }
        }
    }

    fn flush(&mut self, out: &mut Outbox) {
        self.with_sink(out, |_, sink| sink.flush());
        for (worker, burst) in out.handoff.iter_mut().enumerate() {
            if !burst.is_empty() {
                Self::hand_over(
                    self.handoff_out[worker].as_mut(),
                    burst,
                    &mut self.shard.pipeline_mut().counters,
                );
            }
        }
    }

    /// Offers the burst to the driver up to `1 + retries` times; what it
    /// still refuses is freed, never leaked. Returns (sent, refused) for the
    /// caller to count.
    #[inline]
    fn transmit(txq: &mut TxQueue, burst: &mut Burst, retries: u32) -> (u64, u64) {
        let mut attempts = 0;
        let mut sent = 0u64;
        loop {
            sent += txq.tx_burst(burst) as u64;
            if burst.is_empty() {
                return (sent, 0);
            }
            if attempts == retries {
                let refused = burst.len() as u64;
                burst.clear();
                return (sent, refused);
            }
            attempts += 1;
        }
    }

    /// The proxies' timers, and the packet-buffer pressure that stops new proxied flows.
    fn proxy_timers(&mut self, now_ms: u64, out: &mut Outbox) {
        // Proxied payload sits in the pool; past seven eighths in use, what is left is kept
        // for forwarding and for the flows already proxied.
        let pressure = self.pool.available() < self.pool.size() / 8;
        self.shard.set_pressure(pressure);
        self.with_sink(out, |shard, sink| shard.on_timers(now_ms, sink));
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

    fn execute(&mut self, command: WorkerCommand, now_ms: u64, out: &mut Outbox) {
        // A control plane that gave up waiting has dropped its receiver; the
        // failed send is of no consequence.
        let worker = self.id as u16;
        match command {
            WorkerCommand::ListFlows {
                filter,
                limit,
                reply,
            } => {
                let _ = reply.send(self.shard.list_flows(&filter, limit, worker, now_ms));
            }
            WorkerCommand::ClearFlows {
                filter,
                action,
                reply,
            } => {
                let report = self.with_sink(out, |shard, sink| {
                    shard.clear_flows(&filter, action, worker, now_ms, sink)
                });
                let _ = reply.send(report);
            }
            WorkerCommand::Reclassify { reply } => {
                let changed =
                    self.with_sink(out, |shard, sink| shard.reclassify(now_ms, sink).flows);
                let _ = reply.send(changed);
            }
            WorkerCommand::Ping { reply } => {
                let _ = reply.send(());
            }
            WorkerCommand::Publish { reply } => {
                let _ = reply.send(self.publish());
            }
        }
    }

    fn snapshot(&mut self) -> WorkerReport {
        WorkerReport {
            counters: self.shard.pipeline().counters.clone(),
            flows_active: self.shard.pipeline().flows().len(),
            flow_capacity: self.shard.pipeline().flows().capacity(),
            hits: self.shard.pipeline().hits().to_vec(),
            proxy: self.shard.proxies_mut().counters(),
            reassembly: self.fragments.counters,
            signature_hits: self.shard.proxies().signature_hits().to_vec(),
            limit_hits: self.shard.proxies().limit_hits().to_vec(),
            notices: {
                let mut notices = Notices::default();
                self.shard.proxies_mut().take_notices(&mut notices);
                notices
            },
        }
    }

    /// Returns false if the main thread held the report, which then keeps what was
    /// published before.
    fn publish(&mut self) -> bool {
        if let Some(audit) = &self.audit {
            if self.shard.pipeline().has_new_flows() {
                let keys = self.shard.pipeline_mut().take_new_flows();
                // A full channel means the main thread is behind: count what the
                // audit will not check rather than block a worker.
                if let Err(refused) = audit.try_send((self.id as u16, keys)) {
                    let (_, keys) = refused.into_inner();
                    self.counters().split_audit_unsent += keys.len() as u64;
                }
            }
        }
        // Never wait for the main thread: if it holds the lock, publish next
        // time. Copy into the published buffers to reuse their allocations.
        if let Ok(mut report) = self.report.try_lock() {
            report.counters.clone_from(&self.shard.pipeline().counters);
            report.flows_active = self.shard.pipeline().flows().len();
            report.flow_capacity = self.shard.pipeline().flows().capacity();
            report.hits.clear();
            report.hits.extend_from_slice(self.shard.pipeline().hits());
            report.proxy = self.shard.proxies_mut().counters();
            report.reassembly = self.fragments.counters;
            report.signature_hits.clear();
            report
                .signature_hits
                .extend_from_slice(self.shard.proxies().signature_hits());
            report.limit_hits.clear();
            report
                .limit_hits
                .extend_from_slice(self.shard.proxies().limit_hits());
            self.shard.proxies_mut().take_notices(&mut report.notices);
            return true;
        }
        false
    }
}
