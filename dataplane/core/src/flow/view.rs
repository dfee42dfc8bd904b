//! Flows as the control plane shows them: the filter `flows list` and `flows clear` take,
//! the views they reply with, and how a worker renders and clears its flow entries.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::detect::IpsecFraming;
use crate::policy::{Action, Prefix, Protocol};
use crate::tcp::endpoint::State;
use crate::tcp::proxy::ProxyState;

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
/// A TCP flow's state as the flow table tracks it (from the flags it saw, not a TCP stack's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowTcpState {
    /// Picked up without a handshake, and not answered yet: on a short timeout.
    Unreplied,
    /// A SYN, and no SYN back yet.
    SynSent,
    /// Picked up mid-stream, and answered.
    PickedUp,
    Established,
    /// A FIN one way.
    Closing,
    /// A FIN both ways, or a RST.
    Closed,
}

impl FlowTcpState {
    pub fn name(self) -> &'static str {
        match self {
            FlowTcpState::Unreplied => "unreplied",
            FlowTcpState::SynSent => "syn-sent",
            FlowTcpState::PickedUp => "picked-up",
            FlowTcpState::Established => "established",
            FlowTcpState::Closing => "closing",
            FlowTcpState::Closed => "closed",
        }
    }
}

impl std::fmt::Display for FlowTcpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn tcp_state(e: &FlowEntry) -> Option<FlowTcpState> {
    e.tcp_phase().map(|p| match p {
        _ if e.unreplied() => FlowTcpState::Unreplied,
        TcpPhase::Embryonic => FlowTcpState::SynSent,
        TcpPhase::Established if e.tcp().mid_stream() => FlowTcpState::PickedUp,
        TcpPhase::Established => FlowTcpState::Established,
        TcpPhase::Closing => FlowTcpState::Closing,
        TcpPhase::Closed => FlowTcpState::Closed,
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
        ingress: e.ingress(),
        mode: action_of(e.mode()),
        reason: String::new(),
        rule: (e.rule() != 0).then_some(e.rule()),
        packets_original: e.packets(Direction::ClientToServer),
        packets_reply: e.packets(Direction::ServerToClient),
        bytes_original: e.bytes(Direction::ClientToServer),
        bytes_reply: e.bytes(Direction::ServerToClient),
        age_ms: now_ms.saturating_sub(e.first_seen_ms()),
        idle_ms: now_ms.saturating_sub(e.last_seen_ms()),
        tcp_state: tcp_state(e),
        proxy: None,
        handed_over: e.handover().map(HandedOver::from),
        detected: match e.handover() {
            Some(HandoverCause::Detection(framing)) => Some(framing),
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

/// Selects flows; absent fields match everything, and a flow must match every field given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowFilter {
    /// Either endpoint's address is in this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<Prefix>,
    /// Either endpoint's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Action>,
    /// Flows classified by this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    /// With `dst`: one connection, by its two endpoints (address and port; port 0 for
    /// protocols without ports), in either direction: `src` may be the initiator or the
    /// responder. Both or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<SocketAddr>,
}

/// A filter that selects nothing sensible, and why; `field` is the filter's JSON field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter.{field}: {message}")]
pub struct FilterError {
    pub field: &'static str,
    pub message: String,
}

impl FlowFilter {
    /// Refuses what could only ever match nothing by mistake: one end of a connection without
    /// the other, ends of different address families, ports where the protocol has none or
    /// none where it has them.
    pub fn check(&self) -> Result<(), FilterError> {
        let invalid = |field, message: String| Err(FilterError { field, message });
        let (src, dst) = match (self.src, self.dst) {
            (None, None) => return Ok(()),
            (Some(src), Some(dst)) => (src, dst),
            (Some(_), None) => {
                return invalid(
                    "dst",
                    "src names one end of a connection; give dst, the other end, too".into(),
                )
            }
            (None, Some(_)) => {
                return invalid(
                    "src",
                    "dst names one end of a connection; give src, the other end, too".into(),
                )
            }
        };
        if src.is_ipv4() != dst.is_ipv4() {
            return invalid(
                "dst",
                format!("{src} and {dst} are of different address families: no flow joins them"),
            );
        }
        if let Some(proto) = self.proto {
            for (field, end) in [("src", src), ("dst", dst)] {
                if proto.has_ports() && end.port() == 0 {
                    return invalid(
                        field,
                        format!("{end} has no port, and {proto} flows have ports (IP:PORT)"),
                    );
                }
                if !proto.has_ports() && end.port() != 0 {
                    return invalid(
                        field,
                        format!(
                            "{end} has a port, and {proto} flows have none: give the bare address"
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether the flow of `proto` between `a` and `b` (in either order), in `mode` and
    /// classified by `rule` (None: a protocol default), is selected.
    pub fn matches(
        &self,
        proto: Protocol,
        a: SocketAddr,
        b: SocketAddr,
        mode: Action,
        rule: Option<u32>,
    ) -> bool {
        let same = |x: SocketAddr, y: SocketAddr| x.ip() == y.ip() && x.port() == y.port();
        self.proto.is_none_or(|p| p == proto)
            && self.port.is_none_or(|p| a.port() == p || b.port() == p)
            && self
                .prefix
                .is_none_or(|p| p.contains(a.ip()) || p.contains(b.ip()))
            && self.mode.is_none_or(|m| m == mode)
            && self.rule.is_none_or(|r| rule == Some(r))
            && match (self.src, self.dst) {
                (Some(src), Some(dst)) => {
                    (same(src, a) && same(dst, b)) || (same(src, b) && same(dst, a))
                }
                _ => true,
            }
    }
}

/// One flow as the workers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowView {
    pub worker: u16,
    pub proto: Protocol,
    /// The initiator (the side that sent the first frame seen).
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub ingress: PortSide,
    pub mode: Action,
    /// Why the flow has its mode: "rule 3 (ctcp)", "default for tcp".
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    pub packets_original: u64,
    pub packets_reply: u64,
    pub bytes_original: u64,
    pub bytes_reply: u64,
    pub age_ms: u64,
    pub idle_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_state: Option<FlowTcpState>,
    /// The proxy's view of a proxied flow (both legs), while the proxy holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyFlowView>,
    /// Why a flow the proxy held passes through now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_over: Option<HandedOver>,
    /// What detection recognised in the flow's first payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected: Option<IpsecFraming>,
}

/// Why a flow the proxy held passes through now, as `flows list` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandedOver {
    /// A peer left a hole unfilled and the rule said `on-stall bypass`.
    Stall,
    /// A policy change moved the live flow to bypass.
    Policy,
    /// Its first payload showed IPsec over TCP.
    Detection,
    /// An operator's `flows clear --hand-over`.
    Operator,
    /// Its proxy is gone; tollgate holds only the translation of its numbers between the
    /// legs (after a SYN cookie the two legs' sequence numbers differ).
    Translated,
}

impl HandedOver {
    pub fn name(self) -> &'static str {
        match self {
            HandedOver::Stall => "stall",
            HandedOver::Policy => "policy",
            HandedOver::Detection => "detection",
            HandedOver::Operator => "operator",
            HandedOver::Translated => "translated",
        }
    }
}

impl std::fmt::Display for HandedOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<HandoverCause> for HandedOver {
    fn from(cause: HandoverCause) -> HandedOver {
        match cause {
            HandoverCause::Stall => HandedOver::Stall,
            HandoverCause::Policy => HandedOver::Policy,
            HandoverCause::Detection(_) => HandedOver::Detection,
            HandoverCause::Operator => HandedOver::Operator,
        }
    }
}

/// A proxied flow as `flows list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProxyFlowView {
    pub state: ProxyState,
    /// The connection with the real client (tollgate plays the server), once it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_leg: Option<LegView>,
    /// The connection with the real server (tollgate plays the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_leg: Option<LegView>,
    /// In-order bytes from the client not yet acknowledged by the server.
    pub buffered_client_to_server: u64,
    pub buffered_server_to_client: u64,
    /// Holes a peer left unfilled (see the rule's `on-stall`).
    pub stalls: u64,
    /// Why the flow left the proxy for pass-through, when it did ("translated": tollgate
    /// holds only the translation of its numbers between the legs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_over: Option<HandedOver>,
}

/// One leg of a proxied flow.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LegView {
    /// By its RFC 9293 name on the wire, e.g. "ESTABLISHED", "FIN-WAIT-2".
    pub state: State,
    pub retransmissions: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srtt_ms: Option<u64>,
    pub rto_ms: u64,
    pub cwnd: u64,
    /// Bytes queued to send on this leg, not yet acknowledged by its peer.
    pub send_buffered: u64,
    /// Segments that arrived above a hole and were held.
    pub out_of_order_received: u64,
    /// The leg's handshake set up ECN (RFC 3168).
    #[serde(default)]
    pub ecn: bool,
}

/// What `flows.clear` did, by the mode each flow it selected was in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsClearReply {
    /// Flows reset, handed over or forgotten (the ones kept are not counted).
    pub cleared: u64,
    /// Flows in proxy mode: connections reset at both ends (their entries stay, closed, for
    /// the closed timeout, so that segments still in flight are recognised and ignored), or
    /// handed over to pass-through (`hand_over`), or kept when they cannot be; entries holding
    /// no connection (picked up mid-stream, or finished) forgotten.
    #[serde(default)]
    pub proxy: ClearCounts,
    /// Flows in bypass mode: forgotten (the next frame makes a new entry, classified by the
    /// policy), or kept when handed over from the proxy earlier and still held by it.
    #[serde(default)]
    pub bypass: ClearCounts,
    /// Flows in drop mode: forgotten.
    #[serde(default)]
    pub drop: ClearCounts,
    /// The flows kept, with why: at most [`MAX_KEPT_LISTED`] (the counts are complete).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<KeptFlow>,
}

/// Most kept flows one `flows.clear` reply lists.
pub const MAX_KEPT_LISTED: usize = 1000;

impl FlowsClearReply {
    /// Adds another worker's reply to this one, listing at most [`MAX_KEPT_LISTED`] kept flows.
    pub fn absorb(&mut self, other: FlowsClearReply) {
        self.cleared += other.cleared;
        self.proxy.absorb(other.proxy);
        self.bypass.absorb(other.bypass);
        self.drop.absorb(other.drop);
        let room = MAX_KEPT_LISTED.saturating_sub(self.kept.len());
        self.kept.extend(other.kept.into_iter().take(room));
    }
}

/// What became of the flows of one mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearCounts {
    /// Proxied connections reset at both ends.
    #[serde(default)]
    pub reset: u64,
    /// Proxied connections handed over to pass-through.
    #[serde(default)]
    pub handed_over: u64,
    /// Entries removed: the flow's next frame makes a new one.
    #[serde(default)]
    pub forgotten: u64,
    /// Left as they were (see `FlowsClearReply::kept`).
    #[serde(default)]
    pub kept: u64,
}

impl ClearCounts {
    pub fn absorb(&mut self, other: ClearCounts) {
        self.reset += other.reset;
        self.handed_over += other.handed_over;
        self.forgotten += other.forgotten;
        self.kept += other.kept;
    }

    pub fn total(&self) -> u64 {
        self.reset + self.handed_over + self.forgotten + self.kept
    }
}

/// A flow `flows.clear` selected and left as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptFlow {
    pub worker: u16,
    pub proto: Protocol,
    /// The initiator.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub mode: Action,
    pub reason: KeptReason,
}

/// Why `flows.clear` left a flow as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeptReason {
    /// A proxied connection still in its handshake (`hand_over`): the two legs' sequence
    /// numbers cannot be related yet. It stays proxied; clear it again once established.
    HandshakeInProgress,
    /// A proxied connection one end has closed for good (`hand_over`): that end would reset
    /// the other's segments. It stays proxied until it ends, moments later.
    Closing,
    /// Handed over to pass-through earlier, and the proxy still delivers bytes it owes an
    /// endpoint or translates sequence numbers and timestamps between the two legs' spaces:
    /// forgetting it would break the connection.
    PassThrough,
}

