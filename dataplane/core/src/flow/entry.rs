//! One flow's state: what the per-packet path reads and updates.

use super::key::{FlowKey, Orientation, TCP};
use super::table::{FlowTimeouts, PacketMeta};
use super::timer::TimerHandle;
use crate::detect::IpsecFraming;
use crate::pipeline::PortSide;

use crate::wire::tcp::flags::{ACK, FIN, RST, SYN};

/// Which way a packet, or a proxied byte, goes through its flow: from the initiator (the
/// client; conntrack's original direction) to the responder, or back (the reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    /// 0 for client to server, 1 for server to client: for per-direction arrays.
    pub fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// How the data plane handles the flow's packets, as its policy decided.
///
/// The first cache line has room for the mode and the classifying rule's id
/// (the layout test holds it there). A mode that later carries state of its
/// own (sequence offsets for a flow moved from proxy to bypass, a proxy slab
/// index) goes in the second line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FlowMode {
    /// The default for TCP: the full proxy (the worker's proxy table holds the
    /// connection). Other protocols have no proxy: tracked pass-through
    /// (counters kept, frames unchanged).
    Proxy,
    /// Stateless pass-through: forwarded untouched, no TCP state enforced.
    #[default]
    Bypass,
    /// Every frame dropped and counted.
    Drop,
}

impl FlowMode {
    pub fn name(self) -> &'static str {
        match self {
            FlowMode::Proxy => "proxy",
            FlowMode::Bypass => "bypass",
            FlowMode::Drop => "drop",
        }
    }
}

const PROXY_FINISHED: u32 = u32::MAX;
const PROXY_PICKED_UP: u32 = u32::MAX - 1;

/// A flow's link to the worker's proxy table (stored in a `u32` of the entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyLink {
    /// The proxy never held this connection: a flow in proxy mode seen without its SYN is not
    /// the proxy's to terminate.
    None,
    /// The proxy holds the flow (or the translations of one handed over) in this slot.
    Slot(u32),
    /// The proxy held the connection and has finished it: late segments are ignored, as a
    /// closed port would.
    Finished,
    /// The proxy found the flow under way (no handshake seen) and passes it as it is; it was
    /// counted once, on the first of its segments to reach the proxy.
    PickedUp,
}

/// Why a flow the proxy held was handed over to pass-through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoverCause {
    /// A peer left a hole unfilled and the rule said `on-stall bypass`.
    Stall,
    /// A policy change moved the live flow to bypass.
    Policy,
    /// Its first payload showed IPsec over TCP.
    Detection(IpsecFraming),
    /// An operator's `flows clear --hand-over`.
    Operator,
}

const HANDOVER_STALL: u8 = 1;
const HANDOVER_POLICY: u8 = 2;
const HANDOVER_OPERATOR: u8 = 3;
/// Or'ed with the framing's code.
const HANDOVER_DETECTION: u8 = 0x10;

impl HandoverCause {
    pub fn name(self) -> &'static str {
        match self {
            HandoverCause::Stall => "stall",
            HandoverCause::Policy => "policy",
            HandoverCause::Detection(_) => "detection",
            HandoverCause::Operator => "operator",
        }
    }

    fn code(self) -> u8 {
        match self {
            HandoverCause::Stall => HANDOVER_STALL,
            HandoverCause::Policy => HANDOVER_POLICY,
            HandoverCause::Detection(framing) => HANDOVER_DETECTION | framing as u8,
            HandoverCause::Operator => HANDOVER_OPERATOR,
        }
    }

    fn from_code(code: u8) -> Option<HandoverCause> {
        match code {
            HANDOVER_STALL => Some(HandoverCause::Stall),
            HANDOVER_POLICY => Some(HandoverCause::Policy),
            HANDOVER_OPERATOR => Some(HandoverCause::Operator),
            c if c & HANDOVER_DETECTION != 0 => {
                IpsecFraming::from_code(c & !HANDOVER_DETECTION).map(HandoverCause::Detection)
            }
            _ => None,
        }
    }
}

