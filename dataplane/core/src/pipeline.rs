//! The per-frame decision, free of I/O: parse, steer, track the flow, and
//! say what to do with the frame. The DPDK worker is a thin loop around it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::policy::{FlowFields, RuleHits};

use crate::counters::{DropReason, WorkerCounters};
use crate::flow::{
    Direction, EntryHint, FlowEntry, FlowKey, FlowMode, FlowTable, FlowTableConfig, Observation,
    PacketMeta, ProxyLink,
};
use crate::ip_reassembly::tcp_fragment;
use crate::policy::CompiledPolicy;
use crate::proxy::{MidstreamAction, ProxyTarget};
use crate::rss::RssSteering;
use crate::wire::ip::PROTO_TCP;
use crate::wire::{common_ipv4, parse_frame, Fragment, Malformed};

/// Which of the two ports a frame came in on (a flow's ingress, in a rule's match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum PortSide {
    /// Faces the clients (the protected side).
    Inside = 0,
    /// Faces the servers.
    Outside = 1,
}

impl PortSide {
    pub const BOTH: [PortSide; 2] = [PortSide::Inside, PortSide::Outside];

    /// A bump in the wire sends what comes in on one side out of the other.
    #[inline(always)]
    pub fn other(self) -> PortSide {
        match self {
            PortSide::Inside => PortSide::Outside,
            PortSide::Outside => PortSide::Inside,
        }
    }

    #[inline(always)]
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            PortSide::Inside => "inside",
            PortSide::Outside => "outside",
        }
    }
}

impl std::str::FromStr for PortSide {
    type Err = String;
    fn from_str(s: &str) -> Result<PortSide, String> {
        match s {
            "inside" => Ok(PortSide::Inside),
            "outside" => Ok(PortSide::Outside),
            _ => Err(format!("{s:?} is not a port: use inside or outside")),
        }
    }
}

impl std::fmt::Display for PortSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward(PortSide),
    Drop(DropReason),
    /// Another worker owns this frame's flow: hand the frame over.
    HandOff(usize),
    /// A TCP segment of a proxied flow: the worker's proxy table takes it.
    Proxy(ProxyTarget),
    /// An IP fragment of a TCP datagram, for this worker's reassembly table: only the whole
    /// datagram says which flow it belongs to.
    Reassemble,
    /// A segment of a flow handed over from the proxy to pass-through whose two legs' numbers
    /// differ: forward it with the translation kept in the proxy table's `slot`.
    Translate {
        slot: u32,
        from_client: bool,
        egress: PortSide,
    },
}

/// The classification fields of a live flow, initiator first.
pub fn entry_fields(e: &FlowEntry) -> crate::policy::FlowFields {
    let (src, dst) = e.key().endpoints(e.initiator());
    crate::policy::FlowFields {
        proto: e.key().protocol(),
        src: src.ip(),
        dst: dst.ip(),
        src_port: src.port(),
        dst_port: dst.port(),
        ingress: e.ingress(),
        vlan: e.vlan(),
    }
}

/// The classification fields of a new flow's first frame, which are those
/// of `policy::flow_fields` over the frame's parse: the new entry holds the
/// frame's addresses, ports and ingress, so nothing of the parse need be
/// kept until the lookup. The VLAN comes as parsed, since the entry stores a
/// priority tag (id 0) as none.
fn first_frame_fields(e: &FlowEntry, vlan: Option<u16>) -> FlowFields {
    FlowFields {
        vlan,
        ..entry_fields(e)
    }
}

/// A frame between [`Pipeline::prepare`] and [`Pipeline::finish`].
#[derive(Debug, Clone, Copy)]
pub enum Prepared {
    /// Decided without the flow table: malformed, not IP, or another
    /// worker's.
    Decided(Verdict),
    /// Waiting for its flow lookup.
    Lookup(Lookup),
}

impl Prepared {
    /// A placeholder for the slots of a burst array past the burst's end.
    pub const NONE: Prepared = Prepared::Decided(Verdict::Drop(DropReason::Malformed));
}

/// What the flow lookup of a frame needs, and a new flow's classification.
/// Kept small: a burst's worth sits on the stack between the stages.
#[derive(Debug, Clone, Copy)]
pub struct Lookup {
    meta: PacketMeta,
    hint: EntryHint,
    vlan: Option<u16>,
    ingress: PortSide,
}

/// Software steering: this worker's index among `workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steer {
    pub worker: usize,
    pub workers: usize,
}

/// Symmetric RSS, as reassembly needs it: what the ports' RSS computes, and the queue this
/// worker polls on each port.
#[derive(Debug, Clone)]
pub struct RssQueue {
    pub steering: Arc<RssSteering>,
    pub queue: u16,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub flows: FlowTableConfig,
    pub malformed: FrameAction,
    pub on_table_full: FrameAction,
    /// Keep the keys of new flows for the cross-worker split audit.
    pub audit_new_flows: bool,
    /// `proxy.on_midstream`, for the RSTs of no known flow, which never reach the proxy.
    pub on_midstream: MidstreamAction,
    /// `reassembly.enabled`: TCP fragments go to reassembly rather than through as they are.
    pub reassembly: bool,
    /// Under symmetric RSS: where the NIC sends a reassembled datagram's flow. Without it,
    /// fragments that come with a NIC hash pass as they are.
    pub rss: Option<RssQueue>,
}

pub struct Pipeline {
    flows: FlowTable,
    policy: Arc<CompiledPolicy>,
    /// Per rule id: flows classified, and their packets and bytes since.
    hits: Vec<RuleHits>,
    malformed: FrameAction,
    on_table_full: FrameAction,
    audit_new_flows: bool,
    on_midstream: MidstreamAction,
    reassembly: bool,
    rss: Option<RssQueue>,
    new_flows: Vec<FlowKey>,
    pub counters: WorkerCounters,
}

