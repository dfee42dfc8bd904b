//! One worker's share of the data plane, without I/O: its flow table and pipeline, its proxied
//! connections and the glue between them, in the shape of quinn-proto's `Endpoint`. Frames
//! come in with the port they arrived on; each leaves as an [`Dispatch`] for the driver (forward
//! it, hand it to the worker that owns its flow, hold it for reassembly) or is consumed, and
//! the frames the proxy makes go out through a [`FrameSink`]. Timers, expiry and the control
//! plane's commands run between bursts.
//!
//! The daemon's worker drives a `Shard` with bursts of mbufs; the proxy's tests, the pipeline
//! benchmark and the fuzz targets drive the same code with plain bytes.

use std::sync::Arc;

use crate::counters::DropReason;
use crate::flow::view::{self, FlowFilter, FlowView, FlowsClearReply};
use crate::pipeline::{Pipeline, PortSide, Prepared, Steer, Verdict};
use crate::policy::CompiledPolicy;
use crate::proxy::{
    ClearAction, Disposition, FrameSink, Inbound, ProxyTable, ProxyTarget, Unusable,
};
use crate::tcp::payload::{Payload, TestBytes};
use crate::wire::parse_frame;

/// A received frame, whose payload the proxy may keep without a copy: in the daemon an mbuf
/// (the payload a refcounted slice of it), in tests and replays a byte vector.
pub trait RxFrame: Sized {
    type Payload: Payload;

    fn data(&self) -> &[u8];

    fn data_mut(&mut self) -> &mut [u8];

    /// The frame sits in one buffer, so that its payload can be kept as one slice.
    fn is_contiguous(&self) -> bool {
        true
    }

    /// The bytes `[offset, offset + len)` of the frame, kept as they are; None if they cannot be.
    fn into_payload(self, offset: usize, len: usize) -> Option<Self::Payload>;
}

impl RxFrame for Vec<u8> {
    type Payload = TestBytes;

    fn data(&self) -> &[u8] {
        self
    }

    fn data_mut(&mut self) -> &mut [u8] {
        self
    }

    fn into_payload(mut self, offset: usize, len: usize) -> Option<TestBytes> {
        self.as_mut_slice().into_payload(offset, len)
    }
}

/// A frame in someone else's buffer (a benchmark's table, a capture being replayed): the
/// proxy keeps a copy of what it keeps.
impl RxFrame for &mut [u8] {
    type Payload = TestBytes;

    fn data(&self) -> &[u8] {
        self
    }

    fn data_mut(&mut self) -> &mut [u8] {
        self
    }

    fn into_payload(self, offset: usize, len: usize) -> Option<TestBytes> {
        let bytes: &[u8] = self.get(offset..offset.checked_add(len)?)?;
        Some(TestBytes::from(bytes))
    }
}

/// What the driver does with a frame the shard did not consume.
#[derive(Debug)]
pub enum Dispatch<F> {
    /// Transmit it on this port.
    Forward(F, PortSide),
    /// Another worker owns its flow: hand it over.
    HandOff(F, usize),
    /// An IP fragment of a TCP datagram: hold it until the datagram is whole.
    Reassemble(F),
    /// Consumed by the proxy, or dropped and counted.
    Done,
}

/// What applying a new policy to live flows changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reclassified {
    /// Entries whose mode changed.
    pub flows: u64,
    /// Proxied connections the new policy moved out of the proxy (handed over or reset).
    pub proxied: usize,
}

/// A worker's flow table, pipeline and proxy table, and what they do to frames together.
pub struct Shard<P: Payload> {
    pipeline: Pipeline,
    proxies: ProxyTable<P>,
    /// Proxy slots of expired flows, to be released; kept for its allocation.
    released: Vec<u32>,
}

