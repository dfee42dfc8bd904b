//! Flows as the control plane shows them: filtering and rendering a worker's
//! flow entries for `flows list` and `flows clear`.

use tollgate_control::policy::{Ingress, Protocol};
use tollgate_control::protocol::{
    FlowFilter, FlowView, FlowsClearReply, KeptFlow, KeptReason, MAX_KEPT_LISTED,
};

use crate::flow::{Direction, FlowEntry, FlowMode, FlowTable, HandoverCause, TcpPhase};
use crate::pipeline::PortSide;
use crate::policy::action_of;
use crate::proxy::{ClearAction, Cleared, FrameSink, ProxyTable};
use crate::tcp::payload::Payload;

pub fn matches(filter: &FlowFilter, e: &FlowEntry) -> bool {
    let key = e.key();
    filter.matches(
        Protocol(key.protocol()),
        key.low(),
        key.high(),
        action_of(e.mode()),
        (e.rule() != 0).then_some(e.rule()),
    )
}

/// A flow picked up mid-stream never showed a handshake: until the other side answers it is
/// `unreplied` (whatever flags it carried), then `picked-up` while neither side has closed.
fn tcp_state(e: &FlowEntry) -> Option<String> {
    e.tcp_phase().map(|p| {
        match p {
            _ if e.unreplied() => "unreplied",
            TcpPhase::Embryonic => "syn-sent",
            TcpPhase::Established if e.tcp().mid_stream() => "picked-up",
            TcpPhase::Established => "established",
            TcpPhase::Closing => "closing",
            TcpPhase::Closed => "closed",
        }
        .to_string()
    })
}

/// The flow as `flows list` shows it. `reason` is filled in by the control
/// plane, which knows rule names.
pub fn view(worker: u16, e: &FlowEntry, now_ms: u64) -> FlowView {
    let (src, dst) = e.key().endpoints(e.initiator());
    FlowView {
        worker,
        proto: Protocol(e.key().protocol()),
        src,
        dst,
        ingress: if e.ingress() == PortSide::Outside as u8 {
            Ingress::Outside
        } else {
            Ingress::Inside
        },
        mode: action_of(e.mode()),
        reason: String::new(),
        rule: (e.rule() != 0).then_some(e.rule()),
        packets_original: e.packets(Direction::Original),
        packets_reply: e.packets(Direction::Reply),
        bytes_original: e.bytes(Direction::Original),
        bytes_reply: e.bytes(Direction::Reply),
        age_ms: now_ms.saturating_sub(e.first_seen_ms()),
        idle_ms: now_ms.saturating_sub(e.last_seen_ms()),
        tcp_state: tcp_state(e),
        proxy: None,
        handed_over: e.handover().map(|cause| cause.name().to_string()),
        detected: match e.handover() {
            Some(HandoverCause::Detection(framing)) => Some(framing.name().to_string()),
            _ => None,
        },
    }
}

/// `flows clear` on one worker's flows. Entries that hold nothing but counters are forgotten;
/// connections the proxy holds are the proxy table's to reset or hand over (`action`); flows
/// it handed over earlier and still serves are kept, as forgetting them would break them.
pub fn clear<P: Payload>(
    flows: &mut FlowTable,
    proxies: &mut ProxyTable<P>,
    filter: &FlowFilter,
    action: ClearAction,
    worker: u16,
    now_ms: u64,
    sink: &mut impl FrameSink<P>,
) -> FlowsClearReply {
    let mut report = FlowsClearReply::default();
    let mut connections = Vec::new();
    let kept = |e: &FlowEntry, reason| {
        let (src, dst) = e.key().endpoints(e.initiator());
        KeptFlow {
            worker,
            proto: Protocol(e.key().protocol()),
            src,
            dst,
            mode: action_of(e.mode()),
            reason,
        }
    };
    flows.remove_where(|e| {
        if !matches(filter, e) {
            return false;
        }
        let counts = match e.mode() {
            FlowMode::Proxy => &mut report.proxy,
            FlowMode::Bypass => &mut report.bypass,
            FlowMode::Drop => &mut report.drop,
        };
        match (e.mode(), e.proxy_slot()) {
            (FlowMode::Proxy, Some(slot)) => {
                connections.push((slot, *e.key(), e.hash()));
                false
            }
            (_, Some(_)) => {
                counts.kept += 1;
                if report.kept.len() < MAX_KEPT_LISTED {
                    report.kept.push(kept(e, KeptReason::PassThrough));
                }
                false
            }
            (_, None) => {
                counts.forgotten += 1;
                true
            }
        }
    });
    for (slot, key, hash) in connections {
        match proxies.clear(flows, slot, action, now_ms, sink) {
            Cleared::Reset => report.proxy.reset += 1,
            Cleared::HandedOver => report.proxy.handed_over += 1,
            Cleared::Kept(reason) => {
                report.proxy.kept += 1;
                if report.kept.len() < MAX_KEPT_LISTED {
                    if let Some(e) = flows.get(&key, hash) {
                        report.kept.push(kept(e, reason));
                    }
                }
            }
        }
    }
    report.cleared = [report.proxy, report.bypass, report.drop]
        .iter()
        .map(|c| c.total() - c.kept)
        .sum();
    report
}
