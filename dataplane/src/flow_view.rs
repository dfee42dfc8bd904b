//! Flows as the control plane shows them: filtering and rendering a worker's
//! flow entries for `flows list` and `flows clear`.

use tollgate_control::policy::{Ingress, Protocol};
use tollgate_control::protocol::{FlowFilter, FlowView};

use crate::flow::{Direction, FlowEntry, HandoverCause, TcpPhase};
use crate::pipeline::PortSide;
use crate::policy::action_of;

pub fn matches(filter: &FlowFilter, e: &FlowEntry) -> bool {
    let key = e.key();
    let (low, high) = (key.low(), key.high());
    filter.proto.is_none_or(|p| p.0 == key.protocol())
        && filter
            .port
            .is_none_or(|p| low.port() == p || high.port() == p)
        && filter
            .prefix
            .is_none_or(|p| p.contains(low.ip()) || p.contains(high.ip()))
        && filter.mode.is_none_or(|m| m == action_of(e.mode()))
        && filter.rule.is_none_or(|r| r == e.rule())
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
