//! One worker's proxied flows: the [`TcpProxy`] of each, framed onto the wire, with its timers,
//! its admission (flow limit, memory pressure, SYN cookies) and its counters.
//!
//! Sans-IO like the engine: frames come in as [`Inbound`] plus a payload the driver keeps
//! without copying, and go out through a [`FrameSink`]. The worker drives it with mbufs, the
//! tests with plain bytes.
//!
//! Each proxied flow's flow-table entry holds its slot here ([`FlowEntry::proxy_slot`]); the
//! slot holds the flow's key to find the entry again. Both directions of the link are kept by
//! whoever ends the flow: the proxy closing frees the slot and clears the entry's reference, an
//! entry expiring releases the slot ([`ProxyTable::release`]), an operator's `flows clear` resets
//! or hands over the connection and leaves the entry ([`ProxyTable::clear`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::flow::view::{HandedOver, KeptReason, LegView, ProxyFlowView};
use crate::proxy::{LimitCounters, ProxyCounters};

use super::frame::{FlowAddressing, Inbound, MAX_HEADERS_LEN};
use super::limits::{LimitHit, LimitTicket, RuleLimits};
use crate::detect::{Detection, IpsecDetector, IpsecFraming};
use crate::flow::{FlowEntry, FlowKey, FlowMode, FlowTable, HandoverCause, ProxyLink};
use crate::notice::{Notice, NoticeKind, Notices};
use crate::pipeline::PortSide;
use crate::tcp::cookie::{CookieJar, FourTuple, COOKIE_PERIOD_MS, MAX_AGE_PERIODS};
use crate::tcp::endpoint::{reset_for, EndpointStats, SegmentOutcome, Transmit};
use crate::tcp::inspect::{Direction, SignatureInspector};
use crate::tcp::owed::OwedState;
use crate::tcp::payload::Payload;
use crate::tcp::proxy::{
    cookie_syn_ack, ConvertError, Leg, OnStall, ProxyConfig, ProxyEvent, ProxyState, TcpProxy,
    Translation,
};
use crate::tcp::rtt::TimestampClock;
use crate::tcp::segment::{SegmentHeader, TcpFlags};
use crate::wire::ip::PROTO_TCP;
use crate::wire::TcpSegment;

/// Where the proxy's frames go: the worker's TX bursts, or a test's list.
pub trait FrameSink<P> {
    /// Sends `headers` followed by `payload` out of `side`. False when no buffer was free:
    /// the engine's timers send again whatever a peer must still get.
    fn send(&mut self, side: PortSide, headers: &[u8], payload: Option<&P>) -> bool;
}

/// What happens to a new flow the proxy cannot take (flow limit or memory pressure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetAction {
    /// Forward it unproxied for its whole life (fail open).
    Bypass,
    /// Refuse it with a RST (fail closed).
    Reset,
}

impl BudgetAction {
    /// As the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            BudgetAction::Bypass => "bypass",
            BudgetAction::Reset => "reset",
        }
    }
}

/// What happens to a TCP flow under proxy policy whose first packet is not a SYN: one picked
/// up mid-stream (after a restart, or one the table had let go), or a packet of an ACK flood.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MidstreamAction {
    /// Forward it unproxied (there is no handshake to terminate), counted as
    /// `midstream_passthrough`: connections survive a restart of tollgate.
    #[default]
    Bypass,
    /// Drop it, counted under the drop reason `tcp_not_syn`, keeping no entry for it: a flow
    /// must start with a handshake (the ASA's default).
    Drop,
}

/// Half-open handshakes per client address, for [`ProxySettings::max_embryonic_per_source`]:
/// counters in a fixed array of buckets, picked by a keyed hash of the address so that no
/// one can aim at another's bucket. Addresses that share a bucket share its count, which can
/// only bring cookies early, never let a source past its bound.
struct SourceBudget {
    hasher: std::collections::hash_map::RandomState,
    buckets: Box<[SourceBucket]>,
    limit: u16,
}

#[derive(Clone, Copy, Default)]
struct SourceBucket {
    half_open: u16,
    /// SYNs from here are answered with cookies until then.
    cookies_until_ms: u64,
    /// When a cookie last went to an address here, for whatever reason (0: never).
    cookie_sent_ms: u64,
}

impl SourceBudget {
    /// 4096 buckets of 16 bytes: 64 KiB a worker. A flood from one address fills its own
    /// bucket; one from random addresses spreads over all of them and meets
    /// `max_embryonic` first.
    const BUCKETS: usize = 4096;
    /// How long a source past its bound keeps getting cookies after its last SYN. Each SYN
    /// answered with a cookie starts it again, so a source that floods gets no more
    /// server-side handshakes until it has been quiet this long; a real client among it
    /// (the same host) still connects, through its cookie. 10 s outlasts the SYN
    /// retransmissions of a client that just got its cookie answer lost (1 + 2 + 4 s).
    const HOLD_MS: u64 = 10_000;

    fn new(limit: usize) -> SourceBudget {
        SourceBudget {
            hasher: std::collections::hash_map::RandomState::new(),
            buckets: vec![SourceBucket::default(); Self::BUCKETS].into_boxed_slice(),
            limit: limit.clamp(1, usize::from(u16::MAX)) as u16,
        }
    }

    fn bucket_of(&self, source: std::net::IpAddr) -> u16 {
        use std::hash::BuildHasher;
        (self.hasher.hash_one(source) as usize % Self::BUCKETS) as u16
    }

    /// Whether a SYN from `bucket`'s addresses is to be answered with a cookie: the bound is
    /// reached, or was lately. Either way the hold starts again.
    fn over(&mut self, bucket: u16, now: u64) -> bool {
        let b = &mut self.buckets[usize::from(bucket)];
        let over = b.half_open >= self.limit || now < b.cookies_until_ms;
        if over {
            b.cookies_until_ms = now.saturating_add(Self::HOLD_MS);
        }
        over
    }

    /// How long after the last cookie sent to a source an ACK from it that no cookie
    /// validates is taken for a segment of a cookie handshake whose completing segments were
    /// lost, not for a flow picked up mid-stream: the client's retransmissions of its first
    /// segment (backing off from about 200 ms) come well within it.
    const COOKIE_ACK_GRACE_MS: u64 = 10_000;

    fn cookie_sent(&mut self, bucket: u16, now: u64) {
        self.buckets[usize::from(bucket)].cookie_sent_ms = now.max(1);
    }

    /// Whether a cookie went to an address of `bucket` within the grace.
    fn cookies_lately(&self, bucket: u16, now: u64) -> bool {
        let sent = self.buckets[usize::from(bucket)].cookie_sent_ms;
        sent != 0 && now.saturating_sub(sent) <= Self::COOKIE_ACK_GRACE_MS
    }

    fn opened(&mut self, bucket: u16) {
        let b = &mut self.buckets[usize::from(bucket)];
        b.half_open = b.half_open.saturating_add(1);
    }

    fn closed(&mut self, bucket: u16) {
        let b = &mut self.buckets[usize::from(bucket)];
        b.half_open = b.half_open.saturating_sub(1);
    }
}

/// A worker's share of the proxy configuration.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Per-flow TCP settings; the stall action is the default for rules without `on-stall`.
    pub flow: ProxyConfig,
    /// Proxied flows this worker holds at most (TIME-WAIT included).
    pub max_flows: usize,
    /// Handshakes in progress past which client SYNs are answered with SYN cookies.
    pub max_embryonic: usize,
    /// Handshakes in progress from one client address past which its SYNs are answered with
    /// SYN cookies (and for a while after: see `SourceBudget`).
    pub max_embryonic_per_source: usize,
    /// What a flow whose first packet is not a SYN gets.
    pub on_midstream: MidstreamAction,
    /// Payload bytes this worker's proxied flows may hold together before new flows are
    /// refused (checked against the figure of the last reporting interval).
    pub buffer_budget: usize,
    /// What a new flow gets when `max_flows` is reached...
    pub on_flow_limit: BudgetAction,
    /// ...when `buffer_budget` is...
    pub on_memory_budget: BudgetAction,
    /// ...and when packet buffers are short ([`ProxyTable::set_pressure`]).
    pub on_buffer_shortage: BudgetAction,
    /// Server ports whose flows are watched for IPsec over TCP when their rule does not say.
    pub detect_ports: Vec<u16>,
}