/// Where a TCP flow is in its life, as far as idle expiry cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpPhase {
    /// A SYN, and no SYN back yet.
    Embryonic,
    Established,
    /// A FIN one way.
    Closing,
    /// A FIN both ways, or a RST.
    Closed,
}

/// What the TCP flags of a flow's packets have shown so far: one byte of bits,
/// from which the phase is derived rather than stored, so the two can never
/// disagree.
///
/// No sequence checks: a spoofed RST closes the flow here. That only makes it
/// age out sooner; judging segments is the TCP proxy's job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpTracker(u8);

impl TcpTracker {
    const SYN_ORIGINAL: u8 = 1 << 0;
    const SYN_REPLY: u8 = 1 << 1;
    const FIN_ORIGINAL: u8 = 1 << 2;
    const FIN_REPLY: u8 = 1 << 3;
    const RST: u8 = 1 << 4;
    /// The flow's first packet was not a bare SYN: we joined mid-stream and
    /// will never see the handshake.
    const MID_STREAM: u8 = 1 << 5;

    /// The tracker after a flow's first packet (which is `Original` by
    /// definition).
    pub fn first(flags: u8) -> TcpTracker {
        let bare_syn = flags & (SYN | ACK) == SYN;
        let mut tracker = TcpTracker(if bare_syn { 0 } else { Self::MID_STREAM });
        tracker.record(flags, Direction::ClientToServer);
        tracker
    }

    /// The flags [`TcpTracker::record`] reads: a packet with none of them (a
    /// plain ACK or data segment, nearly every packet of a connection)
    /// leaves the tracker as it was.
    const FLAGS_TRACKED: u8 = SYN | FIN | RST;

    /// Folds in one packet's flags.
    pub fn record(&mut self, flags: u8, direction: Direction) {
        if flags & (SYN | ACK) == SYN && self.phase() == TcpPhase::Closed {
            // A new connection on the same 5-tuple (a client reusing a port
            // soon after the last close): track it afresh, or it would keep
            // the closed timeout for its whole life.
            self.0 = 0;
        }
        let (syn, fin) = match direction {
            Direction::ClientToServer => (Self::SYN_ORIGINAL, Self::FIN_ORIGINAL),
            Direction::ServerToClient => (Self::SYN_REPLY, Self::FIN_REPLY),
        };
        if flags & SYN != 0 {
            self.0 |= syn;
        }
        if flags & FIN != 0 {
            self.0 |= fin;
        }
        if flags & RST != 0 {
            self.0 |= Self::RST;
        }
    }

    pub fn phase(self) -> TcpPhase {
        let fins = self.0 & (Self::FIN_ORIGINAL | Self::FIN_REPLY);
        let syns = self.0 & (Self::SYN_ORIGINAL | Self::SYN_REPLY);
        if self.0 & Self::RST != 0 || fins == Self::FIN_ORIGINAL | Self::FIN_REPLY {
            TcpPhase::Closed
        } else if fins != 0 {
            TcpPhase::Closing
        } else if self.0 & Self::MID_STREAM != 0 || syns == Self::SYN_ORIGINAL | Self::SYN_REPLY {
            TcpPhase::Established
        } else {
            TcpPhase::Embryonic
        }
    }

    pub fn syn_seen(self, direction: Direction) -> bool {
        self.0 & self.pick(direction, Self::SYN_ORIGINAL, Self::SYN_REPLY) != 0
    }

    pub fn fin_seen(self, direction: Direction) -> bool {
        self.0 & self.pick(direction, Self::FIN_ORIGINAL, Self::FIN_REPLY) != 0
    }

    pub fn rst_seen(self) -> bool {
        self.0 & Self::RST != 0
    }

    /// Whether the flow was picked up without its handshake.
    pub fn mid_stream(self) -> bool {
        self.0 & Self::MID_STREAM != 0
    }