impl KeptReason {
    pub fn name(self) -> &'static str {
        match self {
            KeptReason::HandshakeInProgress => "handshake-in-progress",
            KeptReason::Closing => "closing",
            KeptReason::PassThrough => "pass-through",
        }
    }

    /// In words, for people.
    pub fn explanation(self) -> &'static str {
        match self {
            KeptReason::HandshakeInProgress => {
                "handshake in progress, cannot be handed over yet: still proxied"
            }
            KeptReason::Closing => "one end has closed, cannot be handed over: proxied until it ends",
            KeptReason::PassThrough => {
                "handed over earlier; tollgate still delivers bytes it owes or translates sequence numbers, so forgetting it would break the connection"
            }
        }
    }
}

#[cfg(test)]
mod wire_names {
    use super::*;

    /// The states cross the control socket by the names operators and scripts know.
    #[test]
    fn states_cross_the_socket_by_their_names() {
        let name = |v: serde_json::Value| v.as_str().unwrap().to_string();
        for state in [
            State::Closed,
            State::Listen,
            State::SynSent,
            State::SynReceived,
            State::Established,
            State::FinWait1,
            State::FinWait2,
            State::CloseWait,
            State::Closing,
            State::LastAck,
            State::TimeWait,
        ] {
            assert_eq!(name(serde_json::to_value(state).unwrap()), state.name());
        }
        let proxy: Vec<String> = [
            ProxyState::Connecting,
            ProxyState::Relaying,
            ProxyState::TimeWait,
            ProxyState::Closed,
            ProxyState::PassThrough,
        ]
        .into_iter()
        .map(|s| name(serde_json::to_value(s).unwrap()))
        .collect();
        assert_eq!(
            proxy,
            [
                "connecting",
                "relaying",
                "time-wait",
                "closed",
                "pass-through"
            ]
        );
        for handed_over in [
            HandedOver::Stall,
            HandedOver::Policy,
            HandedOver::Detection,
            HandedOver::Operator,
            HandedOver::Translated,
        ] {
            assert_eq!(
                name(serde_json::to_value(handed_over).unwrap()),
                handed_over.name()
            );
        }
        for state in [
            FlowTcpState::Unreplied,
            FlowTcpState::SynSent,
            FlowTcpState::PickedUp,
            FlowTcpState::Established,
            FlowTcpState::Closing,
            FlowTcpState::Closed,
        ] {
            assert_eq!(name(serde_json::to_value(state).unwrap()), state.name());
        }
        for framing in [
            IpsecFraming::CtcpIke,
            IpsecFraming::CtcpEsp,
            IpsecFraming::Rfc8229,
            IpsecFraming::FramedIke,
            IpsecFraming::FramedEsp,
        ] {
            assert_eq!(name(serde_json::to_value(framing).unwrap()), framing.name());
        }
    }
}