/// Why a new flow is not proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shortage {
    FlowLimit,
    MemoryBudget,
    PacketBuffers,
    /// Tollgate is stopping: proxied flows finish, new ones pass through unproxied.
    Draining,
}

impl Default for ProxySettings {
    fn default() -> ProxySettings {
        ProxySettings {
            flow: ProxyConfig::default(),
            max_flows: 65_536,
            max_embryonic: 1024,
            max_embryonic_per_source: 64,
            on_midstream: MidstreamAction::Bypass,
            buffer_budget: 256 << 20,
            on_flow_limit: BudgetAction::Bypass,
            on_memory_budget: BudgetAction::Bypass,
            on_buffer_shortage: BudgetAction::Bypass,
            detect_ports: vec![10_000],
        }
    }
}

/// What the flow's policy rule says about proxying it.
#[derive(Debug, Clone, Default)]
pub struct RuleOptions {
    /// `on-stall`; `None`: the configured default.
    pub on_stall: Option<OnStall>,
    /// `detect ipsec-over-tcp` (true) or `detect off` (false); `None`: by the server port
    /// ([`ProxySettings::detect_ports`]).
    pub detect: Option<bool>,
    /// The rule's connection limits, checked before a new flow is proxied; `None` for a rule
    /// without any, and for frames of flows the proxy holds already (see
    /// [`crate::policy::CompiledPolicy::rule_options`]).
    pub limits: Option<Arc<RuleLimits>>,
}

/// A frame of a flow in proxy mode, as the pipeline found its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyTarget {
    pub hash: u64,
    pub link: ProxyLink,
    /// The frame comes from the flow's initiator, the client.
    pub from_client: bool,
    /// The policy rule that classified the flow (0: the default).
    pub rule: u32,
    /// The port the frame came in on.
    pub ingress: PortSide,
    /// The frame made the flow's entry: it is the flow's first.
    pub first: bool,
}

impl ProxyTarget {
    /// Whether the frame can open a connection: a client's frame of a flow the proxy holds
    /// nothing for (a SYN, the ACK of a SYN cookie), or a SYN reusing a closed connection's
    /// ports. Only such frames need the rule's connection limits.
    #[inline]
    pub fn may_open(&self, seg: &Inbound) -> bool {
        self.from_client
            && (!matches!(self.link, ProxyLink::Slot(_))
                || seg.header.flags.contains(TcpFlags::SYN))
    }
}

/// What the driver does with the frame after [`ProxyTable::on_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The proxy took it (its payload, if any, is held; the frame itself is not forwarded).
    Consumed,
    /// Not for the proxy after all: forward it unchanged.
    Forward,
    /// Unusable (the payload could not be kept): drop it and count it.
    Unusable,
    /// The first packet of a flow was not a SYN and `on_midstream` is drop: drop it, counted
    /// as `tcp_not_syn`. The proxy has removed the entry it made.
    NotSyn,
}

/// What `flows clear` does to the connections the proxy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearAction {
    /// Reset both ends.
    Reset,
    /// Hand the connection over to pass-through: its endpoints carry on unproxied.
    HandOver,
}

/// What [`ProxyTable::clear`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleared {
    Reset,
    HandedOver,
    /// Left as it was, for this reason.
    Kept(KeptReason),
}

/// A proxied flow.
struct ProxiedFlow<P: Payload> {
    proxy: TcpProxy<P, Arc<SignatureInspector>>,
    addressing: FlowAddressing,
    key: FlowKey,
    hash: u64,
    /// The port the client is behind.
    client_side: PortSide,
    /// The deadline of this flow's newest timer in the heap (u64::MAX: none).
    scheduled: u64,
    /// Counted among the handshakes in progress (and its client's, in `SourceBudget`).
    embryonic: bool,
    /// The client address's bucket in `SourceBudget`.
    source: u16,
    /// Why the flow was handed over, once it was.
    handed_over: Option<HandoverCause>,
    detection: Detecting,
    /// Its place in its rule's connection limits, if the rule has any: released when its
    /// handshakes complete (embryonic) and when it stops being an open connection.
    limit: Option<LimitTicket>,
}

/// Where a flow's watch for IPsec over TCP is.
enum Detecting {
    /// Not watched, or found to be something else.
    Off,
    Watching(IpsecDetector),
    /// Recognised; handed over as soon as both legs are synchronized.
    Found(IpsecFraming),
}

impl Detecting {
    /// Looks at a segment's payload while watching; returns what it decided, once.
    fn watch(&mut self, from_client: bool, payload: &[u8]) -> Detection {
        let Detecting::Watching(detector) = self else {
            return Detection::Undecided;
        };
        let detection = detector.on_payload(from_client, payload);
        match detection {
            Detection::Undecided => {}
            Detection::NotIpsec => *self = Detecting::Off,
            Detection::IpsecOverTcp(framing) => *self = Detecting::Found(framing),
        }
        detection
    }
}

/// A flow handed over to pass-through whose two legs' numbers differ (after a SYN cookie).
struct TranslatedFlow {
    translations: [Translation; 2],
    key: FlowKey,
    hash: u64,
}

enum Held<P: Payload> {
    Proxied(Box<ProxiedFlow<P>>),
    Translated(Box<TranslatedFlow>),
}

struct Slot<P: Payload> {
    /// Bumped on every reuse, so a timer of an earlier flow never fires on this one.
    generation: u32,
    held: Option<Held<P>>,
}

/// The legs' ECN counters, summed.
#[derive(Debug, Clone, Copy, Default)]
struct EcnTally {
    legs: u64,
    ce_received: u64,
    ece_received: u64,
    cwnd_reductions: u64,
}

impl EcnTally {
    fn add(&mut self, leg: &EndpointStats) {
        self.legs += u64::from(leg.ecn);
        self.ce_received += leg.ecn_ce_received;
        self.ece_received += leg.ecn_ece_received;
        self.cwnd_reductions += leg.ecn_cwnd_reductions;
    }
}

/// One worker's proxied flows.
pub struct ProxyTable<P: Payload> {
    settings: ProxySettings,
    inspector: Arc<SignatureInspector>,
    cookies: CookieJar,
    /// When the last SYN cookie went out: ACKs of unknown flows are checked for one until
    /// it has aged out.
    cookie_sent_at: Option<u64>,
    slots: Vec<Slot<P>>,
    free: Vec<u32>,
    proxied: usize,
    embryonic: usize,
    sources: SourceBudget,
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Set by the driver when packet buffers run short: new flows are not proxied then.
    pressure: bool,
    /// Set by the driver while tollgate drains before stopping.
    draining: bool,
    /// Payload bytes held by proxied flows, as last counted by [`ProxyTable::counters`].
    buffered: usize,
    counters: ProxyCounters,
    /// Retransmissions per leg of flows already gone: live flows' are added on reading.
    retransmissions_gone: [u64; 2],
    /// Out-of-order segments and bytes dropped at the timeout by flows already gone, likewise.
    out_of_order_gone: (u64, u64),
    /// ECN on the legs of flows gone: legs that negotiated it, CE marks, ECEs, reductions.
    ecn_gone: EcnTally,
    /// Per signature (by index in the inspector): flows reset.
    signature_hits: Vec<u64>,
    /// Exception actions on single flows since the worker last published them.
    notices: Notices,
    /// Per rule id, for rules with connection limits: new flows that met one (the gauges are
    /// the rules' own, in [`RuleLimits`]).
    limit_hits: Vec<(u32, LimitCounters)>,
}