    fn pick(self, direction: Direction, original: u8, reply: u8) -> u8 {
        match direction {
            Direction::ClientToServer => original,
            Direction::ServerToClient => reply,
        }
    }
}

/// A flow table entry: exactly two cache lines, 128-aligned.
///
/// The first line holds everything a lookup and the per-packet update read:
/// the key compared on every probe, the hash, `last_seen`, the mode that
/// decides the packet's fate, the TCP bits and the initiator. The counters
/// follow, then what only expiry and listings read. 128-byte alignment
/// makes the pair one unit for the L2 spatial prefetcher (which fetches
/// 128-byte-aligned pairs of lines), so the miss on the first line brings the
/// counters along. `repr(C)` pins the field order that this depends on.
#[derive(Clone, Debug)]
#[repr(C, align(128))]
pub struct FlowEntry {
    // First line.
    key: FlowKey,
    tcp: TcpTracker,
    initiator: Orientation,
    hash: u64,
    last_seen_ms: u64,
    mode: FlowMode,
    /// The policy rule that classified the flow; 0 for the protocol default.
    rule: u32,
    // Second line.
    packets: [u64; 2],
    bytes: [u64; 2],
    first_seen_ms: u64,
    pub(crate) timer: TimerHandle,
    /// The rule's idle timeout, replacing the protocol's while the flow is
    /// open (0: none). Closing and closed TCP flows keep their short timeouts.
    idle_timeout_s: u32,
    /// Outer VLAN id of the first frame (0: untagged), so the flow can be
    /// classified again when the policy changes.
    vlan: u16,
    ingress: PortSide,
    /// [`ProxyLink`], encoded: the proxy state of a proxied flow, or the translations of one
    /// handed over to pass-through, live in the worker's proxy table.
    proxy: u32,
    /// [`HandoverCause`], encoded (0: never handed over).
    handover: u8,
}

impl FlowEntry {
    pub(crate) fn new(pkt: &PacketMeta, now_ms: u64, timer: TimerHandle) -> FlowEntry {
        let tcp = match (pkt.key.protocol(), pkt.tcp_flags) {
            (TCP, Some(flags)) => TcpTracker::first(flags),
            // A TCP packet without flags (a later fragment) still says the
            // flow is under way.
            (TCP, None) => TcpTracker(TcpTracker::MID_STREAM),
            _ => TcpTracker::default(),
        };
        FlowEntry {
            key: pkt.key,
            tcp,
            initiator: pkt.orientation,
            hash: pkt.hash,
            last_seen_ms: now_ms,
            mode: FlowMode::Bypass,
            rule: 0,
            packets: [1, 0],
            bytes: [u64::from(pkt.len), 0],
            first_seen_ms: now_ms,
            timer,
            idle_timeout_s: 0,
            vlan: 0,
            ingress: pkt.ingress,
            proxy: 0,
            handover: 0,
        }
    }

    /// Counts a packet of an existing flow. Returns the TCP phase before the
    /// packet if the packet changed it.
    #[inline]
    pub(crate) fn record(&mut self, pkt: &PacketMeta, now_ms: u64) -> Option<TcpPhase> {
        let direction = self.direction(pkt.orientation);
        let i = direction.index();
        // Wrapping: a counter cannot realistically wrap, and packet input
        // must never be able to panic a debug build.
        self.packets[i] = self.packets[i].wrapping_add(1);
        self.bytes[i] = self.bytes[i].wrapping_add(u64::from(pkt.len));
        self.last_seen_ms = now_ms;
        match pkt.tcp_flags {
            // The test of the flags first: it spares nearly every packet the
            // two phase derivations.
            Some(flags) if flags & TcpTracker::FLAGS_TRACKED != 0 && self.key.protocol() == TCP => {
                let before = self.tcp.phase();
                self.tcp.record(flags, direction);
                let after = self.tcp.phase();
                (after != before).then_some(before)
            }
            _ => None,
        }
    }