impl Pipeline {
    pub fn new(config: PipelineConfig, policy: Arc<CompiledPolicy>) -> Pipeline {
        Pipeline {
            flows: FlowTable::new(config.flows),
            hits: vec![RuleHits::default(); policy.rule_slots],
            policy,
            malformed: config.malformed,
            on_table_full: config.on_table_full,
            audit_new_flows: config.audit_new_flows,
            on_midstream: config.on_midstream,
            reassembly: config.reassembly,
            rss: config.rss,
            new_flows: Vec::with_capacity(256),
            counters: WorkerCounters::default(),
        }
    }

    /// Decides the fate of one frame. `nic_hash` is the NIC's symmetric RSS
    /// hash when both ports provide one; `steer` is set under software
    /// steering for frames this worker received from a port (frames handed
    /// over by another worker are already at their owner).
    ///
    /// One frame at a time: [`Pipeline::prepare`], then
    /// [`Pipeline::finish`]. The worker runs those stages burst-wide.
    #[inline]
    pub fn handle(
        &mut self,
        frame: &[u8],
        ingress: PortSide,
        nic_hash: Option<u32>,
        steer: Option<Steer>,
        now_ms: u64,
    ) -> Verdict {
        let prepared = self.prepare(frame, ingress, nic_hash, steer);
        self.finish(&prepared, now_ms)
    }

    /// The first stage of [`Pipeline::handle`]: everything that needs only
    /// the frame (parsing, the flow key and hash, steering), ending with the
    /// prefetch of the flow's index line. Frames that need no flow lookup
    /// are decided here.
    ///
    /// Frames of the common shape (untagged IPv4/TCP or UDP without options
    /// or fragmentation) skip the general parser: in `perf/benches/pipeline.rs`
    /// that took 16 % off a frame's cost at 1 and 1k flows, 7 % at 1M.
    ///
    /// This stage, `prefetch_entry` and `finish` are always inlined so the
    /// worker's burst loop and the pipeline benchmark run the same code,
    /// whatever other callers they gain (see `parse_frame`).
    #[inline(always)]
    pub fn prepare(
        &mut self,
        frame: &[u8],
        ingress: PortSide,
        nic_hash: Option<u32>,
        steer: Option<Steer>,
    ) -> Prepared {
        let egress = ingress.other();
        let (key, orientation, tcp_flags, vlan) = match common_ipv4(frame) {
            Some(c) => {
                let (key, orientation) =
                    FlowKey::from_ipv4(c.src, c.dst, c.protocol, c.src_port, c.dst_port);
                (key, orientation, c.tcp_flags, None)
            }
            None => {
                let summary = match parse_frame(frame) {
                    Ok(summary) => summary,
                    Err(reason) => {
                        // A first fragment too short for its TCP header does not parse; the
                        // reassembly counts it for what it is (RFC 1858).
                        if let Some(prepared) = self.fragment(frame, nic_hash, steer) {
                            return prepared;
                        }
                        return self.malformed(reason, egress);
                    }
                };
                let Some(ip) = summary.ip else {
                    self.counters.non_ip += 1;
                    return Prepared::Decided(Verdict::Forward(egress));
                };
                if ip.fragment != Fragment::None && ip.protocol == PROTO_TCP {
                    if let Some(prepared) = self.fragment(frame, nic_hash, steer) {
                        return prepared;
                    }
                }
                let (src_port, dst_port) = ip.ports.unwrap_or((0, 0));
                let (key, orientation) =
                    FlowKey::from_packet(ip.src, ip.dst, ip.protocol, src_port, dst_port);
                (key, orientation, ip.tcp_flags, summary.vlan)
            }
        };
        let hash = match nic_hash {
            Some(h) => FlowTable::spread_hash(h),
            None => key.software_hash(),
        };
        if let Some(steer) = steer {
            let owner = FlowTable::shard_of(hash, steer.workers);
            if owner != steer.worker {
                self.counters.handoff_out += 1;
                return Prepared::Decided(Verdict::HandOff(owner));
            }
        }
        self.flows.prefetch_index(hash);
        Prepared::Lookup(Lookup {
            meta: PacketMeta {
                key,
                orientation,
                hash,
                len: frame.len() as u32,
                tcp_flags,
                ingress,
            },
            hint: EntryHint::NONE,
            vlan,
            ingress,
        })
    }

    /// A fragment of a TCP datagram goes to reassembly, where all the fragments of its datagram
    /// meet: later fragments have no ports, so they are steered by addresses alone. In software,
    /// that is the worker the address pair picks; under symmetric RSS, the NIC hashed them on
    /// their addresses too (fragments are RSS's IP flow types, never TCP), so it is the worker
    /// that received them. The whole datagram then goes to its flow's worker
    /// ([`Pipeline::prepare_whole`]). With a NIC hash but no knowledge of the port's RSS
    /// ([`PipelineConfig::rss`]), the flow's worker cannot be told: fragments pass as they are.
    #[cold]
    fn fragment(
        &mut self,
        frame: &[u8],
        nic_hash: Option<u32>,
        steer: Option<Steer>,
    ) -> Option<Prepared> {
        if !self.reassembly {
            return None;
        }
        let info = tcp_fragment(frame)?;
        if nic_hash.is_some() {
            let rss = self.rss.as_ref()?;
            return rss
                .steering
                .hashes(info.key.src)
                .then_some(Prepared::Decided(Verdict::Reassemble));
        }
        if let Some(steer) = steer {
            let (key, _) = FlowKey::from_packet(info.key.src, info.key.dst, PROTO_TCP, 0, 0);
            let owner = FlowTable::shard_of(key.software_hash(), steer.workers);
            if owner != steer.worker {
                self.counters.handoff_out += 1;
                return Some(Prepared::Decided(Verdict::HandOff(owner)));
            }
        }
        Some(Prepared::Decided(Verdict::Reassemble))
    }