fn is_bare_syn(hdr: &SegmentHeader) -> bool {
    hdr.flags.contains(TcpFlags::SYN)
        && !hdr
            .flags
            .intersects(TcpFlags::ACK | TcpFlags::RST | TcpFlags::FIN)
}

fn side_of(client_side: PortSide, leg: Leg) -> PortSide {
    match leg {
        Leg::Client => client_side,
        Leg::Server => client_side.other(),
    }
}

/// The client's and the server's address and port, from a frame of the client's.
fn tuple_of(seg: &Inbound) -> FourTuple {
    FourTuple::new(
        SocketAddr::new(seg.src, seg.header.src_port),
        SocketAddr::new(seg.dst, seg.header.dst_port),
    )
}

fn key_of(seg: &Inbound) -> FlowKey {
    FlowKey::from_packet(
        seg.src,
        seg.dst,
        PROTO_TCP,
        seg.header.src_port,
        seg.header.dst_port,
    )
    .0
}

impl<P: Payload> ProxyTable<P> {
    /// `cookie_secret` must come from a good random source and stay the worker's.
    pub fn new(
        settings: ProxySettings,
        inspector: Arc<SignatureInspector>,
        cookie_secret: [u8; 16],
    ) -> ProxyTable<P> {
        let signatures = inspector.len();
        let sources = SourceBudget::new(settings.max_embryonic_per_source);
        ProxyTable {
            settings,
            inspector,
            cookies: CookieJar::new(cookie_secret),
            cookie_sent_at: None,
            slots: Vec::new(),
            free: Vec::new(),
            proxied: 0,
            embryonic: 0,
            sources,
            timers: BinaryHeap::new(),
            pressure: false,
            draining: false,
            buffered: 0,
            counters: ProxyCounters::default(),
            notices: Notices::default(),
            retransmissions_gone: [0; 2],
            out_of_order_gone: (0, 0),
            ecn_gone: EcnTally::default(),
            signature_hits: vec![0; signatures],
            limit_hits: Vec::new(),
        }
    }

    /// Packet buffers are short (or no longer): new flows are then not proxied.
    pub fn set_pressure(&mut self, pressure: bool) {
        self.pressure = pressure;
    }

    /// Tollgate is draining (or no longer): new flows pass through unproxied, counted as
    /// `drain_bypassed`, while the proxied ones finish.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Flows proxied now (TIME-WAIT included; translated pass-through flows not).
    pub fn len(&self) -> usize {
        self.proxied
    }

    pub fn is_empty(&self) -> bool {
        self.proxied == 0
    }

    /// A TCP frame of a flow in proxy mode. `take_payload` hands over the frame's payload
    /// (`seg.payload_offset`, `seg.payload_len`) and is called only when the proxy keeps it.
    #[allow(clippy::too_many_arguments)]
    pub fn on_frame(
        &mut self,
        flows: &mut FlowTable,
        target: ProxyTarget,
        seg: &Inbound,
        take_payload: impl FnOnce() -> Option<P>,
        options: RuleOptions,
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) -> Disposition {
        let leg = if target.from_client {
            Leg::Client
        } else {
            Leg::Server
        };
        if let ProxyLink::Slot(slot) = target.link {
            let reopening = match self.proxied_mut(slot) {
                Some(flow) => {
                    leg == Leg::Client
                        && is_bare_syn(&seg.header)
                        && flow.proxy.yields_to_client_syn(&seg.header)
                }
                // A translated flow is in bypass mode, so its frames do not come here; if the
                // entry and the slot ever disagreed, the entry is put right.
                None => {
                    self.free_slot(flows, slot, false, now, sink);
                    if let Some(entry) = flows.get_mut(&key_of(seg), target.hash) {
                        entry.set_proxy_link(ProxyLink::None);
                    }
                    return Disposition::Forward;
                }
            };
            if reopening {
                // The client reuses the port: the old connection gives way, as the server's
                // TIME-WAIT does to a new SYN.
                self.free_slot(flows, slot, false, now, sink);
                return self.without_proxy(flows, target, seg, take_payload, &options, now, sink);
            }
            let Some(payload) = take_payload() else {
                return Disposition::Unusable;
            };
            let Some(flow) = self.proxied_mut(slot) else {
                return Disposition::Unusable;
            };
            flow.addressing.observe(leg, seg);
            let detection = flow.detection.watch(target.from_client, payload.bytes());
            let carries_data = !payload.is_empty();
            let outcome = flow.proxy.on_segment(leg, &seg.header, payload, now);
            if matches!(outcome, SegmentOutcome::Rejected(_)) {
                self.counters.segments_rejected += 1;
                if carries_data {
                    match leg {
                        Leg::Client => self.counters.data_rejected_client_leg += 1,
                        Leg::Server => self.counters.data_rejected_server_leg += 1,
                    }
                }
            }
            self.count_detection(detection);
            if self.hand_over_detected(flows, slot, now, sink) {
                return Disposition::Consumed;
            }
            self.drive(flows, slot, now, sink);
            return Disposition::Consumed;
        }
        self.without_proxy(flows, target, seg, take_payload, &options, now, sink)
    }

    fn count_detection(&mut self, detection: Detection) {
        let c = &mut self.counters;
        match detection {
            Detection::Undecided => {}
            Detection::NotIpsec => c.detected_not_ipsec += 1,
            Detection::IpsecOverTcp(framing) => match framing {
                IpsecFraming::CtcpIke => c.detected_ctcp_ike += 1,
                IpsecFraming::CtcpEsp => c.detected_ctcp_esp += 1,
                IpsecFraming::Rfc8229 => c.detected_rfc8229 += 1,
                IpsecFraming::FramedIke => c.detected_framed_ike += 1,
                IpsecFraming::FramedEsp => c.detected_framed_esp += 1,
            },
        }
    }

    /// Hands a flow recognised as IPsec over TCP over to pass-through, with what it holds
    /// flushed to each side (the segment just taken included). True once it is done; a flow
    /// still completing a handshake waits for its next segment.
    fn hand_over_detected(
        &mut self,
        flows: &mut FlowTable,
        slot: u32,
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) -> bool {
        let Some(flow) = self.proxied_mut(slot) else {
            return false;
        };
        let Detecting::Found(framing) = flow.detection else {
            return false;
        };
        let key = flow.key;
        // Nothing the segment made the legs queue is sent: the proxy delivers its data to the
        // far side as owed, and the far side's own ACK, passed through, answers the sender.
        match self.convert(flows, slot, HandoverCause::Detection(framing), now, sink) {
            Ok(()) => {
                self.notices.push(Notice {
                    key,
                    kind: NoticeKind::Detected {
                        framing: framing.name(),
                    },
                });
                true
            }
            Err(ConvertError::HandshakeInProgress) => false,
            Err(ConvertError::Finished | ConvertError::Closing) => {
                if let Some(flow) = self.proxied_mut(slot) {
                    flow.detection = Detecting::Off;
                }
                false
            }
        }
    }