    /// Records a RST that did not pass through the table: one the data plane sent itself (the
    /// proxy resetting a connection it terminates), which the endpoints act on all the same.
    pub(crate) fn record_own_reset(&mut self) {
        if self.key.protocol() == TCP {
            self.tcp.record(RST, Direction::ClientToServer);
        }
    }

    pub fn key(&self) -> &FlowKey {
        &self.key
    }

    /// The hash the entry is stored under (NIC or software, as the worker
    /// passed it).
    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn mode(&self) -> FlowMode {
        self.mode
    }

    pub fn set_mode(&mut self, mode: FlowMode) {
        self.mode = mode;
    }

    /// Records the policy decision: mode, the rule that made it (0 for the
    /// protocol default) and the rule's idle timeout (0 for none).
    pub fn classify(&mut self, mode: FlowMode, rule: u32, idle_timeout_s: u32) {
        self.mode = mode;
        self.rule = rule;
        self.idle_timeout_s = idle_timeout_s;
    }

    pub fn rule(&self) -> u32 {
        self.rule
    }

    /// What the worker's proxy table holds for the flow.
    #[inline]
    pub fn proxy_link(&self) -> ProxyLink {
        match self.proxy {
            0 => ProxyLink::None,
            PROXY_FINISHED => ProxyLink::Finished,
            PROXY_PICKED_UP => ProxyLink::PickedUp,
            n => ProxyLink::Slot(n - 1),
        }
    }

    pub fn set_proxy_link(&mut self, link: ProxyLink) {
        self.proxy = match link {
            ProxyLink::None => 0,
            ProxyLink::Finished => PROXY_FINISHED,
            ProxyLink::PickedUp => PROXY_PICKED_UP,
            // Slots stay far below the markers: the table holds at most `max_flows`.
            ProxyLink::Slot(slot) => slot.saturating_add(1).min(PROXY_PICKED_UP - 1),
        };
    }

    /// Why the proxy handed the flow over to pass-through, if it did.
    pub fn handover(&self) -> Option<HandoverCause> {
        HandoverCause::from_code(self.handover)
    }

    pub fn set_handover(&mut self, cause: HandoverCause) {
        self.handover = cause.code();
    }

    /// The flow's slot in the worker's proxy table, if it has one.
    #[inline]
    pub fn proxy_slot(&self) -> Option<u32> {
        match self.proxy_link() {
            ProxyLink::Slot(slot) => Some(slot),
            _ => None,
        }
    }

    pub fn idle_timeout_s(&self) -> u32 {
        self.idle_timeout_s
    }

    pub fn set_vlan(&mut self, vlan: Option<u16>) {
        self.vlan = vlan.unwrap_or(0);
    }

    pub fn vlan(&self) -> Option<u16> {
        (self.vlan != 0).then_some(self.vlan)
    }

    /// The orientation of the flow's first packet: the initiator's, unless the
    /// flow was picked up mid-stream on a packet of the responder's.
    pub fn initiator(&self) -> Orientation {
        self.initiator
    }

    /// The direction of a packet that went this way.
    #[inline]
    pub fn direction(&self, orientation: Orientation) -> Direction {
        if orientation == self.initiator {
            Direction::ClientToServer
        } else {
            Direction::ServerToClient
        }
    }

    pub fn packets(&self, direction: Direction) -> u64 {
        self.packets[direction.index()]
    }

    /// Frame bytes, as the worker counted them.
    pub fn bytes(&self, direction: Direction) -> u64 {
        self.bytes[direction.index()]
    }

