//! The per-frame decision, free of I/O: parse, steer, track the flow, and
//! say what to do with the frame. The DPDK worker is a thin loop around it.

use crate::config::FrameAction;
use crate::counters::{DropReason, WorkerCounters};
use crate::flow::{FlowKey, FlowTable, FlowTableConfig, Observation, PacketMeta};
use crate::parse::parse_frame;

/// Which of the two ports a frame came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward(PortSide),
    Drop(DropReason),
    /// Another worker owns this frame's flow: hand the frame over.
    HandOff(usize),
}

/// Software steering: this worker's index among `workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steer {
    pub worker: usize,
    pub workers: usize,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub flows: FlowTableConfig,
    pub malformed: FrameAction,
    pub on_table_full: FrameAction,
    /// Keep the keys of new flows for the cross-worker split audit.
    pub audit_new_flows: bool,
}

pub struct Pipeline {
    flows: FlowTable,
    malformed: FrameAction,
    on_table_full: FrameAction,
    audit_new_flows: bool,
    new_flows: Vec<FlowKey>,
    pub counters: WorkerCounters,
}

impl Pipeline {
    pub fn new(config: PipelineConfig) -> Pipeline {
        Pipeline {
            flows: FlowTable::new(config.flows),
            malformed: config.malformed,
            on_table_full: config.on_table_full,
            audit_new_flows: config.audit_new_flows,
            new_flows: Vec::with_capacity(256),
            counters: WorkerCounters::default(),
        }
    }

    /// Decides the fate of one frame. `nic_hash` is the NIC's symmetric RSS
    /// hash when both ports provide one; `steer` is set under software
    /// steering for frames this worker received from a port (frames handed
    /// over by another worker are already at their owner).
    #[inline]
    pub fn handle(
        &mut self,
        frame: &[u8],
        ingress: PortSide,
        nic_hash: Option<u32>,
        steer: Option<Steer>,
        now_ms: u64,
    ) -> Verdict {
        let egress = ingress.other();
        let summary = match parse_frame(frame) {
            Ok(summary) => summary,
            Err(reason) => {
                self.counters.malformed[reason.index()] += 1;
                return match self.malformed {
                    FrameAction::Forward => {
                        self.counters.malformed_forwarded += 1;
                        Verdict::Forward(egress)
                    }
                    FrameAction::Drop => Verdict::Drop(DropReason::Malformed),
                };
            }
        };
        let Some(ip) = summary.ip else {
            self.counters.non_ip += 1;
            return Verdict::Forward(egress);
        };
        let (src_port, dst_port) = ip.ports.unwrap_or((0, 0));
        let (key, orientation) =
            FlowKey::from_packet(ip.src, ip.dst, ip.protocol, src_port, dst_port);
        let hash = match nic_hash {
            Some(h) => FlowTable::spread_hash(h),
            None => key.software_hash(),
        };
        if let Some(steer) = steer {
            let owner = FlowTable::shard_of(hash, steer.workers);
            if owner != steer.worker {
                self.counters.handoff_out += 1;
                return Verdict::HandOff(owner);
            }
        }
        let meta = PacketMeta {
            key,
            orientation,
            hash,
            len: frame.len() as u32,
            tcp_flags: ip.tcp_flags,
            ingress: ingress as u8,
        };
        match self.flows.observe(&meta, now_ms) {
            Observation::Existing(_) => Verdict::Forward(egress),
            Observation::Created(_) => {
                self.counters.flows_created += 1;
                if self.audit_new_flows {
                    self.new_flows.push(key);
                }
                Verdict::Forward(egress)
            }
            Observation::Full => {
                self.counters.flows_table_full += 1;
                match self.on_table_full {
                    FrameAction::Forward => Verdict::Forward(egress),
                    FrameAction::Drop => Verdict::Drop(DropReason::TableFull),
                }
            }
        }
    }

    /// Ages out idle and finished flows; call between bursts.
    pub fn expire(&mut self, now_ms: u64) {
        self.counters.flows_expired += self.flows.expire(now_ms) as u64;
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

    /// The flow key of an IP frame, for tests and tools.
    pub fn key_of(frame: &[u8]) -> Option<FlowKey> {
        let ip = parse_frame(frame).ok()?.ip?;
        let (s, d) = ip.ports.unwrap_or((0, 0));
        Some(FlowKey::from_packet(ip.src, ip.dst, ip.protocol, s, d).0)
    }
}