    /// Hands a proxied flow over to pass-through, for any cause (a stall excepted, which the
    /// engine decides on its own): the entry goes to bypass mode, and the proxy stays on the
    /// flow, delivering what it owes each endpoint, until it owes nothing. Nothing changes when
    /// the flow cannot be handed over.
    fn convert(
        &mut self,
        flows: &mut FlowTable,
        slot: u32,
        cause: HandoverCause,
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) -> Result<(), ConvertError> {
        let Some(flow) = self.proxied_mut(slot) else {
            return Err(ConvertError::Finished);
        };
        flow.proxy.convert_to_passthrough(now)?;
        flow.handed_over = Some(cause);
        // The last events: the handshake a segment just taken completed, if it did, and the
        // PassThrough the conversion queued, which is this hand-over.
        let mut established = false;
        while let Some(event) = flow.proxy.poll_event() {
            established |= event == ProxyEvent::Established;
        }
        let was_embryonic = established && std::mem::take(&mut flow.embryonic);
        let source = flow.source;
        if established {
            self.counters.connections_established += 1;
        }
        if was_embryonic {
            self.embryonic -= 1;
            self.sources.closed(source);
        }
        self.hand_over(flows, slot, cause);
        self.drive(flows, slot, now, sink);
        Ok(())
    }

    /// A frame of a proxy-mode flow the proxy holds nothing for: a new connection, the end of
    /// a cookie handshake, or a flow that cannot be proxied.
    #[allow(clippy::too_many_arguments)]
    fn without_proxy(
        &mut self,
        flows: &mut FlowTable,
        target: ProxyTarget,
        seg: &Inbound,
        take_payload: impl FnOnce() -> Option<P>,
        options: &RuleOptions,
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) -> Disposition {
        let hdr = &seg.header;
        if target.from_client && is_bare_syn(hdr) {
            return self.open(flows, target, seg, options, now, sink);
        }
        match target.link {
            // Cookies keep no state, so any client ACK of a flow the proxy holds nothing for
            // may complete one, while cookies sent lately can still be valid. One that does
            // not validate is an ordinary flow picked up mid-stream.
            ProxyLink::None
                if target.from_client
                    && hdr.flags.contains(TcpFlags::ACK)
                    && !hdr.flags.intersects(TcpFlags::SYN | TcpFlags::RST)
                    && self.cookies_outstanding(now) =>
            {
                match self.complete_cookie(flows, target, seg, take_payload, options, now, sink) {
                    Some(disposition) => disposition,
                    None if self
                        .sources
                        .cookies_lately(self.sources.bucket_of(seg.src), now) =>
                    {
                        // From an address sent cookies lately, this may be a later segment of
                        // a client whose cookie-completing ones were lost (an ACK answering a
                        // second SYN-ACK on its ports, say). The server, which never saw the
                        // handshake, would answer it with a RST that the client takes, so it
                        // is dropped, as a listener's cookie check drops it; the client sends
                        // its first segment again. It earns no entry either.
                        self.counters.syn_cookies_invalid += 1;
                        if target.first {
                            flows.remove(&key_of(seg), target.hash);
                        }
                        Disposition::Consumed
                    }
                    None => self.midstream(flows, target, seg),
                }
            }
            ProxyLink::None => self.midstream(flows, target, seg),
            // Counted on its first segment here; the rest pass as it did.
            ProxyLink::PickedUp => Disposition::Forward,
            // A segment of a connection the proxy has finished (a late retransmission), or
            // anything but the ACK a cookie waits for: a closed TCP port would ignore or reset
            // it; the proxy ignores it.
            _ => {
                self.counters.segments_rejected += 1;
                Disposition::Consumed
            }
        }
    }

    /// A segment of a flow seen without its handshake (picked up mid-stream after a restart,
    /// a flow the policy moved to proxy while it ran, or a flood): there is no connection to
    /// terminate. It passes as it is, and the flow is counted and marked so that its other
    /// segments pass without being counted again; or, as the first packet of its flow under
    /// `on_midstream = drop`, it is dropped with its entry, which it has not earned.
    fn midstream(
        &mut self,
        flows: &mut FlowTable,
        target: ProxyTarget,
        seg: &Inbound,
    ) -> Disposition {
        if target.first && self.settings.on_midstream == MidstreamAction::Drop {
            flows.remove(&key_of(seg), target.hash);
            return Disposition::NotSyn;
        }
        self.counters.midstream_passthrough += 1;
        if let Some(entry) = flows.get_mut(&key_of(seg), target.hash) {
            entry.set_proxy_link(ProxyLink::PickedUp);
        }
        Disposition::Forward
    }

    /// The flow's TCP settings: the configuration's, for the flow's IP version and rule.
    fn flow_config(&self, options: &RuleOptions, seg: &Inbound) -> ProxyConfig {
        let mut config = if seg.src.is_ipv6() {
            self.settings.flow.for_ipv6()
        } else {
            self.settings.flow
        };
        if let Some(action) = options.on_stall {
            config.stall.action = action;
        }
        config
    }

    /// A new flow's watch for IPsec over TCP, by its rule or else by its server port.
    fn detecting(&self, options: &RuleOptions, seg: &Inbound) -> Detecting {
        let on = options
            .detect
            .unwrap_or_else(|| self.settings.detect_ports.contains(&seg.header.dst_port));
        if on {
            Detecting::Watching(IpsecDetector::default())
        } else {
            Detecting::Off
        }
    }

    /// What stops a new flow being proxied, if anything.
    fn shortage(&self) -> Option<Shortage> {
        if self.draining {
            Some(Shortage::Draining)
        } else if self.proxied >= self.settings.max_flows {
            Some(Shortage::FlowLimit)
        } else if self.buffered >= self.settings.buffer_budget {
            Some(Shortage::MemoryBudget)
        } else if self.pressure {
            Some(Shortage::PacketBuffers)
        } else {
            None
        }
    }

    /// The proxy cannot take a new flow: the condition's configured exception action.
    fn refuse_new(
        &mut self,
        shortage: Shortage,
        flows: &mut FlowTable,
        target: ProxyTarget,
        seg: &Inbound,
        sink: &mut impl FrameSink<P>,
    ) -> Disposition {
        let (action, condition) = match shortage {
            Shortage::FlowLimit => {
                self.counters.flow_limit_hits += 1;
                (self.settings.on_flow_limit, "proxy.max_flows")
            }
            Shortage::Draining => {
                self.counters.drain_bypassed += 1;
                if let Some(entry) = flows.get_mut(&key_of(seg), target.hash) {
                    entry.set_mode(FlowMode::Bypass);
                }
                return Disposition::Forward;
            }
            Shortage::MemoryBudget => {
                self.counters.memory_budget_hits += 1;
                (self.settings.on_memory_budget, "proxy.memory_budget_mib")
            }
            Shortage::PacketBuffers => {
                self.counters.buffer_shortage_hits += 1;
                (self.settings.on_buffer_shortage, "mbuf pool low")
            }
        };
        self.notices.push(Notice {
            key: key_of(seg),
            kind: NoticeKind::NotProxied {
                condition,
                action: action.name(),
            },
        });
        match action {
            BudgetAction::Bypass => self.counters.budget_bypassed += 1,
            BudgetAction::Reset => self.counters.budget_reset += 1,
        }
        self.exception_action(action, flows, target, seg, sink)
    }

    /// A new flow the proxy does not take: forwarded unproxied for good (bypass), or refused
    /// with a RST (reset).
    fn exception_action(
        &mut self,
        action: BudgetAction,
        flows: &mut FlowTable,
        target: ProxyTarget,
        seg: &Inbound,
        sink: &mut impl FrameSink<P>,
    ) -> Disposition {
        match action {
            BudgetAction::Bypass => {
                if let Some(entry) = flows.get_mut(&key_of(seg), target.hash) {
                    entry.set_mode(FlowMode::Bypass);
                }
                Disposition::Forward
            }
            BudgetAction::Reset => {
                if let (Some(rst), Some(mut addressing)) = (
                    reset_for(&seg.header, seg.payload_len),
                    FlowAddressing::from_client(seg),
                ) {
                    let transmit = Transmit {
                        header: rst,
                        payload: None,
                    };
                    self.send(
                        &mut addressing,
                        target.ingress,
                        Leg::Client,
                        &transmit,
                        sink,
                    );
                }
                Disposition::Consumed
            }
        }
    }