    /// [`Pipeline::prepare`] for a datagram reassembled on this worker. Under symmetric RSS it
    /// goes to the worker whose queue the redirection table names for the hash the NIC would
    /// have given it whole, and there takes that hash where the NIC hands its hashes over
    /// (`nic_hashed`: its fragments came with one), so that its flow entry is the one the
    /// flow's other packets find. Under software steering it goes where its flow's hash says,
    /// as any frame.
    #[cold]
    pub fn prepare_whole(
        &mut self,
        frame: &[u8],
        ingress: PortSide,
        steer: Option<Steer>,
        nic_hashed: bool,
    ) -> Prepared {
        let Some(rss) = &self.rss else {
            return self.prepare(frame, ingress, None, steer);
        };
        let hash = parse_frame(frame).ok().and_then(|summary| {
            let ip = summary.ip?;
            let (src_port, dst_port) = ip.ports?;
            rss.steering.tcp_hash(ip.src, ip.dst, src_port, dst_port)
        });
        let Some(hash) = hash else {
            // Not a TCP segment after all: nothing here names its flow.
            return self.prepare(frame, ingress, None, None);
        };
        let queue = usize::from(rss.steering.queue(hash));
        if queue != usize::from(rss.queue) {
            self.counters.handoff_out += 1;
            return Prepared::Decided(Verdict::HandOff(queue));
        }
        self.prepare(frame, ingress, nic_hashed.then_some(hash), None)
    }

    /// Counts a frame the general parser rejected, and decides it as configured.
    #[cold]
    fn malformed(&mut self, reason: Malformed, egress: PortSide) -> Prepared {
        self.counters.malformed[reason.index()] += 1;
        Prepared::Decided(match self.malformed {
            FrameAction::Forward => {
                self.counters.malformed_forwarded += 1;
                Verdict::Forward(egress)
            }
            FrameAction::Drop => Verdict::Drop(DropReason::Malformed),
        })
    }

    /// The middle stage: once the index line `prepare` asked for has had time
    /// to arrive, starts loading the flow entry it points at, and notes where
    /// that is for `finish`.
    #[inline(always)]
    pub fn prefetch_entry(&self, prepared: &mut Prepared) {
        if let Prepared::Lookup(lookup) = prepared {
            lookup.hint = self.flows.prefetch_entry(lookup.meta.hash);
        }
    }

    /// The last stage of [`Pipeline::handle`]: the flow lookup, creation and
    /// classification of a new flow, and the verdict.
    #[inline(always)]
    pub fn finish(&mut self, prepared: &Prepared, now_ms: u64) -> Verdict {
        let lookup = match prepared {
            Prepared::Decided(verdict) => return *verdict,
            Prepared::Lookup(lookup) => lookup,
        };
        let Lookup {
            meta,
            hint,
            vlan,
            ingress,
        } = lookup;
        let egress = ingress.other();
        let policy = &self.policy;
        let mut first = false;
        let entry = match self.flows.observe_hinted(meta, *hint, now_ms, |e| {
            let d = policy.decide(&first_frame_fields(e, *vlan));
            e.classify(d.mode, d.rule, d.idle_timeout_s);
            e.set_vlan(*vlan);
            // A RST ends whatever it belongs to: one of no known flow starts nothing worth an
            // entry (conntrack finds it invalid). Otherwise the RSTs a client's kernel sends
            // back for SYN cookie answers it never asked for would each take one.
            !e.tcp().rst_seen()
        }) {
            Observation::Existing(entry) => entry,
            Observation::Untracked(entry) => {
                self.counters.flows_untracked_rst += 1;
                return match entry.mode() {
                    FlowMode::Drop => Verdict::Drop(DropReason::Policy),
                    FlowMode::Proxy if self.on_midstream == MidstreamAction::Drop => {
                        Verdict::Drop(DropReason::TcpNotSyn)
                    }
                    FlowMode::Proxy | FlowMode::Bypass => Verdict::Forward(egress),
                };
            }
            Observation::Created(entry) => {
                first = true;
                self.counters.flows_created += 1;
                if self.audit_new_flows {
                    self.new_flows.push(meta.key);
                }
                if let Some(h) = self.hits.get_mut(entry.rule() as usize) {
                    h.flows += 1;
                }
                entry
            }
            Observation::Full => {
                self.counters.flows_table_full += 1;
                return match self.on_table_full {
                    FrameAction::Forward => Verdict::Forward(egress),
                    FrameAction::Drop => Verdict::Drop(DropReason::TableFull),
                };
            }
        };
        if entry.rule() != 0 {
            if let Some(h) = self.hits.get_mut(entry.rule() as usize) {
                h.packets += 1;
                h.bytes += u64::from(meta.len);
            }
        }
        let from_client = entry.direction(meta.orientation) == Direction::ClientToServer;
        match entry.mode() {
            FlowMode::Drop => Verdict::Drop(DropReason::Policy),
            FlowMode::Bypass => match entry.proxy_link() {
                ProxyLink::Slot(slot) => Verdict::Translate {
                    slot,
                    from_client,
                    egress,
                },
                _ => Verdict::Forward(egress),
            },
            // Later fragments carry no TCP header: only whole segments (and first fragments,
            // which the proxy refuses) reach it.
            FlowMode::Proxy if meta.key.protocol() == PROTO_TCP && meta.tcp_flags.is_some() => {
                Verdict::Proxy(ProxyTarget {
                    hash: meta.hash,
                    link: entry.proxy_link(),
                    from_client,
                    rule: entry.rule(),
                    ingress: *ingress,
                    first,
                })
            }
            FlowMode::Proxy => Verdict::Forward(egress),
        }
    }