impl<P: Payload> Shard<P> {
    pub fn new(pipeline: Pipeline, proxies: ProxyTable<P>) -> Shard<P> {
        Shard {
            pipeline,
            proxies,
            released: Vec::new(),
        }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    pub fn proxies(&self) -> &ProxyTable<P> {
        &self.proxies
    }

    pub fn proxies_mut(&mut self) -> &mut ProxyTable<P> {
        &mut self.proxies
    }

    /// The first stage of a burst: parse and hash one frame (see [`Pipeline::prepare`]).
    #[inline(always)]
    pub fn prepare(
        &mut self,
        frame: &[u8],
        ingress: PortSide,
        nic_hash: Option<u32>,
        steer: Option<Steer>,
    ) -> Prepared {
        self.pipeline.prepare(frame, ingress, nic_hash, steer)
    }

    /// The second stage: bring the flow's entry into the cache.
    #[inline(always)]
    pub fn prefetch_entry(&self, prepared: &mut Prepared) {
        self.pipeline.prefetch_entry(prepared)
    }

    /// The last stage: the flow's verdict, carried out; what is left for the driver is returned.
    #[inline(always)]
    pub fn dispatch<F: RxFrame<Payload = P>>(
        &mut self,
        mut frame: F,
        prepared: &Prepared,
        now_ms: u64,
        sink: &mut impl FrameSink<P>,
    ) -> Dispatch<F> {
        match self.pipeline.finish(prepared, now_ms) {
            Verdict::Forward(egress) => Dispatch::Forward(frame, egress),
            Verdict::Drop(reason) => {
                self.pipeline.counters.drop(reason, 1);
                Dispatch::Done
            }
            Verdict::Proxy(target) => match self.proxy(frame, target, now_ms, sink, 1) {
                Some(frame) => Dispatch::Forward(frame, target.ingress.other()),
                None => Dispatch::Done,
            },
            Verdict::Reassemble => Dispatch::Reassemble(frame),
            Verdict::Translate {
                slot,
                from_client,
                egress,
            } => {
                self.translate(frame.data_mut(), slot, from_client, now_ms, sink);
                Dispatch::Forward(frame, egress)
            }
            Verdict::HandOff(worker) => Dispatch::HandOff(frame, worker),
        }
    }

    /// One frame through all three stages, for callers that do not work in bursts.
    pub fn handle<F: RxFrame<Payload = P>>(
        &mut self,
        frame: F,
        ingress: PortSide,
        now_ms: u64,
        sink: &mut impl FrameSink<P>,
    ) -> Dispatch<F> {
        let mut prepared = self.prepare(frame.data(), ingress, None, None);
        self.prefetch_entry(&mut prepared);
        self.dispatch(frame, &prepared, now_ms, sink)
    }

    /// A reassembled datagram's decision: where its flow says it goes (see
    /// [`Pipeline::prepare_whole`]).
    pub fn decide_whole(
        &mut self,
        datagram: &[u8],
        ingress: PortSide,
        steer: Option<Steer>,
        nic_hashed: bool,
        now_ms: u64,
    ) -> Verdict {
        let prepared = self
            .pipeline
            .prepare_whole(datagram, ingress, steer, nic_hashed);
        self.pipeline.finish(&prepared, now_ms)
    }

    /// A segment of a proxied flow: the proxy table takes it, keeping its payload in the frame.
    /// Returns the frame when the proxy lets it pass; a drop counts `frames` (the fragments a
    /// reassembled segment came in).
    pub fn proxy<F: RxFrame<Payload = P>>(
        &mut self,
        frame: F,
        target: ProxyTarget,
        now_ms: u64,
        sink: &mut impl FrameSink<P>,
        frames: u64,
    ) -> Option<F> {
        let counters = &mut self.pipeline.counters;
        let seg = match Inbound::read(frame.data()) {
            Ok(seg) if frame.is_contiguous() => seg,
            Ok(_) => {
                // Received frames fit one buffer at the MTUs the pool is sized for; a chain
                // (jumbo frames with scatter) is not something the proxy can keep sliced.
                counters.drop(DropReason::ProxyUnusable, frames);
                return None;
            }
            Err(Unusable::BadChecksum) => {
                counters.drop(DropReason::TcpChecksum, frames);
                return None;
            }
            Err(_) => {
                counters.drop(DropReason::ProxyUnusable, frames);
                return None;
            }
        };
        let options = self
            .pipeline
            .policy()
            .rule_options(target.rule, target.may_open(&seg));
        let mut frame = Some(frame);
        let (offset, len) = (seg.payload_offset, seg.payload_len);
        let take_payload = || frame.take().and_then(|f| f.into_payload(offset, len));
        let disposition = self.proxies.on_frame(
            self.pipeline.flows_mut(),
            target,
            &seg,
            take_payload,
            options,
            now_ms,
            sink,
        );
        let counters = &mut self.pipeline.counters;
        match disposition {
            // A frame the proxy consumed without keeping its payload is freed here.
            Disposition::Consumed => drop(frame),
            Disposition::Forward => return frame,
            Disposition::Unusable => counters.drop(DropReason::ProxyUnusable, frames),
            Disposition::NotSyn => counters.drop(DropReason::TcpNotSyn, frames),
        }
        None
    }

    /// A segment of a flow handed over to pass-through whose proxy still owes either endpoint
    /// bytes, or whose legs' numbers differ (after a SYN cookie): the proxy sees it, and its
    /// numbers are moved into the receiving endpoint's space. False if the frame's TCP
    /// segment cannot be read, and then it is left as it was.
    pub fn translate(
        &mut self,
        frame: &mut [u8],
        slot: u32,
        from_client: bool,
        now_ms: u64,
        sink: &mut impl FrameSink<P>,
    ) -> bool {
        let Some((start, end)) = parse_frame(frame).ok().and_then(|summary| {
            let ip = summary.ip?;
            let end = (usize::from(summary.l3_offset) + usize::from(ip.ip_len)).min(frame.len());
            Some((usize::from(ip.l4_offset), end))
        }) else {
            return false;
        };
        match frame.get_mut(start..end) {
            Some(tcp) => self.proxies.pass_through(
                self.pipeline.flows_mut(),
                slot,
                from_client,
                tcp,
                now_ms,
                sink,
            ),
            None => false,
        }
    }

    /// The proxies' retransmission, delayed-ACK, keep-alive and TIME-WAIT timers.
    pub fn on_timers(&mut self, now_ms: u64, sink: &mut impl FrameSink<P>) {
        self.proxies
            .on_timers(self.pipeline.flows_mut(), now_ms, sink);
    }

    /// Packet buffers are short: new flows are not proxied (see `proxy.on_buffer_pressure`).
    pub fn set_pressure(&mut self, pressure: bool) {
        self.proxies.set_pressure(pressure);
    }

    /// Tollgate is stopping: new flows are not proxied, the proxied ones finish.
    pub fn set_draining(&mut self, draining: bool) {
        self.proxies.set_draining(draining);
    }

    /// Whether expiry fell behind a flood of new flows and should run again before the next
    /// millisecond.
    pub fn expiry_behind(&self) -> bool {
        self.pipeline.expiry_behind()
    }

    /// Ages flows out; the proxied ones among them have their connections reset.
    pub fn expire(&mut self, now_ms: u64, sink: &mut impl FrameSink<P>) {
        let released = &mut self.released;
        self.pipeline.expire_with(now_ms, |entry| {
            if let Some(slot) = entry.proxy_slot() {
                released.push(slot);
            }
        });
        if self.released.is_empty() {
            return;
        }
        let flows = self.pipeline.flows_mut();
        for slot in self.released.drain(..) {
            self.proxies.release(flows, slot, now_ms, sink);
        }
    }

    /// A new policy from the control plane, for new flows; the limit counters of rules it no
    /// longer has go.
    pub fn set_policy(&mut self, policy: Arc<CompiledPolicy>) {
        self.proxies
            .retain_limit_hits(|rule| policy.limits(rule).is_some());
        self.pipeline.set_policy(policy);
    }

    /// Applies the current policy to live flows, proxied ones included.
    pub fn reclassify(&mut self, now_ms: u64, sink: &mut impl FrameSink<P>) -> Reclassified {
        let flows = self.pipeline.reclassify();
        let proxied = self
            .proxies
            .reclassify(self.pipeline.flows_mut(), now_ms, sink);
        Reclassified { flows, proxied }
    }

    /// The flow's entry is going away: its proxied connection, if it has one, is reset at
    /// both ends and its slot freed.
    pub fn release(&mut self, slot: u32, now_ms: u64, sink: &mut impl FrameSink<P>) {
        self.proxies
            .release(self.pipeline.flows_mut(), slot, now_ms, sink);
    }

    /// `flows list`: how many flows match, and the first `limit` of them.
    pub fn list_flows(
        &self,
        filter: &FlowFilter,
        limit: usize,
        worker: u16,
        now_ms: u64,
    ) -> (u64, Vec<FlowView>) {
        let mut total = 0u64;
        let mut flows = Vec::new();
        for e in self.pipeline.flows().iter() {
            if view::matches(filter, e) {
                total += 1;
                if flows.len() < limit {
                    let mut view = view::view(worker, e, now_ms);
                    view.proxy = e.proxy_slot().and_then(|slot| self.proxies.view(slot));
                    flows.push(view);
                }
            }
        }
        (total, flows)
    }

    /// `flows clear`: proxied connections reset or handed over (by `action`), other entries
    /// forgotten.
    pub fn clear_flows(
        &mut self,
        filter: &FlowFilter,
        action: ClearAction,
        worker: u16,
        now_ms: u64,
        sink: &mut impl FrameSink<P>,
    ) -> FlowsClearReply {
        view::clear(
            self.pipeline.flows_mut(),
            &mut self.proxies,
            filter,
            action,
            worker,
            now_ms,
            sink,
        )
    }
}