    /// A client's SYN: a new proxied flow, or a SYN cookie when too many handshakes are open.
    fn open(
        &mut self,
        flows: &mut FlowTable,
        target: ProxyTarget,
        seg: &Inbound,
        options: &RuleOptions,
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) -> Disposition {
        if let Some(shortage) = self.shortage() {
            return self.refuse_new(shortage, flows, target, seg, sink);
        }
        // Taken before the SYN cookie's turn, so that a rule at its limit refuses its SYNs
        // whatever the global bounds; a SYN answered with a cookie gives its place back and
        // the cookie's ACK is admitted afresh.
        let ticket = match self.admit(options, flows, target, seg, sink) {
            Ok(ticket) => ticket,
            Err(disposition) => return disposition,
        };
        let Some(mut addressing) = FlowAddressing::from_client(seg) else {
            return Disposition::Forward;
        };
        let config = self.flow_config(options, seg);
        let source = self.sources.bucket_of(seg.src);
        // The global bound first: a SYN it answers with a cookie does not start the source's
        // hold.
        let global = self.embryonic >= self.settings.max_embryonic;
        if global || self.sources.over(source, now) {
            if !global {
                self.counters.syn_cookies_per_source += 1;
            }
            let tuple = tuple_of(seg);
            let mss = seg
                .header
                .options
                .mss
                .unwrap_or(config.endpoint.default_peer_mss);
            let (cookie, _) = self.cookies.syn_ack_isn(&tuple, seg.header.seq, mss, now);
            let clock = TimestampClock::new(self.cookies.clock_offset(&tuple));
            let transmit = Transmit {
                header: cookie_syn_ack(&config, &seg.header, cookie, clock, now),
                payload: None,
            };
            self.send(
                &mut addressing,
                target.ingress,
                Leg::Client,
                &transmit,
                sink,
            );
            self.counters.syn_cookies_sent += 1;
            self.cookie_sent_at = Some(now);
            self.sources.cookie_sent(source, now);
            // The cookie is the whole state of this handshake: the SYN's flow entry goes, so
            // a SYN flood cannot fill the flow table; the client's ACK makes a new one.
            flows.remove(&key_of(seg), target.hash);
            return Disposition::Consumed;
        }
        let Ok(proxy) = TcpProxy::on_client_syn(config, self.inspector.clone(), &seg.header, now)
        else {
            return Disposition::Forward;
        };
        self.counters.connections_opened += 1;
        let detection = self.detecting(options, seg);
        self.insert(
            flows, target, seg, proxy, addressing, detection, ticket, now, sink,
        );
        Disposition::Consumed
    }

    /// A place in the connection limits of the flow's rule, if it has any; past one, the
    /// rule's action applied, and what to do with the frame.
    fn admit(
        &mut self,
        options: &RuleOptions,
        flows: &mut FlowTable,
        target: ProxyTarget,
        seg: &Inbound,
        sink: &mut impl FrameSink<P>,
    ) -> Result<Option<LimitTicket>, Disposition> {
        let Some(limits) = &options.limits else {
            return Ok(None);
        };
        match limits.admit(seg.src) {
            Ok(ticket) => Ok(Some(ticket)),
            Err(hit) => {
                let (rule, action) = (limits.rule(), limits.action());
                Err(self.refuse_over_limit(rule, hit, action, flows, target, seg, sink))
            }
        }
    }

    /// A new flow met its rule's limit `hit`: counted for the rule, and the rule's action.
    /// A reset keeps no entry: the client's retransmitted SYN is refused again as new.
    #[allow(clippy::too_many_arguments)]
    fn refuse_over_limit(
        &mut self,
        rule: u32,
        hit: LimitHit,
        action: BudgetAction,
        flows: &mut FlowTable,
        target: ProxyTarget,
        seg: &Inbound,
        sink: &mut impl FrameSink<P>,
    ) -> Disposition {
        let counters = match self.limit_hits.iter().position(|(r, _)| *r == rule) {
            Some(i) => &mut self.limit_hits[i].1,
            None => {
                self.limit_hits.push((rule, LimitCounters::default()));
                &mut self.limit_hits.last_mut().expect("just pushed").1
            }
        };
        hit.count(action, counters);
        self.notices.push(Notice {
            key: key_of(seg),
            kind: NoticeKind::OverLimit {
                rule,
                limit: hit.name(),
                action: action.name(),
            },
        });
        let disposition = self.exception_action(action, flows, target, seg, sink);
        if action == BudgetAction::Reset {
            flows.remove(&key_of(seg), target.hash);
        }
        disposition
    }

    /// Whether a cookie sent earlier could still be valid (it ages out after
    /// `MAX_AGE_PERIODS` cookie periods).
    fn cookies_outstanding(&self, now: u64) -> bool {
        self.cookie_sent_at.is_some_and(|at| {
            now.saturating_sub(at) <= u64::from(MAX_AGE_PERIODS + 1) * COOKIE_PERIOD_MS
        })
    }

    /// An ACK from a client with no connection here, while cookies are outstanding: a valid
    /// cookie opens the flow (or meets the flow's exception action); None if it is no cookie.
    #[allow(clippy::too_many_arguments)]
    fn complete_cookie(
        &mut self,
        flows: &mut FlowTable,
        target: ProxyTarget,
        seg: &Inbound,
        take_payload: impl FnOnce() -> Option<P>,
        options: &RuleOptions,
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) -> Option<Disposition> {
        let tuple = tuple_of(seg);
        let hdr = &seg.header;
        let tsecr = hdr.options.timestamps.map(|(_, tsecr)| tsecr);
        let params = self
            .cookies
            .validate(&tuple, hdr.ack, hdr.seq, tsecr, now)?;
        if let Some(shortage) = self.shortage() {
            return Some(self.refuse_new(shortage, flows, target, seg, sink));
        }
        let ticket = match self.admit(options, flows, target, seg, sink) {
            Ok(ticket) => ticket,
            Err(disposition) => return Some(disposition),
        };
        let Some(addressing) = FlowAddressing::from_client(seg) else {
            return Some(Disposition::Forward);
        };
        let Some(payload) = take_payload() else {
            return Some(Disposition::Unusable);
        };
        let clock = TimestampClock::new(self.cookies.clock_offset(&tuple));
        let config = self.flow_config(options, seg);
        // The ACK that completes a cookie handshake may carry the first payload (when the
        // client's bare ACK was lost): it is watched like any other. The hand-over waits for
        // the server leg's handshake, and comes with the next segment of the flow.
        let mut detection = self.detecting(options, seg);
        let detected = detection.watch(true, payload.bytes());
        match TcpProxy::on_client_cookie_ack(
            config,
            self.inspector.clone(),
            hdr,
            payload,
            params,
            clock,
            now,
        ) {
            Ok(proxy) => {
                self.counters.syn_cookies_accepted += 1;
                self.counters.connections_opened += 1;
                self.count_detection(detected);
                self.insert(
                    flows, target, seg, proxy, addressing, detection, ticket, now, sink,
                );
            }
            Err(_) => self.counters.syn_cookies_rejected += 1,
        }
        Some(Disposition::Consumed)
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        flows: &mut FlowTable,
        target: ProxyTarget,
        seg: &Inbound,
        proxy: TcpProxy<P, Arc<SignatureInspector>>,
        addressing: FlowAddressing,
        detection: Detecting,
        limit: Option<LimitTicket>,
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) {
        let key = key_of(seg);
        let source = self.sources.bucket_of(seg.src);
        let flow = ProxiedFlow {
            proxy,
            addressing,
            key,
            hash: target.hash,
            client_side: target.ingress,
            scheduled: u64::MAX,
            embryonic: true,
            source,
            handed_over: None,
            detection,
            limit,
        };
        let slot = self.store(Held::Proxied(Box::new(flow)));
        self.proxied += 1;
        self.embryonic += 1;
        self.sources.opened(source);
        if let Some(entry) = flows.get_mut(&key, target.hash) {
            entry.set_proxy_link(ProxyLink::Slot(slot));
        }
        self.drive(flows, slot, now, sink);
    }