    /// Ages out idle and finished flows, handing each expired entry to `on_expired`; call
    /// between bursts.
    pub fn expire_with(&mut self, now_ms: u64, on_expired: impl FnMut(FlowEntry)) {
        self.counters.flows_expired += self.flows.expire_with(now_ms, on_expired) as u64;
    }

    /// The last expiry stopped at its budget: call it again between the next bursts.
    pub fn expiry_behind(&self) -> bool {
        self.flows.expiry_behind()
    }

    /// Keys of flows created since the last call, for the split audit.
    pub fn take_new_flows(&mut self) -> Vec<FlowKey> {
        std::mem::replace(&mut self.new_flows, Vec::with_capacity(256))
    }

    pub fn has_new_flows(&self) -> bool {
        !self.new_flows.is_empty()
    }

    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    pub fn flows_mut(&mut self) -> &mut FlowTable {
        &mut self.flows
    }

    pub fn policy(&self) -> &Arc<CompiledPolicy> {
        &self.policy
    }

    /// Switches to a new policy generation. New flows are classified by it;
    /// live flows keep their mode unless [`Pipeline::reclassify`] runs.
    pub fn set_policy(&mut self, policy: Arc<CompiledPolicy>) {
        if self.hits.len() < policy.rule_slots {
            self.hits.resize(policy.rule_slots, RuleHits::default());
        }
        self.policy = policy;
    }

    /// Applies the current policy to every live flow, as if each were new;
    /// returns how many changed mode or rule.
    pub fn reclassify(&mut self) -> u64 {
        let policy = &self.policy;
        let hits = &mut self.hits;
        self.flows.update_all(|e| {
            if e.mode() == FlowMode::Bypass && e.proxy_slot().is_some() {
                // Handed over from the proxy mid-connection: it cannot be proxied again, and
                // its translations must stay with it.
                return false;
            }
            let d = policy.decide(&entry_fields(e));
            if d.mode == e.mode() && d.rule == e.rule() && d.idle_timeout_s == e.idle_timeout_s() {
                return false;
            }
            e.classify(d.mode, d.rule, d.idle_timeout_s);
            if let Some(h) = hits.get_mut(d.rule as usize) {
                h.flows += 1;
            }
            true
        }) as u64
    }

    /// Per rule id: hit counters.
    pub fn hits(&self) -> &[RuleHits] {
        &self.hits
    }

    /// The flow key of an IP frame, for tests and tools.
    pub fn key_of(frame: &[u8]) -> Option<FlowKey> {
        let ip = parse_frame(frame).ok()?.ip?;
        let (s, d) = ip.ports.unwrap_or((0, 0));
        Some(FlowKey::from_packet(ip.src, ip.dst, ip.protocol, s, d).0)
    }
}

/// What to do with a frame that cannot be handled as asked: pass it on (a
/// bump in the wire that fails open) or drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FrameAction {
    #[default]
    Forward,
    Drop,
}

impl std::str::FromStr for FrameAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "forward" => Ok(FrameAction::Forward),
            "drop" => Ok(FrameAction::Drop),
            other => Err(format!("{other:?} is not an action: use forward or drop")),
        }
    }
}

