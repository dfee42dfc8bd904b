//! The `shard` target: a run of frames through one worker's [`Shard`], on either port, with
//! time passing and the timers and expiry running between them, as the worker drives it.
//!
//! Input: a sequence of records, each `[control][length: 2 bytes][frame]`; the control byte's
//! low bit is the port the frame arrives on (0 inside, 1 outside) and its other bits the
//! milliseconds that pass before it. The last record's frame is what is left of the input.
//!
//! What the worker relies on, beyond never panicking:
//! - a frame forwarded leaves by the other port, as long as it came (translation rewrites
//!   numbers in place, never the length);
//! - a frame held for reassembly is a TCP fragment;
//! - nothing is handed to another worker (there is no steering here);
//! - each frame is dropped at most once, and only drops are counted as drops.

use std::sync::Arc;

use tollgate_core::flow::FlowTableConfig;
use tollgate_core::ip_reassembly::tcp_fragment;
use tollgate_core::pipeline::{FrameAction, Pipeline, PipelineConfig, PortSide};
use tollgate_core::policy::{Action, CompiledPolicy, PolicyDefaults, PolicySet};
use tollgate_core::proxy::{FrameSink, MidstreamAction, ProxySettings, ProxyTable};
use tollgate_core::shard::{Dispatch, Shard};
use tollgate_core::tcp::inspect::SignatureInspector;
use tollgate_core::tcp::payload::TestBytes;

use crate::cursor::Cursor;

/// The proxy's own frames: each must be a frame at all.
struct Sent;

impl FrameSink<TestBytes> for Sent {
    fn send(&mut self, _: PortSide, headers: &[u8], _: Option<&TestBytes>) -> bool {
        assert!(
            !headers.is_empty(),
            "the proxy sent a frame without headers"
        );
        true
    }
}

/// A worker's shard as the daemon builds it by default (TCP proxied, malformed frames
/// forwarded, reassembly on), with a small flow table so that a run can fill it.
pub fn shard() -> Shard<TestBytes> {
    let defaults = PolicyDefaults {
        tcp: Action::Proxy,
        udp: Action::Bypass,
        other: Action::Bypass,
    };
    let pipeline = Pipeline::new(
        PipelineConfig {
            flows: FlowTableConfig {
                capacity: 64,
                ..FlowTableConfig::default()
            },
            malformed: FrameAction::Forward,
            on_table_full: FrameAction::Forward,
            audit_new_flows: false,
            reassembly: true,
            rss: None,
            on_midstream: MidstreamAction::Bypass,
        },
        Arc::new(CompiledPolicy::compile(&PolicySet::default(), defaults, 1)),
    );
    let proxies = ProxyTable::new(
        ProxySettings::default(),
        Arc::new(SignatureInspector::new(&[]).expect("no signatures")),
        [3; 16],
    );
    Shard::new(pipeline, proxies)
}

/// One record of the input, as [`run`] reads it and the seeds write it.
pub fn record(ingress: PortSide, after_ms: u8, frame: &[u8]) -> Vec<u8> {
    let control = (after_ms << 1) | ingress as u8;
    let mut out = vec![control];
    out.extend_from_slice(&(frame.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(&frame[..frame.len().min(usize::from(u16::MAX))]);
    out
}

/// Runs one input; panics when the shard breaks a promise.
pub fn run(data: &[u8]) {
    let mut shard = shard();
    let mut input = Cursor::new(data);
    let mut now = 1_000u64;
    while !input.is_empty() {
        let control = input.u8();
        let len = input.u16();
        let frame = input.bytes(usize::from(len));
        let ingress = if control & 1 == 0 {
            PortSide::Inside
        } else {
            PortSide::Outside
        };
        now += u64::from(control >> 1);
        shard.on_timers(now, &mut Sent);
        shard.expire(now, &mut Sent);
        let drops_before: u64 = shard.pipeline().counters.drops.iter().sum();
        match shard.handle(frame.to_vec(), ingress, now, &mut Sent) {
            Dispatch::Forward(out, egress) => {
                assert_eq!(egress, ingress.other(), "forwarded out of its own port");
                assert_eq!(out.len(), frame.len(), "a forwarded frame changed length");
            }
            Dispatch::Reassemble(out) => {
                assert!(
                    tcp_fragment(&out).is_some(),
                    "held a frame that is no TCP fragment"
                );
            }
            Dispatch::HandOff(_, worker) => {
                panic!("handed off to worker {worker} without steering")
            }
            Dispatch::Done => {}
        }
        let drops: u64 = shard.pipeline().counters.drops.iter().sum();
        assert!(
            drops - drops_before <= 1,
            "one frame dropped {} times",
            drops - drops_before
        );
    }
}