    fn store(&mut self, held: Held<P>) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                let s = &mut self.slots[slot as usize];
                s.generation = s.generation.wrapping_add(1);
                s.held = Some(held);
                slot
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    held: Some(held),
                });
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn proxied_mut(&mut self, slot: u32) -> Option<&mut ProxiedFlow<P>> {
        match self.slots.get_mut(slot as usize)?.held.as_mut()? {
            Held::Proxied(flow) => Some(flow),
            Held::Translated(_) => None,
        }
    }

    /// Sends the proxy's segments, handles its events and sets its timer; ends with the flow
    /// freed if it is over.
    fn drive(&mut self, flows: &mut FlowTable, slot: u32, now: u64, sink: &mut impl FrameSink<P>) {
        let generation = self.slots[slot as usize].generation;
        loop {
            let Some(Held::Proxied(flow)) = self.slots[slot as usize].held.as_mut() else {
                return;
            };
            let flow = &mut **flow;
            let mut progressed = false;
            while let Some((leg, transmit)) = flow.proxy.poll_transmit(now) {
                progressed = true;
                let side = flow.client_side;
                Self::send_on(
                    &mut flow.addressing,
                    side,
                    leg,
                    &transmit,
                    sink,
                    &mut self.counters,
                );
            }
            let Some(event) = flow.proxy.poll_event() else {
                if !progressed {
                    break;
                }
                continue;
            };
            match event {
                ProxyEvent::Established => {
                    self.counters.connections_established += 1;
                    if std::mem::take(&mut flow.embryonic) {
                        self.embryonic -= 1;
                        self.sources.closed(flow.source);
                    }
                    if let Some(ticket) = flow.limit.as_mut() {
                        ticket.established();
                    }
                }
                // The proxy's RSTs end the connection but never pass the flow table, whose
                // tracker would otherwise show the flow open for the established timeout.
                ProxyEvent::Refused => {
                    self.counters.connections_refused += 1;
                    flows.record_own_reset(&flow.key, flow.hash);
                }
                ProxyEvent::ConnectTimedOut => self.counters.connect_timeouts += 1,
                ProxyEvent::Reset { .. } | ProxyEvent::TimedOut { .. } => {
                    self.counters.connections_reset += 1;
                    flows.record_own_reset(&flow.key, flow.hash);
                }
                ProxyEvent::IdleTimeout { .. } => {
                    self.counters.connections_reset += 1;
                    flow.proxy.abort(now);
                    flows.record_own_reset(&flow.key, flow.hash);
                }
                ProxyEvent::InspectorReset { signature, .. } => {
                    self.counters.inspector_resets += 1;
                    if let Some(hits) = self.signature_hits.get_mut(signature as usize) {
                        *hits += 1;
                    }
                    flows.record_own_reset(&flow.key, flow.hash);
                }
                ProxyEvent::Stalled { action, .. } => {
                    match action {
                        OnStall::Wait => self.counters.stalls_wait += 1,
                        OnStall::Reset => {
                            self.counters.stalls_reset += 1;
                            flows.record_own_reset(&flow.key, flow.hash);
                        }
                        OnStall::Bypass => self.counters.stalls_bypass += 1,
                    }
                    self.notices.push(Notice {
                        key: flow.key,
                        kind: NoticeKind::Stalled {
                            action: action.name(),
                        },
                    });
                }
                ProxyEvent::PassThrough => {
                    if flow.proxy.take_handover().is_some() {
                        flow.handed_over = Some(HandoverCause::Stall);
                        self.hand_over(flows, slot, HandoverCause::Stall);
                    }
                }
                ProxyEvent::Closed => {}
            }
        }
        let Some(Held::Proxied(flow)) = self.slots[slot as usize].held.as_mut() else {
            return;
        };
        let state = flow.proxy.state();
        if !matches!(state, ProxyState::Connecting | ProxyState::Relaying) {
            // In TIME-WAIT, handed over or closed: no longer one of its rule's connections.
            if let Some(ticket) = flow.limit.as_mut() {
                ticket.close();
            }
        }
        match state {
            ProxyState::Closed => self.free_slot(flows, slot, false, now, sink),
            ProxyState::PassThrough if !flow.proxy.owes() => {
                self.finish_handover(flows, slot, now, sink)
            }
            _ => {
                if let Some(at) = flow.proxy.poll_at() {
                    if at < flow.scheduled {
                        flow.scheduled = at;
                        self.timers.push(Reverse((at, slot, generation)));
                    }
                }
            }
        }
    }

    /// Moves a flow to pass-through: the entry goes to bypass mode and keeps pointing at the slot,
    /// so that its frames reach [`ProxyTable::pass_through`] while the proxy still owes either
    /// endpoint bytes ([`TcpProxy::owes`]); the caller drives the flow to send them.
    fn hand_over(&mut self, flows: &mut FlowTable, slot: u32, cause: HandoverCause) {
        self.counters.handovers += 1;
        let Some(Some(Held::Proxied(flow))) =
            self.slots.get_mut(slot as usize).map(|s| s.held.as_mut())
        else {
            return;
        };
        if let Some(owed) = flow.proxy.owed() {
            self.counters.handover_owed_bytes +=
                owed.iter().map(|stream| stream.stats().bytes).sum::<u64>();
        }
        if let Some(entry) = flows.get_mut(&flow.key, flow.hash) {
            entry.set_mode(FlowMode::Bypass);
            entry.set_handover(cause);
            entry.set_proxy_link(ProxyLink::Slot(slot));
        }
    }

    /// A handed-over flow owes nothing more: the proxy goes, and the translations stay when the
    /// legs' numbers differ.
    fn finish_handover(
        &mut self,
        flows: &mut FlowTable,
        slot: u32,
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) {
        let Some(flow) = self.proxied_mut(slot) else {
            return;
        };
        let (key, hash) = (flow.key, flow.hash);
        let translations = [Direction::ClientToServer, Direction::ServerToClient]
            .map(|d| flow.proxy.translation(d).copied().unwrap_or_default());
        self.free_slot(flows, slot, false, now, sink);
        if let Some(entry) = flows.get_mut(&key, hash) {
            // Pass-through from here on; nothing of the proxy's is left to find.
            entry.set_proxy_link(ProxyLink::None);
        }
        if translations.iter().all(Translation::is_identity) {
            return;
        }
        let kept = self.store(Held::Translated(Box::new(TranslatedFlow {
            translations,
            key,
            hash,
        })));
        if let Some(entry) = flows.get_mut(&key, hash) {
            entry.set_proxy_link(ProxyLink::Slot(kept));
        }
    }

    /// Empties a slot; `abort` resets a live connection's legs first.
    fn free_slot(
        &mut self,
        flows: &mut FlowTable,
        slot: u32,
        abort: bool,
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) {
        let Some(held) = self
            .slots
            .get_mut(slot as usize)
            .and_then(|s| s.held.take())
        else {
            return;
        };
        self.free.push(slot);
        let mut reset = false;
        let (key, hash) = match held {
            Held::Translated(t) => (t.key, t.hash),
            Held::Proxied(mut flow) => {
                if abort && !matches!(flow.proxy.state(), ProxyState::TimeWait) {
                    // `abort` resets the legs of a connection not over yet.
                    reset = !matches!(
                        flow.proxy.state(),
                        ProxyState::Closed | ProxyState::PassThrough
                    );
                    flow.proxy.abort(now);
                    while let Some((leg, transmit)) = flow.proxy.poll_transmit(now) {
                        let side = flow.client_side;
                        Self::send_on(
                            &mut flow.addressing,
                            side,
                            leg,
                            &transmit,
                            sink,
                            &mut self.counters,
                        );
                    }
                }
                self.proxied -= 1;
                if flow.embryonic {
                    self.embryonic -= 1;
                    self.sources.closed(flow.source);
                }
                if let Some(owed) = flow.proxy.owed() {
                    for stream in owed.iter() {
                        let stats = stream.stats();
                        if stats.bytes == 0 && stats.segments_sent == 0 {
                            continue;
                        }
                        self.counters.handover_retransmissions += stats.retransmissions;
                        match stream.state() {
                            OwedState::Delivered => self.counters.handover_delivered += 1,
                            // Still sending when the flow goes: given up on with it.
                            OwedState::Sending | OwedState::Abandoned => {
                                self.counters.handover_abandoned += 1
                            }
                        }
                    }
                }
                let stats = flow.proxy.stats();
                for (i, leg) in [stats.client, stats.server].iter().enumerate() {
                    if let Some(leg) = leg {
                        self.retransmissions_gone[i] += leg.tcp.retransmissions;
                        self.out_of_order_gone.0 += leg.tcp.out_of_order_discarded;
                        self.out_of_order_gone.1 += leg.tcp.out_of_order_discarded_bytes;
                        self.ecn_gone.add(&leg.tcp);
                    }
                }
                (flow.key, flow.hash)
            }
        };
        if let Some(entry) = flows.get_mut(&key, hash) {
            if entry.proxy_slot() == Some(slot) {
                entry.set_proxy_link(ProxyLink::Finished);
            }
        }
        if reset {
            flows.record_own_reset(&key, hash);
        }
    }

    fn send(
        &mut self,
        addressing: &mut FlowAddressing,
        client_side: PortSide,
        leg: Leg,
        transmit: &Transmit<P>,
        sink: &mut impl FrameSink<P>,
    ) {
        Self::send_on(
            addressing,
            client_side,
            leg,
            transmit,
            sink,
            &mut self.counters,
        );
    }

    fn send_on(
        addressing: &mut FlowAddressing,
        client_side: PortSide,
        leg: Leg,
        transmit: &Transmit<P>,
        sink: &mut impl FrameSink<P>,
        counters: &mut ProxyCounters,
    ) {
        let mut headers = [0u8; MAX_HEADERS_LEN];
        let payload = transmit.payload.as_ref();
        let bytes = payload.map_or(&[][..], |p| p.bytes());
        let len = addressing.write_headers(leg, &transmit.header, bytes, &mut headers);
        if !sink.send(side_of(client_side, leg), &headers[..len], payload) {
            counters.emit_failures += 1;
        }
    }

    /// Runs the timers due at `now`.
    pub fn on_timers(&mut self, flows: &mut FlowTable, now: u64, sink: &mut impl FrameSink<P>) {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.slots.get(slot as usize).map(|s| s.generation) != Some(generation) {
                continue;
            }
            let Some(flow) = self.proxied_mut(slot) else {
                continue;
            };
            if flow.scheduled != at {
                continue;
            }
            flow.scheduled = u64::MAX;
            flow.proxy.on_timer(now);
            self.drive(flows, slot, now, sink);
        }
    }

    /// A segment of a flow handed over to pass-through (`tcp_bytes`: the TCP header and
    /// payload, as received): shown to the proxy while it still owes bytes, then rewritten in
    /// place with its direction's translation. False if the slot holds no handed-over flow or
    /// the segment cannot be read: it is forwarded as it is, and counted
    /// (`handover_untranslated`).
    pub fn pass_through(
        &mut self,
        flows: &mut FlowTable,
        slot: u32,
        from_client: bool,
        tcp_bytes: &mut [u8],
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) -> bool {
        let translated = self.translate(flows, slot, from_client, tcp_bytes, now, sink);
        if !translated {
            self.counters.handover_untranslated += 1;
        }
        translated
    }

    fn translate(
        &mut self,
        flows: &mut FlowTable,
        slot: u32,
        from_client: bool,
        tcp_bytes: &mut [u8],
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) -> bool {
        let direction = if from_client {
            Direction::ClientToServer
        } else {
            Direction::ServerToClient
        };
        let translation = match self
            .slots
            .get_mut(slot as usize)
            .and_then(|s| s.held.as_mut())
        {
            Some(Held::Translated(t)) => t.translations[direction.index()],
            Some(Held::Proxied(flow)) if flow.proxy.state() == ProxyState::PassThrough => {
                let header = match TcpSegment::new_checked(&*tcp_bytes) {
                    Ok(segment) => SegmentHeader::parse(&segment),
                    Err(malformed) => Err(malformed),
                };
                let Ok(header) = header else {
                    return false;
                };
                let leg = if from_client {
                    Leg::Client
                } else {
                    Leg::Server
                };
                flow.proxy.on_passthrough(leg, &header, now);
                let translation = flow.proxy.translation(direction).copied();
                self.drive(flows, slot, now, sink);
                match translation {
                    Some(translation) => translation,
                    None => return false,
                }
            }
            _ => return false,
        };
        translation.is_identity() || translation.apply(tcp_bytes).is_ok()
    }

    /// The flow's entry is going away (it expired): resets a live connection's legs and frees
    /// the slot.
    pub fn release(
        &mut self,
        flows: &mut FlowTable,
        slot: u32,
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) {
        self.free_slot(flows, slot, true, now, sink);
    }

    /// An operator's `flows clear` of a flow in proxy mode whose connection the proxy holds in
    /// `slot`. Reset: both legs are reset and the slot freed, and the entry stays, closed, for
    /// the closed timeout, so that the segments still in flight from either end meet it (and
    /// are ignored, as those of any connection the proxy has finished) instead of making a new
    /// flow, oriented by whichever end spoke first. Hand over: the flow is handed over to
    /// pass-through as a policy change would hand it, or kept proxied when it cannot be.
    pub fn clear(
        &mut self,
        flows: &mut FlowTable,
        slot: u32,
        action: ClearAction,
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) -> Cleared {
        if action == ClearAction::HandOver && self.proxied_mut(slot).is_some() {
            return match self.convert(flows, slot, HandoverCause::Operator, now, sink) {
                Ok(()) => Cleared::HandedOver,
                Err(ConvertError::HandshakeInProgress) => {
                    Cleared::Kept(KeptReason::HandshakeInProgress)
                }
                // In TIME-WAIT, or one leg closed for good: it ends proxied, moments from now.
                Err(ConvertError::Closing | ConvertError::Finished) => {
                    Cleared::Kept(KeptReason::Closing)
                }
            };
        }
        let held = match self.slots.get(slot as usize).and_then(|s| s.held.as_ref()) {
            Some(Held::Proxied(flow)) => Some((flow.key, flow.hash)),
            Some(Held::Translated(t)) => Some((t.key, t.hash)),
            None => None,
        };
        self.free_slot(flows, slot, true, now, sink);
        if let Some((key, hash)) = held {
            flows.update(&key, hash, FlowEntry::close_by_reset);
        }
        Cleared::Reset
    }

    /// After a policy change applied to live flows: proxied flows whose entry is no longer in
    /// proxy mode are handed over to pass-through (bypass) or reset (drop). Returns how many.
    pub fn reclassify(
        &mut self,
        flows: &mut FlowTable,
        now: u64,
        sink: &mut impl FrameSink<P>,
    ) -> usize {
        let mut changed = 0;
        for slot in 0..self.slots.len() as u32 {
            let Some(flow) = self.proxied_mut(slot) else {
                continue;
            };
            if flow.proxy.state() == ProxyState::PassThrough {
                // Handed over already, delivering what it owes.
                continue;
            }
            let (key, hash) = (flow.key, flow.hash);
            let mode = flows.get(&key, hash).map(|e| e.mode());
            match mode {
                Some(FlowMode::Proxy) => {}
                Some(FlowMode::Bypass) => {
                    changed += 1;
                    match self.convert(flows, slot, HandoverCause::Policy, now, sink) {
                        Ok(()) => {}
                        // A handshake half done cannot be handed over; the client's next SYN
                        // starts a bypassed flow.
                        Err(ConvertError::HandshakeInProgress) => {
                            self.free_slot(flows, slot, true, now, sink)
                        }
                        Err(ConvertError::Finished) => {
                            self.free_slot(flows, slot, false, now, sink)
                        }
                        // Closing for good: it ends proxied, as it would have in a moment.
                        Err(ConvertError::Closing) => {
                            if let Some(entry) = flows.get_mut(&key, hash) {
                                entry.set_mode(FlowMode::Proxy);
                            }
                        }
                    }
                }
                Some(FlowMode::Drop) | None => {
                    changed += 1;
                    self.free_slot(flows, slot, true, now, sink);
                }
            }
        }
        changed
    }

    /// The proxy's view of a flow, for `flows list`.
    pub fn view(&self, slot: u32) -> Option<ProxyFlowView> {
        match self.slots.get(slot as usize)?.held.as_ref()? {
            Held::Translated(_) => Some(ProxyFlowView {
                state: ProxyState::PassThrough,
                handed_over: Some(HandedOver::Translated),
                ..ProxyFlowView::default()
            }),
            Held::Proxied(flow) => {
                let stats = flow.proxy.stats();
                let leg = |leg: Option<crate::tcp::proxy::LegStats>| {
                    leg.map(|l| LegView {
                        state: l.state,
                        retransmissions: l.tcp.retransmissions,
                        srtt_ms: l.tcp.srtt_ms,
                        rto_ms: l.tcp.rto_ms,
                        cwnd: l.tcp.cwnd as u64,
                        send_buffered: l.tcp.send_buffered as u64,
                        out_of_order_received: l.tcp.out_of_order_received,
                        ecn: l.tcp.ecn,
                    })
                };
                Some(ProxyFlowView {
                    state: stats.state,
                    client_leg: leg(stats.client),
                    server_leg: leg(stats.server),
                    buffered_client_to_server: stats.buffered_client_to_server as u64,
                    buffered_server_to_client: stats.buffered_server_to_client as u64,
                    stalls: stats.stalls,
                    handed_over: flow.handed_over.map(HandedOver::from),
                })
            }
        }
    }

    /// The counters, with the gauges and the live flows' retransmissions and out-of-order
    /// discards read now (the buffered bytes are also what the memory budget is checked
    /// against until the next call). Walks every proxied flow: call it at the reporting
    /// interval, not per packet.
    pub fn counters(&mut self) -> ProxyCounters {
        let mut counters = self.counters;
        counters.connections_active = self.proxied as u64;
        let mut retransmissions = self.retransmissions_gone;
        let mut out_of_order = self.out_of_order_gone;
        let mut ecn = self.ecn_gone;
        let mut buffered = 0u64;
        let mut open = 0u64;
        for slot in &self.slots {
            if let Some(Held::Proxied(flow)) = &slot.held {
                let proxy = &flow.proxy;
                open += u64::from(proxy.state() != ProxyState::TimeWait);
                buffered += (proxy.buffered(Direction::ClientToServer)
                    + proxy.buffered(Direction::ServerToClient)) as u64;
                // The legs' last counters too once a hand-over has ended them, so that no
                // counter goes back while the flow delivers what it owes.
                let stats = proxy.stats();
                for (i, leg) in [stats.client, stats.server].iter().enumerate() {
                    if let Some(leg) = leg {
                        retransmissions[i] += leg.tcp.retransmissions;
                        out_of_order.0 += leg.tcp.out_of_order_discarded;
                        out_of_order.1 += leg.tcp.out_of_order_discarded_bytes;
                        ecn.add(&leg.tcp);
                    }
                }
            }
        }
        counters.retransmissions_client_leg = retransmissions[Leg::Client.index()];
        counters.retransmissions_server_leg = retransmissions[Leg::Server.index()];
        (
            counters.out_of_order_discarded,
            counters.out_of_order_discarded_bytes,
        ) = out_of_order;
        counters.ecn_legs = ecn.legs;
        counters.ecn_ce_received = ecn.ce_received;
        counters.ecn_ece_received = ecn.ece_received;
        counters.ecn_cwnd_reductions = ecn.cwnd_reductions;
        counters.buffered_bytes = buffered;
        counters.connections_open = open;
        self.buffered = buffered as usize;
        counters
    }

    /// Per signature, in the inspector's order: flows reset.
    /// Moves the exception actions taken on single flows since the last call into `into`.
    pub fn take_notices(&mut self, into: &mut Notices) {
        self.notices.move_into(into);
    }

    pub fn signature_hits(&self) -> &[u64] {
        &self.signature_hits
    }

    /// Per rule id, for rules whose connection limits refused new flows on this worker: how
    /// many, by limit and by action.
    pub fn limit_hits(&self) -> &[(u32, LimitCounters)] {
        &self.limit_hits
    }

    /// Forgets the refusals counted for rules that are gone (`keep` says which stay).
    pub fn retain_limit_hits(&mut self, keep: impl Fn(u32) -> bool) {
        self.limit_hits.retain(|(rule, _)| keep(*rule));
    }
}