    pub fn first_seen_ms(&self) -> u64 {
        self.first_seen_ms
    }

    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms
    }

    /// The port index the first packet came in on.
    pub fn ingress(&self) -> PortSide {
        self.ingress
    }

    pub fn tcp(&self) -> TcpTracker {
        self.tcp
    }

    /// Tollgate reset the flow's connection itself (an operator cleared it): the entry takes
    /// the closed timeout, as one a peer reset would, so that the segments still in flight
    /// from either end meet it, in its orientation, rather than starting a new flow.
    pub fn close_by_reset(&mut self) {
        if self.key.protocol() == TCP {
            self.tcp.record(RST, Direction::ClientToServer);
        }
    }

    /// `None` unless the flow is TCP.
    pub fn tcp_phase(&self) -> Option<TcpPhase> {
        (self.key.protocol() == TCP).then(|| self.tcp.phase())
    }

    /// A TCP flow picked up mid-stream that nothing has come back for yet:
    /// it keeps only `FlowTimeouts::tcp_unreplied_ms` until the other side
    /// answers.
    pub fn unreplied(&self) -> bool {
        self.key.protocol() == TCP
            && self.tcp.mid_stream()
            && self.packets[Direction::ServerToClient.index()] == 0
    }

    /// When the flow expires if no further packet comes.
    pub fn deadline_ms(&self, timeouts: &FlowTimeouts) -> u64 {
        let phase = self.tcp.phase();
        let idle = match phase {
            TcpPhase::Closing | TcpPhase::Closed if self.key.protocol() == TCP => {
                timeouts.idle_ms(self.key.protocol(), phase)
            }
            _ if self.idle_timeout_s > 0 => u64::from(self.idle_timeout_s) * 1000,
            _ => timeouts.idle_ms(self.key.protocol(), phase),
        };
        let idle = if self.unreplied() {
            idle.min(timeouts.tcp_unreplied_ms)
        } else {
            idle
        };
        self.last_seen_ms.saturating_add(idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn entry_is_two_cache_lines_with_the_hot_fields_in_the_first() {
        assert_eq!(size_of::<FlowEntry>(), 128);
        assert_eq!(align_of::<FlowEntry>(), 128);
        assert_eq!(size_of::<FlowKey>(), 38);
        for (field, end) in [
            ("key", offset_of!(FlowEntry, key) + size_of::<FlowKey>()),
            ("hash", offset_of!(FlowEntry, hash) + 8),
            ("last_seen", offset_of!(FlowEntry, last_seen_ms) + 8),
            ("mode", offset_of!(FlowEntry, mode) + size_of::<FlowMode>()),
            ("rule", offset_of!(FlowEntry, rule) + 4),
            ("tcp", offset_of!(FlowEntry, tcp) + 1),
            ("initiator", offset_of!(FlowEntry, initiator) + 1),
        ] {
            assert!(end <= 64, "{field} ends at byte {end}, past the first line");
        }
        assert_eq!(size_of::<FlowMode>(), 1);
    }

    #[test]
    fn handover_causes_round_trip_through_their_byte() {
        let mut causes = vec![
            HandoverCause::Stall,
            HandoverCause::Policy,
            HandoverCause::Operator,
        ];
        causes.extend(IpsecFraming::ALL.map(HandoverCause::Detection));
        for cause in causes {
            assert_eq!(HandoverCause::from_code(cause.code()), Some(cause));
        }
        assert_eq!(HandoverCause::from_code(0), None);
    }

    /// `FlowEntry::record` skips the tracker for packets without any of
    /// these flags; every state and every other flag combination shows that
    /// loses nothing.
    #[test]
    fn flags_outside_the_tracked_ones_leave_every_tracker_as_it_was() {
        for state in 0..=u8::MAX {
            for flags in (0..=u8::MAX).filter(|f| f & TcpTracker::FLAGS_TRACKED == 0) {
                for direction in [Direction::ClientToServer, Direction::ServerToClient] {
                    let mut tracker = TcpTracker(state);
                    tracker.record(flags, direction);
                    assert_eq!(tracker, TcpTracker(state), "{state:#x} {flags:#x}");
                }
            }
        }
        for flags in [SYN, FIN, RST] {
            let mut tracker = TcpTracker::default();
            tracker.record(flags, Direction::ServerToClient);
            assert_ne!(tracker, TcpTracker::default(), "{flags:#x}");
        }
    }

    #[test]
    fn handshake_and_close_go_through_the_phases() {
        let mut tcp = TcpTracker::first(SYN);
        assert_eq!(tcp.phase(), TcpPhase::Embryonic);
        assert!(!tcp.mid_stream());
        tcp.record(SYN | ACK, Direction::ServerToClient);
        assert_eq!(tcp.phase(), TcpPhase::Established);
        tcp.record(ACK, Direction::ClientToServer);
        tcp.record(FIN | ACK, Direction::ServerToClient);
        assert_eq!(tcp.phase(), TcpPhase::Closing);
        assert!(
            tcp.fin_seen(Direction::ServerToClient) && !tcp.fin_seen(Direction::ClientToServer)
        );
        tcp.record(FIN | ACK, Direction::ClientToServer);
        assert_eq!(tcp.phase(), TcpPhase::Closed);
        assert!(tcp.syn_seen(Direction::ClientToServer) && tcp.syn_seen(Direction::ServerToClient));
    }

    #[test]
    fn rst_closes_from_any_phase() {
        let mut tcp = TcpTracker::first(SYN);
        tcp.record(RST | ACK, Direction::ServerToClient);
        assert_eq!(tcp.phase(), TcpPhase::Closed);
        assert!(tcp.rst_seen());
    }

    #[test]
    fn a_flow_picked_up_mid_stream_is_established() {
        for flags in [ACK, SYN | ACK, FIN | ACK, 0] {
            let tcp = TcpTracker::first(flags);
            assert!(tcp.mid_stream(), "flags {flags:#x}");
        }
        assert_eq!(TcpTracker::first(ACK).phase(), TcpPhase::Established);
        assert_eq!(TcpTracker::first(SYN | ACK).phase(), TcpPhase::Established);
        assert_eq!(TcpTracker::first(FIN | ACK).phase(), TcpPhase::Closing);
        assert_eq!(TcpTracker::first(RST).phase(), TcpPhase::Closed);
    }

    #[test]
    fn only_a_pick_up_with_no_answer_is_unreplied() {
        let meta = |src: &str, dst: &str, flags: u8| {
            let (key, orientation) =
                FlowKey::from_packet(src.parse().unwrap(), dst.parse().unwrap(), TCP, 40000, 443);
            PacketMeta {
                key,
                orientation,
                hash: key.software_hash(),
                len: 60,
                tcp_flags: Some(flags),
                ingress: PortSide::Inside,
            }
        };
        let (c, s) = ("198.18.0.1", "198.18.0.2");
        let mut picked = FlowEntry::new(&meta(c, s, ACK), 0, TimerHandle::UNSET);
        assert!(picked.unreplied());
        picked.record(&meta(c, s, ACK), 1);
        assert!(picked.unreplied(), "the same side again is no answer");
        picked.record(&meta(s, c, ACK), 2);
        assert!(!picked.unreplied());
        // A SYN's flow is embryonic, with its own timeout, not unreplied.
        assert!(!FlowEntry::new(&meta(c, s, SYN), 0, TimerHandle::UNSET).unreplied());
    }

    #[test]
    fn a_new_syn_on_a_closed_flow_starts_over() {
        let mut tcp = TcpTracker::first(SYN);
        tcp.record(RST, Direction::ServerToClient);
        tcp.record(SYN, Direction::ServerToClient);
        assert_eq!(tcp.phase(), TcpPhase::Embryonic);
        assert!(!tcp.rst_seen());
        tcp.record(SYN | ACK, Direction::ClientToServer);
        assert_eq!(tcp.phase(), TcpPhase::Established);
        // A SYN-ACK retransmission is not a new connection.
        tcp.record(RST, Direction::ClientToServer);
        tcp.record(SYN | ACK, Direction::ServerToClient);
        assert_eq!(tcp.phase(), TcpPhase::Closed);
    }
}