impl std::fmt::Display for FrameAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameAction::Forward => "forward",
            FrameAction::Drop => "drop",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{self, Addressing, TcpHeader};
    use crate::wire::tcp::flags;

    /// The fields classification looks at, from a flow's first frame, read from its full
    /// parse: the reference `first_frame_fields` must agree with.
    fn flow_fields(
        ip: &crate::wire::IpSummary,
        ingress: PortSide,
        vlan: Option<u16>,
    ) -> crate::policy::FlowFields {
        let (src_port, dst_port) = ip.ports.unwrap_or((0, 0));
        FlowFields {
            proto: ip.protocol,
            src: ip.src,
            dst: ip.dst,
            src_port,
            dst_port,
            ingress,
            vlan,
        }
    }

    fn policy(rules: &[&str]) -> Arc<CompiledPolicy> {
        policy_with(crate::policy::Action::Proxy, rules)
    }

    fn policy_with(default_tcp: crate::policy::Action, rules: &[&str]) -> Arc<CompiledPolicy> {
        let mut set = crate::policy::PolicySet::default();
        for r in rules {
            set.add(serde_json::from_str(r).unwrap()).unwrap();
        }
        let defaults = crate::policy::PolicyDefaults {
            tcp: default_tcp,
            udp: crate::policy::Action::Bypass,
            other: crate::policy::Action::Bypass,
        };
        Arc::new(CompiledPolicy::compile(&set, defaults, 1))
    }

    fn pipeline(capacity: usize, malformed: FrameAction, on_full: FrameAction) -> Pipeline {
        Pipeline::new(
            PipelineConfig {
                flows: FlowTableConfig {
                    capacity,
                    ..FlowTableConfig::default()
                },
                malformed,
                on_table_full: on_full,
                audit_new_flows: true,
                reassembly: true,
                rss: None,
                on_midstream: MidstreamAction::Bypass,
            },
            // Forwarding alone: the proxy's frames are the proxy module's tests.
            policy_with(crate::policy::Action::Bypass, &[]),
        )
    }

    #[test]
    fn segments_of_a_proxied_flow_go_to_the_proxy_and_other_frames_do_not() {
        let mut p = pipeline(16, FrameAction::Forward, FrameAction::Forward);
        p.set_policy(policy(&[]));
        let a = flow(1000);
        let Verdict::Proxy(target) = p.handle(&syn(&a), PortSide::Inside, None, None, 0) else {
            panic!("a TCP SYN under the proxy default goes to the proxy");
        };
        assert!(target.from_client);
        assert_eq!(target.ingress, PortSide::Inside);
        assert_eq!(target.link, ProxyLink::None);
        let reply = synth::tcp(
            &a.reversed(),
            TcpHeader {
                flags: flags::SYN | flags::ACK,
                ..Default::default()
            },
            b"",
        );
        let Verdict::Proxy(target) = p.handle(&reply, PortSide::Outside, None, None, 1) else {
            panic!("the reply goes to the proxy too");
        };
        assert!(!target.from_client);
        assert_eq!(
            p.handle(&synth::udp(&a, b"x"), PortSide::Inside, None, None, 2),
            Verdict::Forward(PortSide::Outside)
        );
    }

    #[test]
    fn tcp_fragments_meet_for_reassembly_on_one_worker_and_others_pass_as_before() {
        let v6 = Addressing::new(
            "[2001:db8::1]:40000".parse().unwrap(),
            "[2001:db8::2]:443".parse().unwrap(),
        );
        for a in [flow(1000), v6] {
            let data = synth::tcp(
                &a,
                TcpHeader {
                    flags: flags::ACK,
                    ..Default::default()
                },
                &[7; 3000],
            );
            let frags = synth::fragments(&data, 1232, 5);
            let mut p = pipeline(16, FrameAction::Drop, FrameAction::Forward);
            p.set_policy(policy(&[]));
            for f in &frags {
                assert_eq!(
                    p.handle(f, PortSide::Inside, None, None, 0),
                    Verdict::Reassemble
                );
            }
            // A tiny first fragment does not parse, and is reassembly's to count.
            let tiny = synth::fragments(&data, 16, 6);
            assert_eq!(
                p.handle(&tiny[0], PortSide::Inside, None, None, 0),
                Verdict::Reassemble
            );
            assert!(p.flows().is_empty(), "only a whole datagram names its flow");
            // Under software steering, the first fragment and the later ones go to one worker.
            let mut owners = std::collections::HashSet::new();
            for f in &frags {
                let steer = Steer {
                    worker: 0,
                    workers: 4,
                };
                owners.insert(match p.handle(f, PortSide::Inside, None, Some(steer), 0) {
                    Verdict::HandOff(w) => w,
                    Verdict::Reassemble => 0,
                    v => panic!("{v:?}"),
                });
            }
            assert_eq!(owners.len(), 1);
            // Under a NIC's hash whose RSS the pipeline does not know, and with reassembly off,
            // they pass as they did: the first to the proxy (which cannot take it), the others
            // untracked.
            for (nic_hash, reassembly) in [(Some(1), true), (None, false)] {
                p.reassembly = reassembly;
                assert!(matches!(
                    p.handle(&frags[0], PortSide::Inside, nic_hash, None, 0),
                    Verdict::Proxy(_)
                ));
                assert_eq!(
                    p.handle(&frags[1], PortSide::Inside, nic_hash, None, 0),
                    Verdict::Forward(PortSide::Outside)
                );
            }
            p.reassembly = true;
            // Fragments of other protocols pass as they did.
            for f in synth::fragments(&synth::udp(&a, &[1; 3000]), 1232, 8) {
                assert_eq!(
                    p.handle(&f, PortSide::Inside, None, None, 0),
                    Verdict::Forward(PortSide::Outside)
                );
            }
        }
    }

    /// Under symmetric RSS: fragments are reassembled where they arrive (the NIC hashed them on
    /// their addresses), and the whole datagram goes to the worker whose queue the redirection
    /// table names for the hash the NIC gives the flow's unfragmented segments; there it takes
    /// that hash, so the flow's entry is the one those segments find. A NIC that steers by RSS
    /// but hands no hashes over leaves the software hash to both.
    #[test]
    fn under_rss_a_reassembled_datagram_goes_to_the_worker_the_redirection_table_names() {
        use crate::ip_reassembly::{FragmentTable, Outcome, ReassemblyConfig};
        use crate::rss::{toeplitz, HashInput, RssSteering};

        const WORKERS: u16 = 4;
        // Not the hash modulo the workers: the table decides.
        let reta: Vec<u16> = (0..128u16)
            .map(|i| (WORKERS - 1) - (i / 3) % WORKERS)
            .collect();
        let steering = Arc::new(
            RssSteering::new(
                hw::SYMMETRIC_RSS_KEY.to_vec(),
                Some(HashInput::AddressesAndPorts),
                Some(HashInput::AddressesAndPorts),
                reta.clone(),
            )
            .unwrap(),
        );
        let mut workers: Vec<Pipeline> = (0..WORKERS)
            .map(|queue| {
                let mut p = pipeline(64, FrameAction::Drop, FrameAction::Forward);
                p.rss = Some(RssQueue {
                    steering: steering.clone(),
                    queue,
                });
                p.set_policy(policy(&[]));
                p
            })
            .collect();
        let mut handed = 0;
        let mut flows = 0;
        for (client, reports, ports) in [
            ("198.18.0.1", true, 40000..40016u16),
            ("[2001:db8::1]", true, 40000..40016),
            ("198.18.0.1", false, 41000..41016),
            ("[2001:db8::1]", false, 41000..41016),
        ] {
            let server: std::net::SocketAddr = if client.starts_with('[') {
                "[2001:db8:1::2]:8080".parse().unwrap()
            } else {
                "198.18.1.2:8080".parse().unwrap()
            };
            for port in ports {
                let a = Addressing::new(format!("{client}:{port}").parse().unwrap(), server);
                let (src, dst) = (a.src.ip(), a.dst.ip());
                // What the NIC computes: fragments on addresses, segments with ports too.
                let addresses = |s: std::net::IpAddr, d: std::net::IpAddr| {
                    let mut input = Vec::new();
                    for ip in [s, d] {
                        match ip {
                            std::net::IpAddr::V4(v4) => input.extend(v4.octets()),
                            std::net::IpAddr::V6(v6) => input.extend(v6.octets()),
                        }
                    }
                    toeplitz(&hw::SYMMETRIC_RSS_KEY, &input)
                };
                let fragment_hash = addresses(src, dst);
                let mut input_with_ports = Vec::new();
                for ip in [src, dst] {
                    match ip {
                        std::net::IpAddr::V4(v4) => input_with_ports.extend(v4.octets()),
                        std::net::IpAddr::V6(v6) => input_with_ports.extend(v6.octets()),
                    }
                }
                input_with_ports.extend(a.src.port().to_be_bytes());
                input_with_ports.extend(a.dst.port().to_be_bytes());
                let segment_hash = toeplitz(&hw::SYMMETRIC_RSS_KEY, &input_with_ports);
                let at = |hash: u32| usize::from(reta[hash as usize % reta.len()]);
                let (received, owner) = (at(fragment_hash), at(segment_hash));

                // The handshake's SYN, unfragmented, on its queue.
                assert!(matches!(
                    workers[owner].handle(
                        &syn(&a),
                        PortSide::Inside,
                        reports.then_some(segment_hash),
                        None,
                        0
                    ),
                    Verdict::Proxy(_)
                ));
                flows += 1;

                let data = synth::tcp(
                    &a,
                    TcpHeader {
                        flags: flags::ACK,
                        ..Default::default()
                    },
                    &[9; 2000],
                );
                let mut table = FragmentTable::new(ReassemblyConfig::default());
                let mut whole = None;
                for f in synth::fragments(&data, 800, u32::from(port)) {
                    let p = &mut workers[received];
                    assert_eq!(
                        p.handle(
                            &f,
                            PortSide::Inside,
                            reports.then_some(fragment_hash),
                            None,
                            1
                        ),
                        Verdict::Reassemble,
                        "reassembled where the NIC put the fragments"
                    );
                    if let Outcome::Complete(w) = table.insert(tcp_fragment(&f).unwrap(), f, 1) {
                        let mut frame = Vec::new();
                        w.write_frame(&mut frame);
                        whole = Some(frame);
                    }
                }
                let whole = whole.expect("the datagram is whole");
                let prepared =
                    workers[received].prepare_whole(&whole, PortSide::Inside, None, reports);
                let prepared = if received == owner {
                    prepared
                } else {
                    let Prepared::Decided(Verdict::HandOff(to)) = prepared else {
                        panic!("{client}:{port}: {prepared:?}, not a hand-off to {owner}");
                    };
                    assert_eq!(to, owner, "{client}:{port}");
                    handed += 1;
                    // Put together again there, where it stays.
                    workers[owner].prepare_whole(&whole, PortSide::Inside, None, reports)
                };
                let Verdict::Proxy(target) = workers[owner].finish(&prepared, 2) else {
                    panic!("{client}:{port}: the whole segment goes to the proxy");
                };
                let hash = if reports {
                    FlowTable::spread_hash(segment_hash)
                } else {
                    Pipeline::key_of(&whole).unwrap().software_hash()
                };
                assert_eq!(target.hash, hash, "{client}:{port}");
                assert!(!target.first, "the flow its SYN created");
            }
        }
        assert!(handed > 0, "some datagrams belong to another worker's flow");
        let entries: usize = workers.iter().map(|p| p.flows().len()).sum();
        assert_eq!(entries, flows, "one entry a flow");
    }

    fn flow(port: u16) -> Addressing {
        Addressing::new(
            format!("198.18.0.1:{port}").parse().unwrap(),
            "198.18.0.2:443".parse().unwrap(),
        )
    }

    fn syn(a: &Addressing) -> Vec<u8> {
        synth::tcp(
            a,
            TcpHeader {
                flags: flags::SYN,
                ..Default::default()
            },
            b"",
        )
    }

    /// Classification reads a new flow's fields from its entry rather than
    /// from the parse; both must say the same.
    #[test]
    fn a_new_flow_is_classified_on_the_fields_of_its_first_frame() {
        let mapped = Addressing::new(
            "[::ffff:198.18.0.9]:1".parse().unwrap(),
            "[::ffff:198.18.0.1]:2".parse().unwrap(),
        );
        let v6 = Addressing::new(
            "[2001:db8::9]:5353".parse().unwrap(),
            "[2001:db8::1]:53".parse().unwrap(),
        );
        let tagged = |frame: Vec<u8>, tci: u16| {
            let mut f = frame[..12].to_vec();
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
            f.extend_from_slice(&frame[12..]);
            f
        };
        let frames = [
            syn(&flow(1)),
            syn(&flow(1).reversed()),
            synth::udp(&v6, b"q"),
            synth::udp(&v6.reversed(), b"a"),
            syn(&mapped),
            tagged(syn(&flow(2)), 42),
            tagged(synth::udp(&v6, b"q"), 0x2000),
        ];
        let mut p = pipeline(16, FrameAction::Forward, FrameAction::Forward);
        for frame in &frames {
            for side in PortSide::BOTH {
                let summary = parse_frame(frame).unwrap();
                let parsed = flow_fields(summary.ip.as_ref().unwrap(), side, summary.vlan);
                let Prepared::Lookup(lookup) = p.prepare(frame, side, None, None) else {
                    panic!("no lookup for {frame:02x?}");
                };
                let mut table = FlowTable::new(FlowTableConfig::default());
                let Observation::Created(entry) = table.observe(&lookup.meta, 0) else {
                    panic!("not created");
                };
                assert_eq!(first_frame_fields(entry, lookup.vlan), parsed);
            }
        }
    }

    #[test]
    fn a_frame_leaves_by_the_other_port_and_both_directions_share_a_flow() {
        let mut p = pipeline(16, FrameAction::Forward, FrameAction::Forward);
        let a = flow(1000);
        assert_eq!(
            p.handle(&syn(&a), PortSide::Inside, None, None, 0),
            Verdict::Forward(PortSide::Outside)
        );
        let reply = synth::tcp(
            &a.reversed(),
            TcpHeader {
                flags: flags::SYN | flags::ACK,
                ..Default::default()
            },
            b"",
        );
        assert_eq!(
            p.handle(&reply, PortSide::Outside, None, None, 1),
            Verdict::Forward(PortSide::Inside)
        );
        assert_eq!(p.counters.flows_created, 1);
        assert_eq!(p.flows().len(), 1);
        assert_eq!(p.take_new_flows().len(), 1);
        assert!(!p.has_new_flows());
    }

    #[test]
    fn non_ip_frames_pass_untracked() {
        let mut p = pipeline(16, FrameAction::Drop, FrameAction::Drop);
        let arp = synth::arp_request(synth::CLIENT_MAC, [198, 18, 0, 1], [198, 18, 0, 2]);
        assert_eq!(
            p.handle(&arp, PortSide::Outside, None, None, 0),
            Verdict::Forward(PortSide::Inside)
        );
        assert_eq!(p.counters.non_ip, 1);
        assert!(p.flows().is_empty());
    }

    #[test]
    fn malformed_frames_are_counted_by_reason_and_handled_per_config() {
        let mut bad = syn(&flow(1));
        bad[14 + 20 + 12] = 0x20; // TCP data offset 2 words: below the minimum
        let reason = parse_frame(&bad).unwrap_err();

        let mut forward = pipeline(16, FrameAction::Forward, FrameAction::Forward);
        assert_eq!(
            forward.handle(&bad, PortSide::Inside, None, None, 0),
            Verdict::Forward(PortSide::Outside)
        );
        assert_eq!(forward.counters.malformed[reason.index()], 1);
        assert_eq!(forward.counters.malformed_forwarded, 1);

        let mut drop = pipeline(16, FrameAction::Drop, FrameAction::Forward);
        assert_eq!(
            drop.handle(&bad, PortSide::Inside, None, None, 0),
            Verdict::Drop(DropReason::Malformed)
        );
        assert_eq!(drop.counters.malformed[reason.index()], 1);
        assert!(drop.flows().is_empty());
        // Garbage of every length up to a full header: never a panic.
        for len in 0..bad.len() {
            let _ = drop.handle(&bad[..len], PortSide::Outside, None, None, 0);
        }
    }

    #[test]
    fn a_full_table_fails_open_or_drops_per_config_and_known_flows_still_pass() {
        for (action, verdict) in [
            (FrameAction::Forward, Verdict::Forward(PortSide::Outside)),
            (FrameAction::Drop, Verdict::Drop(DropReason::TableFull)),
        ] {
            let mut p = pipeline(2, FrameAction::Forward, action);
            p.handle(&syn(&flow(1)), PortSide::Inside, None, None, 0);
            p.handle(&syn(&flow(2)), PortSide::Inside, None, None, 0);
            assert_eq!(
                p.handle(&syn(&flow(3)), PortSide::Inside, None, None, 0),
                verdict
            );
            assert_eq!(p.counters.flows_table_full, 1);
            assert_eq!(
                p.handle(&syn(&flow(1)), PortSide::Inside, None, None, 1),
                Verdict::Forward(PortSide::Outside),
                "existing flows keep working"
            );
        }
    }

    #[test]
    fn software_steering_hands_over_what_another_worker_owns_in_both_directions() {
        let mut workers = [
            pipeline(64, FrameAction::Forward, FrameAction::Forward),
            pipeline(64, FrameAction::Forward, FrameAction::Forward),
        ];
        let mut handed = 0;
        for port in 1000..1064 {
            let a = flow(port);
            let there = syn(&a);
            let back = synth::tcp(
                &a.reversed(),
                TcpHeader {
                    flags: flags::SYN | flags::ACK,
                    ..Default::default()
                },
                b"",
            );
            // Both directions arrive at worker 0 first; each must end on the
            // same owner.
            let mut owners = Vec::new();
            for (frame, side) in [(&there, PortSide::Inside), (&back, PortSide::Outside)] {
                let steer = Steer {
                    worker: 0,
                    workers: 2,
                };
                let owner = match workers[0].handle(frame, side, None, Some(steer), 0) {
                    Verdict::HandOff(w) => {
                        handed += 1;
                        assert_eq!(
                            workers[w].handle(frame, side, None, None, 0),
                            Verdict::Forward(side.other())
                        );
                        w
                    }
                    Verdict::Forward(_) => 0,
                    v => panic!("unexpected {v:?}"),
                };
                owners.push(owner);
            }
            assert_eq!(
                owners[0], owners[1],
                "both directions of {port} on one worker"
            );
        }
        assert!(handed > 0);
        assert_eq!(workers[0].flows().len() + workers[1].flows().len(), 64);
    }

    #[test]
    fn a_nic_hash_replaces_the_software_hash() {
        let mut p = pipeline(16, FrameAction::Forward, FrameAction::Forward);
        let a = flow(7);
        p.handle(&syn(&a), PortSide::Inside, Some(0xabcd_1234), None, 0);
        let reply = synth::tcp(
            &a.reversed(),
            TcpHeader {
                flags: flags::ACK,
                ..Default::default()
            },
            b"",
        );
        p.handle(&reply, PortSide::Outside, Some(0xabcd_1234), None, 1);
        assert_eq!(p.flows().len(), 1);
        let entry = p.flows().iter().next().unwrap();
        assert_eq!(entry.hash(), FlowTable::spread_hash(0xabcd_1234));
    }

    #[test]
    fn new_flows_take_their_rule_and_count_its_hits_and_drop_rules_drop() {
        let mut p = pipeline(16, FrameAction::Forward, FrameAction::Forward);
        p.set_policy(policy(&[
            r#"{"match":{"proto":"tcp","dst_port":10000},"action":"bypass","name":"ctcp"}"#,
            r#"{"match":{"proto":"tcp","dst_port":22},"action":"drop"}"#,
        ]));
        let ctcp = Addressing::new(
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.0.2:10000".parse().unwrap(),
        );
        // Picked up mid-stream: no SYN needed for a bypass rule.
        let data = synth::tcp(
            &ctcp,
            TcpHeader {
                flags: flags::ACK,
                ..Default::default()
            },
            b"esp",
        );
        assert_eq!(
            p.handle(&data, PortSide::Inside, None, None, 0),
            Verdict::Forward(PortSide::Outside)
        );
        assert_eq!(
            p.handle(&data, PortSide::Inside, None, None, 1),
            Verdict::Forward(PortSide::Outside)
        );
        let e = p.flows().iter().next().unwrap();
        assert_eq!((e.mode(), e.rule()), (FlowMode::Bypass, 1));
        assert_eq!(p.hits()[1].flows, 1);
        assert_eq!(p.hits()[1].packets, 2);
        assert_eq!(p.hits()[1].bytes, 2 * data.len() as u64);

        let ssh = Addressing::new(
            "198.18.0.1:40001".parse().unwrap(),
            "198.18.0.2:22".parse().unwrap(),
        );
        assert_eq!(
            p.handle(&syn(&ssh), PortSide::Inside, None, None, 2),
            Verdict::Drop(DropReason::Policy)
        );
        assert_eq!(
            p.counters.total_drops(),
            0,
            "a policy drop is intent, not loss"
        );

        let web = flow(5000);
        p.handle(&syn(&web), PortSide::Inside, None, None, 3);
        let e = p.flows().iter().find(|e| e.rule() == 0).unwrap();
        assert_eq!(e.mode(), FlowMode::Proxy, "the default for tcp");
    }

    /// What a client's kernel sends back for a SYN cookie answer it never asked for.
    fn rst(a: &Addressing) -> Vec<u8> {
        synth::tcp(
            a,
            TcpHeader {
                flags: flags::RST,
                ..Default::default()
            },
            b"",
        )
    }

    #[test]
    fn a_rst_of_no_known_flow_takes_no_entry_and_meets_its_policy() {
        for (on_midstream, proxied) in [
            (MidstreamAction::Bypass, Verdict::Forward(PortSide::Outside)),
            (MidstreamAction::Drop, Verdict::Drop(DropReason::TcpNotSyn)),
        ] {
            let mut p = pipeline(16, FrameAction::Forward, FrameAction::Drop);
            p.on_midstream = on_midstream;
            p.set_policy(policy(&[
                r#"{"match":{"proto":"tcp","dst_port":22},"action":"drop"}"#,
                r#"{"match":{"proto":"tcp","dst_port":10000},"action":"bypass"}"#,
            ]));
            let at = |port: u16| {
                Addressing::new(
                    "198.18.0.1:40000".parse().unwrap(),
                    format!("198.18.0.2:{port}").parse().unwrap(),
                )
            };
            for (port, verdict) in [
                (443, proxied),
                (22, Verdict::Drop(DropReason::Policy)),
                (10000, Verdict::Forward(PortSide::Outside)),
            ] {
                assert_eq!(
                    p.handle(&rst(&at(port)), PortSide::Inside, None, None, 0),
                    verdict,
                    "port {port}, {on_midstream:?}"
                );
            }
            assert!(p.flows().is_empty());
            assert_eq!(p.counters.flows_untracked_rst, 3);
            assert_eq!(p.counters.flows_created, 0);
            assert_eq!(p.counters.total_drops(), 0, "policy drops are intent");
            // A RST of a known flow is that flow's, and closes it.
            p.handle(&syn(&at(443)), PortSide::Inside, None, None, 1);
            let Verdict::Proxy(target) = p.handle(&rst(&at(443)), PortSide::Inside, None, None, 2)
            else {
                panic!("a RST of a proxied flow goes to the proxy");
            };
            assert!(!target.first);
            assert_eq!(p.counters.flows_untracked_rst, 3);
        }
    }

    #[test]
    fn a_new_policy_reaches_live_flows_only_when_reclassified() {
        let mut p = pipeline(16, FrameAction::Forward, FrameAction::Forward);
        p.set_policy(policy(&[]));
        let a = Addressing::new(
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.0.2:5201".parse().unwrap(),
        );
        p.handle(&syn(&a), PortSide::Inside, None, None, 0);
        p.set_policy(policy(&[
            r#"{"match":{"proto":"tcp","dst_port":"5201"},"action":"bypass"}"#,
        ]));
        let reply = synth::tcp(
            &a.reversed(),
            TcpHeader {
                flags: flags::SYN | flags::ACK,
                ..Default::default()
            },
            b"",
        );
        p.handle(&reply, PortSide::Outside, None, None, 1);
        assert_eq!(
            p.flows().iter().next().unwrap().mode(),
            FlowMode::Proxy,
            "as on the ASA: new flows only"
        );
        assert_eq!(p.reclassify(), 1);
        let e = p.flows().iter().next().unwrap();
        assert_eq!((e.mode(), e.rule()), (FlowMode::Bypass, 1));
        // The reply direction is classified as the initiator saw it.
        assert_eq!(p.reclassify(), 0, "nothing left to change");
        assert_eq!(p.hits()[1].flows, 1);
    }
}