#[cfg(test)]
mod source_budget_tests {
    use super::SourceBudget;

    #[test]
    fn a_source_past_its_bound_gets_cookies_until_quiet_for_the_hold() {
        let mut b = SourceBudget::new(2);
        let a = b.bucket_of("198.18.0.1".parse().unwrap());
        assert!(!b.over(a, 0));
        b.opened(a);
        assert!(!b.over(a, 0));
        b.opened(a);
        assert!(b.over(a, 1_000), "two in progress: the bound");
        // Both handshakes end, but the source keeps sending: cookies from there on.
        b.closed(a);
        b.closed(a);
        assert!(b.over(a, 1_000 + SourceBudget::HOLD_MS - 1));
        let last = 1_000 + SourceBudget::HOLD_MS - 1;
        assert!(b.over(a, last + SourceBudget::HOLD_MS - 1));
        let last = last + SourceBudget::HOLD_MS - 1;
        // Quiet for the hold: handshakes again.
        assert!(!b.over(a, last + SourceBudget::HOLD_MS));
    }

    #[test]
    fn counts_stay_in_their_bucket_and_never_wrap() {
        let mut b = SourceBudget::new(1);
        let a = b.bucket_of("198.18.0.1".parse().unwrap());
        let others: Vec<u16> = (2..=40u8)
            .map(|i| b.bucket_of(std::net::IpAddr::from([198, 18, 0, i])))
            .filter(|&o| o != a)
            .collect();
        assert!(others.len() > 30, "addresses spread over the buckets");
        b.closed(a);
        assert!(!b.over(a, 0), "no underflow");
        b.opened(a);
        assert!(b.over(a, 0));
        assert!(others.iter().all(|&o| !b.over(o, 0)));
        assert_eq!(
            b.bucket_of("198.18.0.1".parse().unwrap()),
            a,
            "one address, one bucket"
        );
    }
}
