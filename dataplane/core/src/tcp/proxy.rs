//! One proxied TCP flow (issue 4): two [`Endpoint`]s relaying one byte stream, sans-IO.
//!
//! The client leg is an endpoint created by [`Endpoint::accept`] that plays the server toward the
//! real client; the server leg one created by [`Endpoint::connect`] that plays the client toward
//! the real server. The proxy deals only in headers and payloads per leg: the driver builds
//! every frame with the real endpoints' MACs, addresses and ports, so neither side can tell a
//! proxy is there except by timing.
//!
//! Driving it is the endpoint's contract with a leg attached to every call: feed segments
//! ([`TcpProxy::on_segment`]) and timer expiries ([`TcpProxy::on_timer`]), then drain
//! [`TcpProxy::poll_transmit`] until `None` and [`TcpProxy::poll_event`]; [`TcpProxy::poll_at`]
//! says when the next timer is due.
//!
//! Set-up: the client's SYN is not answered until the server has answered ours, so a closed port
//! still refuses the client (a RST built by [`reset_for`]) and a silent server leaves the client's
//! SYN unanswered until the client gives up on its own. The server leg's ISS is the client's ISN
//! and the client leg's ISS the server's, and each leg offers the options the other side offered
//! (the window shift and the timestamp clock included): both legs then run in the same sequence
//! spaces with the same window units, and a later move to pass-through needs no translation
//! unless a SYN cookie made the spaces differ.
//!
//! Relay: in-order bytes taken from one leg pass through the [`Inspector`] and are queued on the
//! other leg as the payloads they arrived in (zero-copy). Each leg's advertised window is what
//! the other leg's send queue can still take, so a slow reader on one side closes the window of
//! the other (back-pressure through TCP's own flow control), and what the proxy buffers per
//! direction stays within [`ProxyConfig::buffer`]. A FIN is relayed after the data before it
//! (half-close either way); a RST or a timeout on one leg aborts the other.
//!
//! Stalls (issue 4, point 5): a hole in a leg's received stream that its peer leaves unfilled for
//! an RTO-scale time after our duplicate ACKs asked for it, the cTCP signature of
//! `reference/ipsec-over-tcp-fails-through-asa.txt`. [`StallConfig::action`] waits (the ASA's
//! behaviour), resets, or hands the flow over to pass-through: a [`Handover`] with the segments
//! the proxy still owes each side and the per-direction translations that keep both endpoints'
//! views valid from then on. [`TcpProxy::convert_to_passthrough`] is the same path for policy and
//! detection decisions (issue 5). The out-of-order timeout (`ReassemblyLimits::timeout_ms`) runs
//! on the same hole clock; its 10 s default outlasts the detection, so a hand-over still flushes
//! the held data. A shorter one (or an RTO backed off past 3.3 s, or a longer
//! [`StallConfig::after_ms`]) discards the data first: the hole stays open, the stall still comes
//! when due, and the discarded bytes are the peer's to send again.
//!
//! The flow ends when both legs are CLOSED or in TIME-WAIT. The proxy keeps legs in TIME-WAIT
//! (each holds its sequence numbers and a timer, nothing else), so a retransmitted FIN is still
//! answered; a worker short of memory may drop the flow as soon as [`TcpProxy::state`] says
//! [`ProxyState::TimeWait`]. At [`ProxyState::Closed`] and [`ProxyState::PassThrough`] the
//! endpoints are gone and only counters remain.

pub use crate::bypass::{Handover, Translation};
use std::collections::VecDeque;

use super::cookie::{CookieJar, CookieParams};
use super::endpoint::{
    reset_for, AcceptError, Endpoint, EndpointConfig, EndpointStats, Event, Reject, SegmentOutcome,
    State, SynOptions, Transmit,
};
use super::inspect::{Direction, Inspector, Verdict};
use super::owed::{OwedState, OwedStream, ReceiverView};
use super::payload::Payload;
use super::rtt::TimestampClock;
use super::segment::{Ecn, SegmentHeader, TcpFlags, TcpOptions, MAX_WINDOW_SCALE};
use super::seq::SeqNumber;

/// NOP NOP and the 10-byte timestamps option, on every segment once negotiated.
const TIMESTAMPS_LEN: usize = 12;

/// A stall needs at least this long without progress, whatever the RTO: a hole younger than a
/// second is loss recovery in progress, not a peer that never retransmits.
const MIN_STALL_MS: u64 = 1_000;

/// RTOs of silence on a hole before it is a stall: a real TCP sender retransmits within one
/// (its own timer) and usually much sooner (fast retransmit on our duplicate ACKs).
const STALL_RTOS: u64 = 3;

/// Of the leg's own RTO backoff, the doublings the stall clock follows. A few cover a peer
/// whose retransmissions are lost too, as ours may be. Beyond that our backoff says our own
/// segments go unacknowledged, which is what a peer that never retransmits causes when it also
/// ignores our window (cTCP does: its segments, ACKs included, land beyond the window and are
/// dropped); followed all the way, the stall would move away as fast as time goes by.
const STALL_MAX_BACKOFF: u32 = 2;

/// Which of the flow's two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// Toward the real client; our endpoint plays the server.
    Client,
    /// Toward the real server; our endpoint plays the client.
    Server,
}

impl Leg {
    pub fn other(self) -> Leg {
        match self {
            Leg::Client => Leg::Server,
            Leg::Server => Leg::Client,
        }
    }

    /// The direction of the bytes this leg receives.
    pub fn inbound(self) -> Direction {
        match self {
            Leg::Client => Direction::ClientToServer,
            Leg::Server => Direction::ServerToClient,
        }
    }

    /// 0 for the client leg, 1 for the server leg: for per-leg arrays.
    pub fn index(self) -> usize {
        match self {
            Leg::Client => 0,
            Leg::Server => 1,
        }
    }
}

/// What a detected stall does to the flow (a rule's `on-stall` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStall {
    /// Keep waiting for the missing bytes, as the ASA does: the flow is counted and left alone.
    Wait,
    /// Reset both legs.
    Reset,
    /// Hand the flow over to pass-through (a [`Handover`]), so a peer that never retransmits
    /// can go on.
    Bypass,
}

impl OnStall {
    /// As a rule's `on-stall` option spells it.
    pub fn name(self) -> &'static str {
        match self {
            OnStall::Wait => "wait",
            OnStall::Reset => "reset",
            OnStall::Bypass => "bypass",
        }
    }
}

/// When a hole is a stall, and what then happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallConfig {
    /// How long the hole must stay unfilled. `None`: max(3 × the leg's RTO, 1 s), the RTO being
    /// the leg's own toward that peer, as the best guess at the peer's, with at most two
    /// doublings of its backoff ([`STALL_MAX_BACKOFF`]).
    pub after_ms: Option<u64>,
    /// Duplicate ACKs the leg must have sent for the hole first: the peer must have been asked,
    /// the way fast retransmit asks (RFC 5681 section 3.2).
    pub dup_acks: u32,
    pub action: OnStall,
}

impl Default for StallConfig {
    fn default() -> StallConfig {
        StallConfig {
            after_ms: None,
            dup_acks: 3,
            action: OnStall::Wait,
        }
    }
}

/// A peer's MSS over IPv6 when its SYN states none (RFC 9293 §3.7.1).
const DEFAULT_PEER_MSS_V6: u16 = 1220;

/// How much longer an IPv6 header (40 bytes) is than an IPv4 one without options (20).
const IPV6_EXTRA_HEADER_LEN: u16 = 20;

/// Per-flow tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Both legs' TCP settings; the buffer sizes in it are replaced by `buffer`.
    pub endpoint: EndpointConfig,
    /// Bytes buffered per direction: the far leg's send queue, which bounds the near leg's
    /// window (issue 4: 256 KiB by default).
    pub buffer: usize,
    /// The largest MSS either leg offers; each offers the other side's MSS up to this, and a
    /// SYN cookie's SYN-ACK, which cannot know the server's, offers this. The daemon's
    /// `proxy.mss` is an IPv4 figure (the link MTU less 40): see [`ProxyConfig::for_ipv6`].
    pub mss: u16,
    /// Offer window scaling (with the shift the other side chose) where the other side did.
    pub window_scaling: bool,
    pub sack: bool,
    pub timestamps: bool,
    /// Set up ECN (RFC 3168) on each leg whose endpoint offers it: the server leg's SYN asks
    /// for it when the client's did, the client leg's SYN-ACK accepts when the server did.
    pub ecn: bool,
    /// Our window shift in SYN-ACKs sent with SYN cookies, when the server's is not known yet.
    pub cookie_window_scale: u8,
    pub stall: StallConfig,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            endpoint: EndpointConfig::default(),
            buffer: 256 * 1024,
            mss: 1460,
            window_scaling: true,
            sack: true,
            timestamps: true,
            ecn: true,
            cookie_window_scale: 7,
            stall: StallConfig::default(),
        }
    }
}

impl ProxyConfig {
    fn leg_config(&self) -> EndpointConfig {
        EndpointConfig {
            send_buffer: self.buffer,
            receive_buffer: self.buffer,
            ..self.endpoint
        }
    }

    /// The configuration of an IPv6 flow: its header is 20 bytes longer than IPv4's, so on the
    /// same link each segment carries 20 bytes less (1440 on a 1500-byte MTU, as Linux offers),
    /// and a peer that states no MSS can take 1220 bytes, not IPv4's 536.
    pub fn for_ipv6(self) -> ProxyConfig {
        ProxyConfig {
            mss: self.mss.saturating_sub(IPV6_EXTRA_HEADER_LEN),
            endpoint: EndpointConfig {
                default_peer_mss: DEFAULT_PEER_MSS_V6,
                ..self.endpoint
            },
            ..self
        }
    }

    /// The window of a SYN-ACK the client leg sends, or a cookie SYN-ACK standing in for it.
    fn syn_window(&self) -> u16 {
        self.buffer.min(usize::from(u16::MAX)) as u16
    }
}

/// Where the flow is (as `flows list` names it: "connecting", "relaying", "time-wait",
/// "closed", "pass-through").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyState {
    /// Our SYN to the server is out and unanswered; the client's SYN waits for the answer (or,
    /// after a SYN cookie, the client leg is open and its data waits for the server).
    #[default]
    Connecting,
    /// Both legs exist and relay (the client leg may still be completing its handshake).
    Relaying,
    /// Both legs are done and at least one is in TIME-WAIT, answering retransmitted FINs.
    TimeWait,
    /// Nothing left; the flow can be dropped.
    Closed,
    /// Handed over to pass-through; the endpoints are gone and the flow is the worker's to
    /// forward with the [`Handover`]'s translations.
    PassThrough,
}

impl ProxyState {
    pub fn name(self) -> &'static str {
        match self {
            ProxyState::Connecting => "connecting",
            ProxyState::Relaying => "relaying",
            ProxyState::TimeWait => "time-wait",
            ProxyState::Closed => "closed",
            ProxyState::PassThrough => "pass-through",
        }
    }
}

impl std::fmt::Display for ProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the worker learns from [`TcpProxy::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyEvent {
    /// Both handshakes completed.
    Established,
    /// The server refused our SYN; the client was refused in turn.
    Refused,
    /// The server never answered our SYN; the client's SYN is left unanswered.
    ConnectTimedOut,
    /// The peer of `leg` reset it; the other leg was aborted.
    Reset { leg: Leg },
    /// The peer of `leg` stopped answering (retransmissions, probes or keepalives); the other
    /// leg was aborted.
    TimedOut { leg: Leg },
    /// `leg` saw nothing for the configured idle time; [`TcpProxy::abort`] is the worker's call.
    IdleTimeout { leg: Leg },
    /// A signature matched in `direction`'s stream; both legs were reset.
    InspectorReset {
        direction: Direction,
        signature: u32,
    },
    /// A hole on `leg` went unfilled; `action` is what was done (a bypass that cannot be done
    /// yet, during a handshake, waits instead).
    Stalled { leg: Leg, action: OnStall },
    /// The flow is pass-through now: [`TcpProxy::take_handover`] has what to do, unless the
    /// worker asked for it with [`TcpProxy::convert_to_passthrough`] and has it already.
    PassThrough,
    /// Both legs are closed and gone.
    Closed,
}

/// Why a flow cannot be handed over now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "a handshake is still in progress, so the two legs' sequence spaces cannot be related \
         yet; try again once the flow is established"
    )]
    HandshakeInProgress,
    #[error("the flow is closed or already pass-through: there is nothing to hand over")]
    Finished,
    #[error(
        "one endpoint has closed its connection for good, so it would answer the other's \
         segments with resets; the flow stays proxied until it ends"
    )]
    Closing,
}

/// One leg, for `flows list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegStats {
    pub state: State,
    /// Retransmissions, smoothed RTT, windows and buffers of this leg.
    pub tcp: EndpointStats,
}

/// The flow, for `flows list` and `stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    pub state: ProxyState,
    /// `None` before the leg exists; the last values once the flow is closed or pass-through.
    pub client: Option<LegStats>,
    pub server: Option<LegStats>,
    /// In-order bytes received from the client and not yet acknowledged by the server.
    pub buffered_client_to_server: usize,
    pub buffered_server_to_client: usize,
    pub stalls: u64,
    pub inspector_resets: u64,
    /// The signature behind the last inspector reset.
    pub last_signature: Option<u32>,
}

/// Duplicate ACKs a leg has sent for the hole at `hole_at` (its RCV.NXT then).
#[derive(Debug, Clone, Copy, Default)]
struct StallWatch {
    hole_at: Option<SeqNumber>,
    dup_acks: u32,
    reported: bool,
}

/// One proxied flow; see the module documentation.
pub struct TcpProxy<P: Payload, I: Inspector> {
    config: ProxyConfig,
    state: ProxyState,
    client: Option<Endpoint<P>>,
    server: Option<Endpoint<P>>,
    /// The client's SYN, until the client leg is opened with it (or refused).
    client_syn: Option<SegmentHeader>,
    inspector: I,
    inspection: I::State,
    /// Per direction: a payload taken from one leg and inspected that the other leg's send queue
    /// could not take yet.
    carry: [Option<P>; 2],
    fin_relayed: [bool; 2],
    /// A leg's TIME-WAIT ended with a RST, which resets nothing else.
    time_wait_reset: [bool; 2],
    stall: [StallWatch; 2],
    /// Segments the proxy itself sends (the RST refusing a client), ahead of the legs'.
    pending: VecDeque<(Leg, Transmit<P>)>,
    events: VecDeque<ProxyEvent>,
    established_reported: bool,
    handover: Option<Handover>,
    /// After a handover: what the proxy still owes each leg's endpoint, by [`Leg::index`].
    owed: Option<Box<[OwedStream<P>; 2]>>,
    /// The translations once pass-through, for `seq_offset`.
    passthrough: Option<[Translation; 2]>,
    /// The legs' last counters once they are gone; boxed, since a live flow does not need them.
    final_legs: Option<Box<[Option<LegStats>; 2]>>,
    stalls: u64,
    inspector_resets: u64,
    last_signature: Option<u32>,
}

fn is_syn(hdr: &SegmentHeader) -> bool {
    hdr.flags.contains(TcpFlags::SYN)
        && !hdr
            .flags
            .intersects(TcpFlags::ACK | TcpFlags::RST | TcpFlags::FIN)
}

/// Whether a SYN without ACK is an ECN-setup SYN (RFC 3168 §6.1.1).
fn offers_ecn(syn: &SegmentHeader) -> bool {
    syn.flags.contains(TcpFlags::ECE | TcpFlags::CWR)
}

/// The server leg's SYN: what the client's SYN offered, within the configuration.
fn mirror_offer(config: &ProxyConfig, syn: &SegmentHeader, now: u64) -> SynOptions {
    let client = &syn.options;
    SynOptions {
        mss: client
            .mss
            .unwrap_or(config.endpoint.default_peer_mss)
            .min(config.mss),
        window_scale: client
            .window_scale
            .filter(|_| config.window_scaling)
            .map(|shift| shift.min(MAX_WINDOW_SCALE)),
        sack_permitted: client.sack_permitted && config.sack,
        timestamps: client
            .timestamps
            .filter(|_| config.timestamps)
            .map(|(tsval, _)| TimestampClock::carried(tsval, now)),
        ecn: config.ecn && offers_ecn(syn),
    }
}

/// The client leg's SYN-ACK: what the server's SYN-ACK settled with our (mirrored) SYN, so only
/// options both real endpoints support.
fn offer_from_server<P: Payload>(
    config: &ProxyConfig,
    server: &Endpoint<P>,
    now: u64,
) -> SynOptions {
    let negotiated = server.negotiated();
    SynOptions {
        mss: negotiated.peer_mss.min(config.mss),
        window_scale: negotiated.window_scaling.then_some(negotiated.snd_wscale),
        sack_permitted: negotiated.sack,
        timestamps: negotiated
            .timestamps
            .map(|_| TimestampClock::carried(server.ts_recent(), now)),
        // The server leg asked only for a client that did.
        ecn: negotiated.ecn,
    }
}

/// Whether a cookie SYN-ACK uses timestamps (and so can carry window scale and SACK in them).
fn cookie_uses_timestamps(config: &ProxyConfig, client_offered_timestamps: bool) -> bool {
    config.timestamps && client_offered_timestamps
}

/// The SYN-ACK answering `syn` with a SYN cookie, for a worker under SYN pressure: `cookie` from
/// [`CookieJar::syn_ack_isn`], `clock` the client leg's timestamp clock, which
/// [`TcpProxy::on_client_cookie_ack`] must be given again (the worker keeps no state, so it
/// derives the clock from the flow, e.g. a keyed hash of the addresses). Window scale and SACK
/// are offered only with timestamps, which are where the cookie remembers them. ECN is not
/// accepted, unlike a host's own cookies: whether the server takes it is not known yet, and a
/// client leg with ECN over a server leg without would, once handed over, send ECN-capable
/// packets to a server that ignores congestion marks.
pub fn cookie_syn_ack(
    config: &ProxyConfig,
    syn: &SegmentHeader,
    cookie: SeqNumber,
    clock: TimestampClock,
    now: u64,
) -> SegmentHeader {
    let client = &syn.options;
    let timestamps = cookie_uses_timestamps(config, client.timestamps.is_some());
    let window_scale = client
        .window_scale
        .filter(|_| timestamps && config.window_scaling);
    let sack_permitted = client.sack_permitted && config.sack && timestamps;
    let mut options = TcpOptions {
        mss: Some(config.mss),
        window_scale: window_scale.map(|_| config.cookie_window_scale.min(MAX_WINDOW_SCALE)),
        sack_permitted,
        ..TcpOptions::default()
    };
    if let (true, Some((tsval, _))) = (timestamps, client.timestamps) {
        let ours = CookieJar::timestamp_for(window_scale, sack_permitted, clock.tsval(now));
        options.timestamps = Some((ours, tsval));
    }
    SegmentHeader {
        src_port: syn.dst_port,
        dst_port: syn.src_port,
        seq: cookie,
        ack: syn.seq + 1,
        flags: TcpFlags::SYN | TcpFlags::ACK,
        window: config.syn_window(),
        urgent: 0,
        options,
        ecn: Ecn::NotEct,
    }
}

impl<P: Payload, I: Inspector> TcpProxy<P, I> {
    fn new(
        config: ProxyConfig,
        inspector: I,
        client: Option<Endpoint<P>>,
        server: Endpoint<P>,
        client_syn: Option<SegmentHeader>,
    ) -> TcpProxy<P, I> {
        TcpProxy {
            config,
            state: ProxyState::Connecting,
            client,
            server: Some(server),
            client_syn,
            inspector,
            inspection: I::State::default(),
            carry: [None, None],
            fin_relayed: [false; 2],
            time_wait_reset: [false; 2],
            stall: [StallWatch::default(); 2],
            pending: VecDeque::new(),
            events: VecDeque::new(),
            established_reported: false,
            handover: None,
            owed: None,
            passthrough: None,
            final_legs: None,
            stalls: 0,
            inspector_resets: 0,
            last_signature: None,
        }
    }

    /// A new flow from the client's SYN: the server leg connects with the client's ISN as its
    /// ISS and the client's options (within `config`); the client's SYN is answered only once
    /// the server has answered. Ports come from the SYN (the client's is the server leg's local
    /// port, as transparency wants).
    pub fn on_client_syn(
        config: ProxyConfig,
        inspector: I,
        syn: &SegmentHeader,
        now: u64,
    ) -> Result<TcpProxy<P, I>, AcceptError> {
        if !is_syn(syn) {
            return Err(AcceptError::NotASyn);
        }
        let offer = mirror_offer(&config, syn, now);
        let server = Endpoint::connect(
            config.leg_config(),
            syn.src_port,
            syn.dst_port,
            syn.seq,
            offer,
            now,
        );
        Ok(TcpProxy::new(config, inspector, None, server, Some(*syn)))
    }

    /// A new flow whose client handshake a SYN cookie completed: `ack` is the client's
    /// handshake-completing segment (with `payload`, which it may carry), `params` what
    /// [`CookieJar::validate`] read from it, `clock` the one given to [`cookie_syn_ack`]. The
    /// client leg starts ESTABLISHED with the cookie as its ISS, and the server leg connects
    /// (ISS = the client's ISN) with the client's options as the cookie remembers them.
    ///
    /// The client's data is queued for the server meanwhile. A server that refuses or never
    /// answers now shows as a reset of an established connection: the price of stateless
    /// set-up. The server-to-client sequence spaces differ by the cookie less the server's ISN,
    /// which only a [`Handover`] needs to know about.
    pub fn on_client_cookie_ack(
        config: ProxyConfig,
        inspector: I,
        ack: &SegmentHeader,
        payload: P,
        params: CookieParams,
        clock: TimestampClock,
        now: u64,
    ) -> Result<TcpProxy<P, I>, AcceptError> {
        let echoed = ack.options.timestamps.filter(|_| params.timestamps);
        let timestamps = cookie_uses_timestamps(&config, echoed.is_some());
        // The client's SYN as far as the cookie knows it (without ECN, which neither leg uses).
        let syn = SegmentHeader {
            src_port: ack.src_port,
            dst_port: ack.dst_port,
            seq: ack.seq - 1,
            ack: SeqNumber(0),
            flags: TcpFlags::SYN,
            window: ack.window,
            urgent: 0,
            options: TcpOptions {
                mss: Some(params.mss),
                window_scale: params
                    .window_scale
                    .filter(|_| timestamps && config.window_scaling),
                sack_permitted: params.sack_permitted && config.sack && timestamps,
                timestamps: echoed.filter(|_| timestamps).map(|(tsval, _)| (tsval, 0)),
                ..TcpOptions::default()
            },
            ecn: Ecn::NotEct,
        };
        // What `cookie_syn_ack` offered.
        let offer = SynOptions {
            mss: config.mss,
            window_scale: syn
                .options
                .window_scale
                .map(|_| config.cookie_window_scale.min(MAX_WINDOW_SCALE)),
            sack_permitted: syn.options.sack_permitted,
            timestamps: timestamps.then_some(clock),
            ecn: false,
        };
        let (client, _) = Endpoint::accept_cookie(
            config.leg_config(),
            &syn,
            ack,
            payload,
            ack.dst_port,
            ack.src_port,
            ack.ack - 1,
            offer,
            now,
        )?;
        let server = Endpoint::connect(
            config.leg_config(),
            ack.src_port,
            ack.dst_port,
            syn.seq,
            mirror_offer(&config, &syn, now),
            now,
        );
        let mut proxy = TcpProxy::new(config, inspector, Some(client), server, None);
        proxy.process(now);
        Ok(proxy)
    }

    // ---- accessors ----

    pub fn state(&self) -> ProxyState {
        self.state
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// Whether a new SYN from the client ends this connection and opens another on its ports,
    /// as the real server's TIME-WAIT would take it: the client leg's TIME-WAIT yields to it
    /// (RFC 6191) and the server leg owes nothing but perhaps the ACK of its FIN. A client that
    /// reconnects from the same port right after its FIN was acknowledged finds the server leg
    /// still waiting for that ACK; an old duplicate SYN finds the connection as it was.
    pub fn yields_to_client_syn(&self, syn: &SegmentHeader) -> bool {
        match self.state {
            ProxyState::Closed => true,
            ProxyState::PassThrough => false,
            state => {
                let Some(client) = self.client.as_ref() else {
                    return false;
                };
                let client_done = match client.state() {
                    State::TimeWait => client.time_wait_yields_to(syn),
                    State::Closed => state == ProxyState::TimeWait,
                    _ => false,
                };
                client_done
                    && self
                        .server
                        .as_ref()
                        .is_none_or(Endpoint::done_but_for_our_fin)
            }
        }
    }

    /// One leg's endpoint, while it exists.
    pub fn leg(&self, leg: Leg) -> Option<&Endpoint<P>> {
        match leg {
            Leg::Client => self.client.as_ref(),
            Leg::Server => self.server.as_ref(),
        }
    }

    fn leg_mut(&mut self, leg: Leg) -> Option<&mut Endpoint<P>> {
        match leg {
            Leg::Client => self.client.as_mut(),
            Leg::Server => self.server.as_mut(),
        }
    }

    /// What to add to the sequence numbers of segments going `direction` for the receiver to
    /// read them in its own leg's numbering: the server leg's number for a byte of the client's
    /// stream less the client leg's (or the reverse). Zero while a leg's ISN is unknown, and
    /// zero whenever the legs share sequence spaces, which they do unless a SYN cookie was used.
    pub fn seq_offset(&self, direction: Direction) -> u32 {
        if let Some(translations) = &self.passthrough {
            return translations[direction.index()].seq_delta;
        }
        let (Some(client), Some(server)) = (&self.client, &self.server) else {
            return 0;
        };
        match direction {
            Direction::ClientToServer => server.iss().0.wrapping_sub(client.irs().0),
            Direction::ServerToClient if server.state() != State::SynSent => {
                client.iss().0.wrapping_sub(server.irs().0)
            }
            Direction::ServerToClient => 0,
        }
    }

    /// In-order bytes of `direction` the proxy holds: received and not yet relayed, relayed and
    /// not yet acknowledged by the far peer.
    pub fn buffered(&self, direction: Direction) -> usize {
        let (src, dst) = match direction {
            Direction::ClientToServer => (&self.client, &self.server),
            Direction::ServerToClient => (&self.server, &self.client),
        };
        let carried = self.carry[direction.index()]
            .as_ref()
            .map_or(0, Payload::len);
        src.as_ref().map_or(0, Endpoint::recv_ready)
            + carried
            + dst.as_ref().map_or(0, |ep| ep.stats().send_buffered)
    }

    pub fn stats(&self) -> ProxyStats {
        let leg_stats = |ep: &Endpoint<P>| LegStats {
            state: ep.state(),
            tcp: ep.stats(),
        };
        ProxyStats {
            state: self.state,
            client: self
                .client
                .as_ref()
                .map(leg_stats)
                .or_else(|| self.final_leg(Leg::Client)),
            server: self
                .server
                .as_ref()
                .map(leg_stats)
                .or_else(|| self.final_leg(Leg::Server)),
            buffered_client_to_server: self.buffered(Direction::ClientToServer),
            buffered_server_to_client: self.buffered(Direction::ServerToClient),
            stalls: self.stalls,
            inspector_resets: self.inspector_resets,
            last_signature: self.last_signature,
        }
    }

    fn final_leg(&self, leg: Leg) -> Option<LegStats> {
        self.final_legs.as_ref().and_then(|legs| legs[leg.index()])
    }

    fn is_over(&self) -> bool {
        matches!(self.state, ProxyState::Closed | ProxyState::PassThrough)
    }

    // ---- the driver's calls ----

    /// A segment received from `leg`'s peer. The outcome is the leg's; a segment for a leg
    /// that does not exist (yet or any more) is `Rejected`, except the client's SYN sent again
    /// while the server is being asked, which is quietly `Accepted`.
    pub fn on_segment(
        &mut self,
        leg: Leg,
        hdr: &SegmentHeader,
        payload: P,
        now: u64,
    ) -> SegmentOutcome {
        if self.is_over() {
            return SegmentOutcome::Rejected(Reject::Closed);
        }
        let lingering = self
            .leg(leg)
            .is_some_and(|endpoint| endpoint.state() == State::TimeWait);
        let outcome = match self.leg_mut(leg) {
            Some(endpoint) => endpoint.on_segment(hdr, payload, now),
            None => self.on_segment_before_client_leg(hdr, now),
        };
        self.carry_timestamps(leg);
        if lingering && outcome == SegmentOutcome::ResetAccepted {
            // Both directions of this leg were complete: a peer that already closed answers
            // our ACK of its retransmitted FIN with a RST. Nothing of the other leg's is at
            // stake, so the other leg finishes its delivery.
            self.time_wait_reset[leg.index()] = true;
        }
        self.process(now);
        outcome
    }

    /// Each leg sends the TSvals of the endpoint across the proxy (see [`TimestampClock::carried`]):
    /// TS.Recent, as `from` accepted it, so a forged or replayed TSval never moves our clock.
    fn carry_timestamps(&mut self, from: Leg) {
        let Some(tsval) = self
            .leg(from)
            .filter(|endpoint| endpoint.negotiated().timestamps.is_some())
            .map(Endpoint::ts_recent)
        else {
            return;
        };
        if let Some(other) = self.leg_mut(from.other()) {
            other.carry_tsval(tsval);
        }
    }

    /// The client is in SYN-SENT and knows only its own SYN.
    fn on_segment_before_client_leg(&mut self, hdr: &SegmentHeader, now: u64) -> SegmentOutcome {
        let Some(syn) = self.client_syn else {
            return SegmentOutcome::Rejected(Reject::Closed);
        };
        if hdr.flags.contains(TcpFlags::RST) {
            // The only RST a client in SYN-SENT can mean is one at SND.NXT (RFC 5961 section 3
            // would want it at our RCV.NXT, which is the same number).
            if hdr.seq != syn.seq + 1 {
                return SegmentOutcome::Rejected(Reject::RstOutOfWindow);
            }
            self.events
                .push_back(ProxyEvent::Reset { leg: Leg::Client });
            self.client_syn = None;
            if let Some(server) = self.server.as_mut() {
                server.abort(now);
            }
            return SegmentOutcome::ResetAccepted;
        }
        if is_syn(hdr) && hdr.seq == syn.seq {
            // The server leg retransmits its own SYN; the client's says nothing new, except
            // that a client falling back from ECN (Linux resends its SYN without ECE and CWR,
            // RFC 3168 §6.1.1.1) must not be answered with an ECN-setup SYN-ACK, and the server
            // leg falls back too: legs that disagree would, once handed over, leave one end
            // sending ECN-capable packets to a peer that ignores their marks.
            if !offers_ecn(hdr) {
                if let Some(syn) = self.client_syn.as_mut() {
                    syn.flags.remove(TcpFlags::ECE | TcpFlags::CWR);
                }
                if let Some(server) = self.server.as_mut() {
                    server.withdraw_ecn_offer();
                }
            }
            return SegmentOutcome::Accepted;
        }
        SegmentOutcome::Rejected(Reject::Unexpected)
    }

    /// The next segment to send and the leg to send it on; call until `None`.
    pub fn poll_transmit(&mut self, now: u64) -> Option<(Leg, Transmit<P>)> {
        if let Some(out) = self.pending.pop_front() {
            return Some(out);
        }
        if let Some(owed) = self.owed.as_mut() {
            for leg in [Leg::Client, Leg::Server] {
                if let Some(transmit) = owed[leg.index()].poll_transmit(now) {
                    return Some((leg, transmit));
                }
            }
        }
        for leg in [Leg::Client, Leg::Server] {
            if let Some(transmit) = self.leg_mut(leg).and_then(|ep| ep.poll_transmit(now)) {
                self.note_transmit(leg, &transmit);
                return Some((leg, transmit));
            }
        }
        None
    }

    /// When `on_timer` next needs calling, if ever.
    pub fn poll_at(&self) -> Option<u64> {
        if let Some(owed) = self.owed.as_ref() {
            return owed.iter().filter_map(OwedStream::poll_at).min();
        }
        if self.is_over() {
            return None;
        }
        [
            self.client.as_ref().and_then(Endpoint::poll_at),
            self.server.as_ref().and_then(Endpoint::poll_at),
            self.stall_deadline(Leg::Client),
            self.stall_deadline(Leg::Server),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers due at `now`.
    pub fn on_timer(&mut self, now: u64) {
        if let Some(owed) = self.owed.as_mut() {
            owed.iter_mut().for_each(|stream| stream.on_timer(now));
            return;
        }
        if self.is_over() {
            return;
        }
        for leg in [Leg::Client, Leg::Server] {
            if let Some(endpoint) = self.leg_mut(leg) {
                if endpoint.poll_at().is_some_and(|at| at <= now) {
                    endpoint.on_timer(now);
                }
            }
        }
        self.process(now);
    }

    pub fn poll_event(&mut self) -> Option<ProxyEvent> {
        self.events.pop_front()
    }

    /// The handover a stall with [`OnStall::Bypass`] produced, once.
    pub fn take_handover(&mut self) -> Option<Handover> {
        self.handover.take()
    }

    /// Resets both legs (an idle timeout, a budget exhausted, an operator's `flows clear`).
    pub fn abort(&mut self, now: u64) {
        if self.is_over() {
            return;
        }
        self.reset_legs(now);
        self.process(now);
    }

    /// Ends the proxying and hands the flow over to pass-through, for a policy or detection
    /// decision (issue 5) as for a stall. Before the server has answered there is nothing to
    /// translate or flush: the client's SYN, sent again, reaches the server, whose answer matches
    /// what the client offered since our SYN mirrored it.
    pub fn convert_to_passthrough(&mut self, now: u64) -> Result<Handover, ConvertError> {
        let handover = self.hand_over(now)?;
        self.events.push_back(ProxyEvent::PassThrough);
        Ok(handover)
    }

    // ---- inside ----

    /// After anything that may have changed a leg: legs' events, relaying both ways,
    /// back-pressure, stalls, the end of the flow.
    fn process(&mut self, now: u64) {
        self.handle_leg_events(now);
        if !self.is_over() {
            self.relay(Direction::ClientToServer, now);
            self.relay(Direction::ServerToClient, now);
            self.handle_leg_events(now);
            self.update_receive_capacities();
            self.check_stalls(now);
            self.handle_leg_events(now);
        }
        self.check_finished(now);
    }

    fn handle_leg_events(&mut self, now: u64) {
        loop {
            let mut handled = false;
            for leg in [Leg::Server, Leg::Client] {
                while let Some(event) = self.leg_mut(leg).and_then(Endpoint::poll_event) {
                    handled = true;
                    self.on_leg_event(leg, event, now);
                }
            }
            if !handled {
                return;
            }
        }
    }

    fn on_leg_event(&mut self, leg: Leg, event: Event, now: u64) {
        match event {
            Event::Established => {
                if leg == Leg::Server {
                    if self.client.is_none() {
                        self.open_client_leg(now);
                    }
                    if self.state == ProxyState::Connecting {
                        self.state = ProxyState::Relaying;
                    }
                }
                let synchronized = |ep: &Option<Endpoint<P>>| {
                    ep.as_ref().is_some_and(|e| e.state().is_synchronized())
                };
                if !self.established_reported
                    && synchronized(&self.client)
                    && synchronized(&self.server)
                {
                    self.established_reported = true;
                    self.events.push_back(ProxyEvent::Established);
                }
            }
            Event::Refused => {
                self.events.push_back(ProxyEvent::Refused);
                match self.client_syn.take() {
                    // The client hears what it would have heard without us.
                    Some(syn) if self.client.is_none() => {
                        if let Some(header) = reset_for(&syn, 0) {
                            let rst = Transmit {
                                header,
                                payload: None,
                            };
                            self.pending.push_back((Leg::Client, rst));
                        }
                    }
                    _ => self.abort_leg(leg.other(), now),
                }
            }
            Event::TimedOut if leg == Leg::Server && self.client.is_none() => {
                // Nothing is sent to the client: its own SYN timer tells it, as without us.
                self.client_syn = None;
                self.events.push_back(ProxyEvent::ConnectTimedOut);
            }
            Event::TimedOut => {
                self.events.push_back(ProxyEvent::TimedOut { leg });
                self.abort_leg(leg.other(), now);
            }
            Event::Reset if self.time_wait_reset[leg.index()] => {}
            Event::Reset => {
                self.events.push_back(ProxyEvent::Reset { leg });
                self.abort_leg(leg.other(), now);
            }
            Event::IdleTimeout => self.events.push_back(ProxyEvent::IdleTimeout { leg }),
            Event::PeerClosed | Event::Closed => {}
        }
    }

    /// The server answered: the client's SYN is answered in turn, with the server's ISN and
    /// the options both sides support.
    fn open_client_leg(&mut self, now: u64) {
        let (Some(syn), Some(server)) = (self.client_syn.take(), self.server.as_ref()) else {
            return;
        };
        let offer = offer_from_server(&self.config, server, now);
        let accepted = Endpoint::accept(
            self.config.leg_config(),
            &syn,
            syn.dst_port,
            syn.src_port,
            server.irs(),
            offer,
            now,
        );
        match accepted {
            Ok(client) => self.client = Some(client),
            // `on_client_syn` checked it was a SYN, so this cannot happen; if it did, the
            // server must not keep a connection nobody will use.
            Err(_) => self.abort_leg(Leg::Server, now),
        }
    }

    fn abort_leg(&mut self, leg: Leg, now: u64) {
        if let Some(endpoint) = self.leg_mut(leg) {
            if endpoint.state() != State::Closed {
                endpoint.abort(now);
            }
        }
    }

    fn reset_legs(&mut self, now: u64) {
        self.carry = [None, None];
        self.client_syn = None;
        self.abort_leg(Leg::Client, now);
        self.abort_leg(Leg::Server, now);
    }

    /// Moves `direction`'s in-order bytes from the receiving leg through the inspector to the
    /// sending leg, as long as its send queue takes them; then the FIN, after the last byte.
    fn relay(&mut self, direction: Direction, now: u64) {
        let d = direction.index();
        let (src, dst) = match direction {
            Direction::ClientToServer => (self.client.as_mut(), self.server.as_mut()),
            Direction::ServerToClient => (self.server.as_mut(), self.client.as_mut()),
        };
        let (Some(src), Some(dst)) = (src, dst) else {
            return;
        };
        let carry = &mut self.carry[d];
        let mut matched = None;
        loop {
            let payload = match carry.take() {
                Some(payload) => payload,
                None => {
                    let Some(payload) = src.recv() else {
                        break;
                    };
                    let verdict =
                        self.inspector
                            .inspect(&mut self.inspection, direction, payload.bytes());
                    if let Verdict::Reset { signature } = verdict {
                        // These bytes complete the match: they must not reach the other side.
                        matched = Some(signature);
                        break;
                    }
                    payload
                }
            };
            if let Err(payload) = dst.send(payload) {
                *carry = Some(payload);
                break;
            }
        }
        if let Some(signature) = matched {
            self.inspector_resets += 1;
            self.last_signature = Some(signature);
            self.events.push_back(ProxyEvent::InspectorReset {
                direction,
                signature,
            });
            self.reset_legs(now);
            return;
        }
        if carry.is_none() && src.recv_ready() == 0 && src.peer_closed() && !self.fin_relayed[d] {
            dst.shutdown_write();
            self.fin_relayed[d] = true;
        }
    }

    /// Back-pressure: each leg may take in what the other leg's send queue can still hold.
    fn update_receive_capacities(&mut self) {
        let (Some(client), Some(server)) = (self.client.as_mut(), self.server.as_mut()) else {
            return;
        };
        let carried = |carry: &Option<P>| carry.as_ref().map_or(0, Payload::len);
        let c2s = Direction::ClientToServer.index();
        let s2c = Direction::ServerToClient.index();
        client.set_receive_capacity(
            server
                .send_capacity()
                .saturating_sub(carried(&self.carry[c2s])),
        );
        server.set_receive_capacity(
            client
                .send_capacity()
                .saturating_sub(carried(&self.carry[s2c])),
        );
    }

    /// Counts the duplicate ACKs a leg sends for the hole at its RCV.NXT (RFC 5681 section 2:
    /// pure ACKs repeating the acknowledgment number).
    fn note_transmit(&mut self, leg: Leg, transmit: &Transmit<P>) {
        let Some(endpoint) = self.leg(leg) else {
            return;
        };
        let header = &transmit.header;
        if endpoint.oldest_hole_since_ms().is_none()
            || transmit.payload.is_some()
            || header.flags != TcpFlags::ACK
            || header.ack != endpoint.rcv_nxt()
        {
            return;
        }
        let watch = &mut self.stall[leg.index()];
        if watch.hole_at != Some(header.ack) {
            *watch = StallWatch {
                hole_at: Some(header.ack),
                ..StallWatch::default()
            };
        }
        watch.dup_acks += 1;
    }

    fn stall_after(&self, endpoint: &Endpoint<P>) -> u64 {
        self.config.stall.after_ms.unwrap_or_else(|| {
            (STALL_RTOS * endpoint.rto_ms_backed_off_at_most(STALL_MAX_BACKOFF)).max(MIN_STALL_MS)
        })
    }

    /// When the hole on `leg` becomes a stall, if it has been asked for often enough and not
    /// reported yet.
    fn stall_deadline(&self, leg: Leg) -> Option<u64> {
        let endpoint = self.leg(leg)?;
        let since = endpoint.oldest_hole_since_ms()?;
        let watch = &self.stall[leg.index()];
        let (dup_acks, reported) = if watch.hole_at == Some(endpoint.rcv_nxt()) {
            (watch.dup_acks, watch.reported)
        } else {
            (0, false)
        };
        if reported || dup_acks < self.config.stall.dup_acks {
            return None;
        }
        Some(since.saturating_add(self.stall_after(endpoint)))
    }

    fn check_stalls(&mut self, now: u64) {
        for leg in [Leg::Client, Leg::Server] {
            if self.is_over() {
                return;
            }
            if self.stall_deadline(leg).is_none_or(|at| at > now) {
                continue;
            }
            let Some(rcv_nxt) = self.leg(leg).map(Endpoint::rcv_nxt) else {
                continue;
            };
            let watch = &mut self.stall[leg.index()];
            watch.hole_at = Some(rcv_nxt);
            watch.reported = true;
            self.stalls += 1;
            match self.config.stall.action {
                OnStall::Wait => {
                    self.events.push_back(ProxyEvent::Stalled {
                        leg,
                        action: OnStall::Wait,
                    });
                }
                OnStall::Reset => {
                    self.events.push_back(ProxyEvent::Stalled {
                        leg,
                        action: OnStall::Reset,
                    });
                    self.reset_legs(now);
                }
                OnStall::Bypass => match self.hand_over(now) {
                    Ok(handover) => {
                        self.events.push_back(ProxyEvent::Stalled {
                            leg,
                            action: OnStall::Bypass,
                        });
                        self.events.push_back(ProxyEvent::PassThrough);
                        self.handover = Some(handover);
                    }
                    Err(_) => self.events.push_back(ProxyEvent::Stalled {
                        leg,
                        action: OnStall::Wait,
                    }),
                },
            }
        }
    }

    fn check_finished(&mut self, now: u64) {
        if self.is_over() {
            return;
        }
        let done = |ep: &Endpoint<P>| matches!(ep.state(), State::Closed | State::TimeWait);
        let server_done = self.server.as_ref().is_none_or(done);
        // Before the client leg exists the client is done when the server is (refused, timed
        // out, or the client reset).
        let client_done = self.client.as_ref().is_none_or(done);
        if !(server_done && client_done) {
            return;
        }
        let lingering = [&self.client, &self.server]
            .into_iter()
            .flatten()
            .any(|ep| ep.state() == State::TimeWait);
        if lingering {
            self.state = ProxyState::TimeWait;
        } else {
            self.release_legs(now);
            self.state = ProxyState::Closed;
            self.events.push_back(ProxyEvent::Closed);
        }
    }

    /// Drops the endpoints (and every payload they pin), keeping their last counters and what
    /// they still had to send: a closed endpoint only ever has its RST left.
    fn release_legs(&mut self, now: u64) {
        for leg in [Leg::Client, Leg::Server] {
            let Some(endpoint) = self.leg_mut(leg) else {
                continue;
            };
            let mut last_words = Vec::new();
            while let Some(transmit) = endpoint.poll_transmit(now) {
                last_words.push((leg, transmit));
            }
            let last = LegStats {
                state: endpoint.state(),
                tcp: endpoint.stats(),
            };
            self.final_legs.get_or_insert_with(Box::default)[leg.index()] = Some(last);
            self.pending.extend(last_words);
        }
        self.client = None;
        self.server = None;
        self.client_syn = None;
        self.carry = [None, None];
    }

    fn hand_over(&mut self, now: u64) -> Result<Handover, ConvertError> {
        if matches!(
            self.state,
            ProxyState::Closed | ProxyState::PassThrough | ProxyState::TimeWait
        ) {
            return Err(ConvertError::Finished);
        }
        let (handover, owed) = match (&self.client, &self.server) {
            (_, None) => return Err(ConvertError::Finished),
            (None, Some(_)) => (Handover::default(), None),
            (Some(client), Some(server)) => {
                for state in [client.state(), server.state()] {
                    match state {
                        State::Closed => return Err(ConvertError::Finished),
                        // Both FINs crossed this leg: its endpoint is CLOSED (after LAST-ACK) or
                        // soon will be, and would reset the other endpoint's ACKs of what the
                        // proxy still owes it.
                        State::TimeWait => return Err(ConvertError::Closing),
                        State::Listen | State::SynSent | State::SynReceived => {
                            return Err(ConvertError::HandshakeInProgress)
                        }
                        _ => {}
                    }
                }
                let [c2s, s2c] = translations(client, server, now);
                let carry_c2s = self.carry[Direction::ClientToServer.index()].as_ref();
                let carry_s2c = self.carry[Direction::ServerToClient.index()].as_ref();
                // By leg: what the client is owed comes from the server, and the reverse.
                let owed = [
                    owed_toward(server, client, carry_s2c, s2c.seq_delta, now),
                    owed_toward(client, server, carry_c2s, c2s.seq_delta, now),
                ];
                let handover = Handover {
                    client_to_server: c2s,
                    server_to_client: s2c,
                };
                (handover, Some(Box::new(owed)))
            }
        };
        self.passthrough = Some([handover.client_to_server, handover.server_to_client]);
        self.release_legs(now);
        // The legs' pending ACKs and window updates would speak for endpoints that no longer
        // exist: from now on the real endpoints speak for themselves.
        self.pending.clear();
        self.owed = owed;
        self.state = ProxyState::PassThrough;
        Ok(handover)
    }

    /// After a handover: whether bytes or a FIN the proxy owes an endpoint are still
    /// unacknowledged (and not given up on). While it does, the worker shows it every segment of
    /// the flow and drives its timers.
    pub fn owes(&self) -> bool {
        self.owed.as_ref().is_some_and(|owed| {
            owed.iter()
                .any(|stream| stream.state() == OwedState::Sending)
        })
    }

    /// The owed streams after a handover, by leg (for counters).
    pub fn owed(&self) -> Option<&[OwedStream<P>; 2]> {
        self.owed.as_deref()
    }

    /// After a handover, the rewrite for segments going `direction`.
    pub fn translation(&self, direction: Direction) -> Option<&Translation> {
        self.passthrough
            .as_ref()
            .map(|translations| &translations[direction.index()])
    }

    /// After a handover: a segment from `from`'s real endpoint, as received and before its
    /// translation. It tells the owed stream toward that endpoint what it acknowledged and its
    /// window, and the one toward the other endpoint what that endpoint will have seen last.
    pub fn on_passthrough(&mut self, from: Leg, hdr: &SegmentHeader, now: u64) {
        let (Some(owed), Some(translations)) = (self.owed.as_mut(), self.passthrough.as_ref())
        else {
            return;
        };
        owed[from.index()].on_receiver_segment(hdr, now);
        let translation = &translations[from.inbound().index()];
        let mut seen = *hdr;
        seen.ack = SeqNumber(hdr.ack.0.wrapping_add(translation.ack_delta));
        if let Some((tsval, tsecr)) = hdr.options.timestamps {
            seen.options.timestamps = Some((
                tsval.wrapping_add(translation.tsval_delta),
                tsecr.wrapping_add(translation.tsecr_delta),
            ));
        }
        if let Some((from_shift, to_shift)) = translation.window_scale {
            let bytes = u64::from(hdr.window) << from_shift;
            seen.window = (bytes >> to_shift).min(u64::from(u16::MAX)) as u16;
        }
        owed[from.other().index()].on_sender_segment(&seen);
    }
}

/// The per-direction rewrites that let each real endpoint keep the view it had of the proxy's
/// leg: `[client to server, server to client]`.
fn translations<P: Payload>(
    client: &Endpoint<P>,
    server: &Endpoint<P>,
    now: u64,
) -> [Translation; 2] {
    let c2s_seq = server.iss().0.wrapping_sub(client.irs().0);
    let s2c_seq = client.iss().0.wrapping_sub(server.irs().0);
    let (client_n, server_n) = (client.negotiated(), server.negotiated());
    // A sender's TSvals, shifted, must not fall behind what the proxy's leg last sent the
    // receiver (PAWS, RFC 7323 section 5.3): TS.Recent is the sender's latest TSval and our
    // leg's clock now is past everything it sent, so the shift maps the one onto the other.
    // A leg that carried the sender's own TSvals sent nothing the sender's next will not pass.
    let shift = |sender: &Endpoint<P>, receiving_leg: &Endpoint<P>| match receiving_leg
        .negotiated()
        .timestamps
    {
        Some(clock) if !clock.carried => clock.tsval(now).wrapping_sub(sender.ts_recent()),
        _ => 0,
    };
    let (c2s_tsval, s2c_tsval) = match (client_n.timestamps, server_n.timestamps) {
        (Some(_), Some(_)) => (shift(client, server), shift(server, client)),
        _ => (0, 0),
    };
    let rescale = |from: u8, to: u8| (from != to).then_some((from, to));
    [
        Translation {
            seq_delta: c2s_seq,
            ack_delta: s2c_seq.wrapping_neg(),
            tsval_delta: c2s_tsval,
            tsecr_delta: s2c_tsval.wrapping_neg(),
            window_scale: rescale(client_n.snd_wscale, server_n.rcv_wscale),
        },
        Translation {
            seq_delta: s2c_seq,
            ack_delta: c2s_seq.wrapping_neg(),
            tsval_delta: s2c_tsval,
            tsecr_delta: c2s_tsval.wrapping_neg(),
            window_scale: rescale(server_n.snd_wscale, client_n.rcv_wscale),
        },
    ]
}

/// What the proxy owes `dst`'s peer at a handover, in `dst`'s numbering: `dst`'s send queue
/// (relayed, not acknowledged), then the carried payload, `src`'s in-order data not yet relayed
/// and its out-of-order data (shifted by `seq_delta`), then the FIN if `src`'s peer sent one
/// that `dst`'s peer has not acknowledged. The segments acknowledge what `dst` acknowledged and
/// offer the window it offered, so the peer learns nothing new but the data.
fn owed_toward<P: Payload>(
    src: &Endpoint<P>,
    dst: &Endpoint<P>,
    carry: Option<&P>,
    seq_delta: u32,
    now: u64,
) -> OwedStream<P> {
    let shift = |seq: SeqNumber| SeqNumber(seq.0.wrapping_add(seq_delta));
    let negotiated = dst.negotiated();
    let timestamps = dst.tsval(now).map(|tsval| (tsval, dst.ts_recent()));
    let options_len = if timestamps.is_some() {
        TIMESTAMPS_LEN
    } else {
        0
    };
    let stats = dst.stats();
    let view = ReceiverView {
        local_port: dst.local_port(),
        remote_port: dst.remote_port(),
        snd_una: dst.snd_una(),
        snd_nxt: dst.snd_nxt(),
        snd_wnd: stats.snd_wnd,
        snd_wscale: negotiated.snd_wscale,
        mss: usize::from(negotiated.mss).saturating_sub(options_len),
        cwnd: stats.cwnd,
        // Without the leg's backoff: what made it back off may be what the handover ends.
        rto_ms: dst.rto_ms_backed_off_at_most(0),
        ack: dst.rcv_nxt(),
        window: (stats.rcv_wnd >> negotiated.rcv_wscale).min(usize::from(u16::MAX)) as u16,
        timestamps,
    };

    let mut pieces: Vec<(SeqNumber, P)> = dst
        .queued_data()
        .map(|(seq, payload)| (seq, payload.clone()))
        .collect();
    if let Some(carry) = carry {
        // The carried payload comes right before what `src` still holds in order.
        let held_back = src.recv_ready() + usize::from(src.peer_closed()) + carry.len();
        pieces.push((shift(src.rcv_nxt() - held_back), carry.clone()));
    }
    pieces.extend(
        src.ready_data()
            .chain(src.held_data())
            .map(|(seq, payload)| (shift(seq), payload.clone())),
    );
    let fin = (dst.state() != State::Closed
        && src.peer_closed()
        && matches!(
            dst.state(),
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::Closing
                | State::LastAck
        ))
    .then(|| shift(src.rcv_nxt() - 1));
    OwedStream::new(pieces, fin, view, now)
}

impl<P: Payload, I: Inspector> std::fmt::Debug for TcpProxy<P, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("state", &self.state)
            .field("client", &self.client)
            .field("server", &self.server)
            .field("fin_relayed", &self.fin_relayed)
            .field("stalls", &self.stalls)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::rc::Rc;

    use super::*;
    use crate::tcp::cookie::FourTuple;
    use crate::tcp::inspect::{NoInspection, SignatureConfig, SignatureInspector};
    use crate::tcp::payload::TestBytes;
    use crate::tcp::testkit::LossyLink;
    use crate::test_rng::TestRng;
    use crate::wire::tcp::TcpSegment;

    type Ep = Endpoint<TestBytes>;
    type Out = Transmit<TestBytes>;

    const CLIENT_PORT: u16 = 40_000;
    const SERVER_PORT: u16 = 443;
    const CLIENT_ISS: u32 = 0x1000_0000;
    const SERVER_ISS: u32 = 0x7000_0000;

    const SYN: TcpFlags = TcpFlags::SYN;
    const ACK: TcpFlags = TcpFlags::ACK;
    const RST: TcpFlags = TcpFlags::RST;

    // Wires, by direction.
    const C2P: usize = 0;
    const P2C: usize = 1;
    const P2S: usize = 2;
    const S2P: usize = 3;

    fn none() -> TestBytes {
        TestBytes::from(&[][..])
    }

    /// `len` bytes of a recognisable stream, from stream offset `at`; `tag` tells streams apart.
    fn bytes(tag: u8, at: usize, len: usize) -> TestBytes {
        (at..at + len)
            .map(|i| (i % 251) as u8 ^ tag)
            .collect::<Vec<u8>>()
            .into()
    }

    fn client_offer() -> SynOptions {
        SynOptions {
            mss: 1000,
            window_scale: Some(2),
            sack_permitted: true,
            timestamps: Some(TimestampClock::new(0x0100_0000)),
            ecn: false,
        }
    }

    fn server_offer() -> SynOptions {
        SynOptions {
            mss: 1200,
            window_scale: Some(5),
            sack_permitted: true,
            timestamps: Some(TimestampClock::new(0x5000_0000)),
            ecn: false,
        }
    }

    /// A segment as it reached the far end of a wire.
    #[derive(Clone, Debug)]
    struct Seen {
        at: u64,
        header: SegmentHeader,
        payload: Option<TestBytes>,
    }

    impl Seen {
        fn len(&self) -> usize {
            self.payload.as_ref().map_or(0, Payload::len)
        }

        fn bytes(&self) -> &[u8] {
            self.payload.as_ref().map_or(&[], Payload::bytes)
        }
    }

    type DropRule = Box<dyn FnMut(&SegmentHeader, usize) -> bool>;

    /// One direction of a link: delay, jitter (which reorders), random loss and duplication, and
    /// optionally a rule that drops chosen segments.
    struct Wire {
        link: LossyLink<Out>,
        drop: Option<DropRule>,
        /// A congested router: the ECN-capable segments it picks are marked CE, not dropped.
        mark: Option<DropRule>,
        delivered: Vec<Seen>,
    }

    impl Wire {
        fn new(delay: u64) -> Wire {
            Wire {
                link: LossyLink::new(delay),
                drop: None,
                mark: None,
                delivered: Vec::new(),
            }
        }

        fn carry(&mut self, rng: &mut TestRng, mut out: Out, now: u64) {
            let len = out.payload.as_ref().map_or(0, Payload::len);
            if let Some(drop) = self.drop.as_mut() {
                if drop(&out.header, len) {
                    return;
                }
            }
            if let Some(mark) = self.mark.as_mut() {
                if matches!(out.header.ecn, Ecn::Ect0 | Ecn::Ect1) && mark(&out.header, len) {
                    out.header.ecn = Ecn::Ce;
                }
            }
            self.link.carry(rng, out, now);
        }

        fn next_at(&self) -> Option<u64> {
            self.link.next_at()
        }

        fn take_due(&mut self, now: u64) -> Option<Out> {
            self.link.take_due(now).map(|flying| flying.item)
        }

        fn data(&self) -> impl Iterator<Item = &Seen> {
            self.delivered.iter().filter(|seen| seen.len() > 0)
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum ServerMode {
        Accept,
        /// A closed port: every segment is answered with a RST.
        Refuse,
        /// Nothing answers.
        Silent,
    }

    /// Client ↔ wires ↔ proxy ↔ wires ↔ server, in virtual time. The client is an `Endpoint`
    /// or, when `client` is `None`, hand-driven (segments for it land in `client_inbox`). The
    /// server is an `Endpoint` accepting the proxy's SYN. Once a handover happened, the proxy's
    /// place is taken by what the worker will do: translate and forward.
    struct Net<I: Inspector + Clone> {
        now: u64,
        rng: TestRng,
        config: ProxyConfig,
        inspector: I,
        cookies: Option<CookieJar>,
        cookie_clock: TimestampClock,
        client: Option<Ep>,
        client_inbox: Vec<Seen>,
        proxy: Option<TcpProxy<TestBytes, I>>,
        server: Option<Ep>,
        server_mode: ServerMode,
        server_config: EndpointConfig,
        server_offer: SynOptions,
        server_iss: SeqNumber,
        wires: [Wire; 4],
        proxy_events: Vec<ProxyEvent>,
        client_events: Vec<Event>,
        server_events: Vec<Event>,
        handover: Option<Handover>,
        client_received: Vec<u8>,
        server_received: Vec<u8>,
        /// Each direction's whole stream and the sequence number of its first byte on the way
        /// to the receiver: every data segment reaching an endpoint must carry exactly the
        /// sender's bytes at those numbers. `[client to server, server to client]`.
        streams: Option<[(SeqNumber, Vec<u8>); 2]>,
    }

    impl<I: Inspector + Clone> Net<I> {
        fn new(inspector: I, config: ProxyConfig) -> Net<I> {
            let client = Ep::connect(
                EndpointConfig::default(),
                CLIENT_PORT,
                SERVER_PORT,
                SeqNumber(CLIENT_ISS),
                client_offer(),
                0,
            );
            Net {
                now: 0,
                rng: TestRng::new(1),
                config,
                inspector,
                cookies: None,
                cookie_clock: TimestampClock::new(0x3333_0000),
                client: Some(client),
                client_inbox: Vec::new(),
                proxy: None,
                server: None,
                server_mode: ServerMode::Accept,
                server_config: EndpointConfig::default(),
                server_offer: server_offer(),
                server_iss: SeqNumber(SERVER_ISS),
                wires: [Wire::new(5), Wire::new(5), Wire::new(5), Wire::new(5)],
                proxy_events: Vec::new(),
                client_events: Vec::new(),
                server_events: Vec::new(),
                handover: None,
                client_received: Vec::new(),
                server_received: Vec::new(),
                streams: None,
            }
        }

        fn client(&mut self) -> &mut Ep {
            self.client.as_mut().expect("a client endpoint")
        }

        fn server(&mut self) -> &mut Ep {
            self.server.as_mut().expect("the server accepted")
        }

        fn proxy(&mut self) -> &mut TcpProxy<TestBytes, I> {
            self.proxy.as_mut().expect("the proxy exists")
        }

        fn proxy_ref(&self) -> &TcpProxy<TestBytes, I> {
            self.proxy.as_ref().expect("the proxy exists")
        }

        fn read_client(&mut self) {
            if let Some(ep) = self.client.as_mut() {
                while let Some(payload) = ep.recv() {
                    self.client_received.extend_from_slice(payload.bytes());
                }
            }
        }

        fn read_server(&mut self) {
            if let Some(ep) = self.server.as_mut() {
                while let Some(payload) = ep.recv() {
                    self.server_received.extend_from_slice(payload.bytes());
                }
            }
        }

        /// A segment from the hand-driven client.
        fn client_send(&mut self, header: SegmentHeader, payload: Option<TestBytes>) {
            let now = self.now;
            self.wires[C2P].carry(&mut self.rng, Transmit { header, payload }, now);
        }

        fn convert(&mut self) -> Handover {
            let now = self.now;
            let handover = self
                .proxy()
                .convert_to_passthrough(now)
                .expect("the flow can be handed over");
            self.start_passthrough(handover);
            self.drain();
            handover
        }

        fn start_passthrough(&mut self, handover: Handover) {
            self.handover = Some(handover);
        }

        fn drain(&mut self) {
            let now = self.now;
            if let Some(ep) = self.client.as_mut() {
                while let Some(out) = ep.poll_transmit(now) {
                    self.wires[C2P].carry(&mut self.rng, out, now);
                }
                self.client_events.extend(ep.events());
            }
            if let Some(ep) = self.server.as_mut() {
                while let Some(out) = ep.poll_transmit(now) {
                    self.wires[S2P].carry(&mut self.rng, out, now);
                }
                self.server_events.extend(ep.events());
            }
            let mut handover = None;
            if let Some(proxy) = self.proxy.as_mut() {
                let mut count = 0;
                while let Some((leg, out)) = proxy.poll_transmit(now) {
                    count += 1;
                    assert!(count < 100_000, "poll_transmit never returns None");
                    let wire = if leg == Leg::Client { P2C } else { P2S };
                    self.wires[wire].carry(&mut self.rng, out, now);
                }
                while let Some(event) = proxy.poll_event() {
                    self.proxy_events.push(event);
                    if event == ProxyEvent::PassThrough {
                        handover = proxy.take_handover().or(handover);
                    }
                }
            }
            if let Some(handover) = handover {
                self.start_passthrough(handover);
            }
        }

        fn first_client_segment(&mut self, header: &SegmentHeader, payload: TestBytes) {
            let now = self.now;
            let Some(jar) = &self.cookies else {
                if let Ok(proxy) =
                    TcpProxy::on_client_syn(self.config, self.inspector.clone(), header, now)
                {
                    self.proxy = Some(proxy);
                }
                return;
            };
            let tuple = FourTuple::new(
                SocketAddr::from(([198, 18, 0, 1], header.src_port)),
                SocketAddr::from(([198, 19, 0, 1], header.dst_port)),
            );
            if is_syn(header) {
                let mss = header
                    .options
                    .mss
                    .unwrap_or(self.config.endpoint.default_peer_mss);
                let (cookie, _) = jar.syn_ack_isn(&tuple, header.seq, mss, now);
                let syn_ack = cookie_syn_ack(&self.config, header, cookie, self.cookie_clock, now);
                let out = Transmit {
                    header: syn_ack,
                    payload: None,
                };
                self.wires[P2C].carry(&mut self.rng, out, now);
            } else if header.flags.contains(ACK) && !header.flags.intersects(SYN | RST) {
                let tsecr = header.options.timestamps.map(|(_, tsecr)| tsecr);
                if let Some(params) = jar.validate(&tuple, header.ack, header.seq, tsecr, now) {
                    let proxy = TcpProxy::on_client_cookie_ack(
                        self.config,
                        self.inspector.clone(),
                        header,
                        payload,
                        params,
                        self.cookie_clock,
                        now,
                    )
                    .expect("a valid cookie ACK opens the flow");
                    self.proxy = Some(proxy);
                }
            }
        }

        fn deliver(&mut self, wire: usize, flying: Out) {
            let now = self.now;
            let header = flying.header;
            if std::env::var("SIM_TRACE").is_ok() {
                eprintln!(
                    "{now} {} {:?} seq {} ack {} win {} len {} sack {:?} ts {:?}",
                    ["c->p", "p->c", "p->s", "s->p"][wire],
                    header.flags,
                    header.seq.0,
                    header.ack.0,
                    header.window,
                    flying.payload.as_ref().map_or(0, Payload::len),
                    header.options.sack,
                    header.options.timestamps,
                );
            }
            if let (Some(streams), Some(payload), P2S | P2C) =
                (&self.streams, &flying.payload, wire)
            {
                let (first, stream) = &streams[usize::from(wire == P2C)];
                let at = header.seq.since(*first);
                assert!(
                    stream.get(at..at + payload.len()) == Some(payload.bytes()),
                    "{now}: a segment toward the {} at {:?} ({} bytes) does not carry the \
                     sender's bytes at those numbers",
                    if wire == P2S { "server" } else { "client" },
                    header.seq,
                    payload.len()
                );
            }
            self.wires[wire].delivered.push(Seen {
                at: now,
                header,
                payload: flying.payload.clone(),
            });
            let payload = flying.payload.unwrap_or_else(none);
            match wire {
                C2P | S2P => {
                    let leg = if wire == C2P {
                        Leg::Client
                    } else {
                        Leg::Server
                    };
                    if let Some(handover) = &self.handover {
                        if let Some(proxy) = self.proxy.as_mut() {
                            proxy.on_passthrough(leg, &header, now);
                        }
                        let (direction, onward) = match leg {
                            Leg::Client => (Direction::ClientToServer, P2S),
                            Leg::Server => (Direction::ServerToClient, P2C),
                        };
                        let header = translate(&header, &payload, handover.translation(direction));
                        let out = Transmit {
                            header,
                            payload: (!payload.is_empty()).then_some(payload),
                        };
                        self.wires[onward].carry(&mut self.rng, out, now);
                        return;
                    }
                    match self.proxy.as_mut() {
                        Some(proxy) => {
                            proxy.on_segment(leg, &header, payload, now);
                        }
                        None if leg == Leg::Client => self.first_client_segment(&header, payload),
                        None => {}
                    }
                }
                P2C => match self.client.as_mut() {
                    Some(ep) => {
                        ep.on_segment(&header, payload, now);
                    }
                    None => self.client_inbox.push(Seen {
                        at: now,
                        header,
                        payload: (!payload.is_empty()).then_some(payload),
                    }),
                },
                _ => match (self.server.as_mut(), self.server_mode) {
                    (Some(ep), _) => {
                        ep.on_segment(&header, payload, now);
                    }
                    (None, ServerMode::Accept) => {
                        let accepted = Ep::accept(
                            self.server_config,
                            &header,
                            header.dst_port,
                            header.src_port,
                            self.server_iss,
                            self.server_offer,
                            now,
                        );
                        self.server = accepted.ok();
                    }
                    (None, ServerMode::Refuse) => {
                        if let Some(rst) = reset_for(&header, payload.len()) {
                            let out = Transmit {
                                header: rst,
                                payload: None,
                            };
                            self.wires[S2P].carry(&mut self.rng, out, now);
                        }
                    }
                    (None, ServerMode::Silent) => {}
                },
            }
        }

        /// Advances to the next thing that happens, if it happens by `until`.
        fn step(&mut self, until: u64) -> bool {
            self.drain();
            let next = [
                self.wires.iter().filter_map(Wire::next_at).min(),
                self.client.as_ref().and_then(Ep::poll_at),
                self.server.as_ref().and_then(Ep::poll_at),
                self.proxy.as_ref().and_then(TcpProxy::poll_at),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|&next| next <= until) else {
                return false;
            };
            self.now = self.now.max(next);
            let now = self.now;
            for wire in 0..self.wires.len() {
                while let Some(flying) = self.wires[wire].take_due(now) {
                    self.deliver(wire, flying);
                }
            }
            if let Some(ep) = self.client.as_mut() {
                if ep.poll_at().is_some_and(|at| at <= now) {
                    ep.on_timer(now);
                }
            }
            if let Some(ep) = self.server.as_mut() {
                if ep.poll_at().is_some_and(|at| at <= now) {
                    ep.on_timer(now);
                }
            }
            if let Some(proxy) = self.proxy.as_mut() {
                if proxy.poll_at().is_some_and(|at| at <= now) {
                    proxy.on_timer(now);
                }
            }
            true
        }

        fn run_until(&mut self, until: u64) {
            self.run_checking(until, |_| {});
        }

        /// Runs to `until`, calling `check` after every step.
        fn run_checking(&mut self, until: u64, mut check: impl FnMut(&mut Net<I>)) {
            let mut steps = 0;
            while self.step(until) {
                steps += 1;
                assert!(steps < 5_000_000, "no end in sight at {}", self.now);
                check(self);
            }
            self.now = self.now.max(until);
            self.drain();
        }
    }

    /// What the worker does to a pass-through segment: emit, rewrite, and (here) read it back.
    fn translate(
        header: &SegmentHeader,
        payload: &TestBytes,
        translation: &Translation,
    ) -> SegmentHeader {
        let mut frame = vec![0u8; header.header_len() + payload.len()];
        let len = header.emit(&mut frame).expect("room for the header");
        frame[len..].copy_from_slice(payload.bytes());
        translation
            .apply(&mut frame)
            .expect("a well-formed segment");
        let segment = TcpSegment::new_checked(&frame[..]).expect("still a TCP segment");
        SegmentHeader::parse(&segment).expect("options still parse")
    }

    fn established(net: &mut Net<NoInspection>) {
        net.run_until(200);
        assert_eq!(net.client().state(), State::Established);
        assert_eq!(net.server().state(), State::Established);
        assert_eq!(net.proxy_ref().state(), ProxyState::Relaying);
        assert!(net.proxy_events.contains(&ProxyEvent::Established));
    }

    fn plain_net() -> Net<NoInspection> {
        Net::new(NoInspection, ProxyConfig::default())
    }

    // ---- set-up ----

    #[test]
    fn the_client_syn_waits_for_the_server_and_gets_its_isn_and_shared_options() {
        let mut net = plain_net();
        // The server does not do SACK; everything else both sides offer.
        net.server_offer.sack_permitted = false;
        net.wires[S2P].link.delay = 50;
        net.run_until(60);
        assert!(
            net.wires[P2C].delivered.is_empty(),
            "the client's SYN is not answered before the server has"
        );
        let syn = net.wires[P2S].delivered[0].clone();
        assert_eq!(syn.header.flags, SYN);
        assert_eq!(
            syn.header.seq,
            SeqNumber(CLIENT_ISS),
            "ISS = the client's ISN"
        );
        assert_eq!(
            (syn.header.src_port, syn.header.dst_port),
            (CLIENT_PORT, SERVER_PORT)
        );
        let offered = syn.header.options;
        assert_eq!(offered.mss, Some(1000));
        assert_eq!(offered.window_scale, Some(2));
        assert!(offered.sack_permitted);
        let client_syn = net.wires[C2P].delivered[0].clone();
        assert_eq!(
            offered.timestamps.map(|(tsval, _)| tsval),
            client_syn.header.options.timestamps.map(|(tsval, _)| tsval),
            "the server leg's clock reads as the client's"
        );

        net.run_until(200);
        let server_syn_ack = net.wires[S2P].delivered[0].clone();
        let syn_ack = net.wires[P2C].delivered[0].clone();
        assert!(syn_ack.at >= server_syn_ack.at);
        assert_eq!(syn_ack.header.flags, SYN | ACK);
        assert_eq!(
            syn_ack.header.seq,
            SeqNumber(SERVER_ISS),
            "ISS = the server's ISN"
        );
        assert_eq!(syn_ack.header.ack, SeqNumber(CLIENT_ISS + 1));
        assert_eq!(
            (syn_ack.header.src_port, syn_ack.header.dst_port),
            (SERVER_PORT, CLIENT_PORT)
        );
        let answered = syn_ack.header.options;
        assert_eq!(answered.mss, Some(1200), "the server's MSS");
        assert_eq!(answered.window_scale, Some(5), "the server's shift");
        assert!(!answered.sack_permitted, "the server does not do SACK");
        assert_eq!(
            answered.timestamps.map(|(tsval, _)| tsval),
            server_syn_ack
                .header
                .options
                .timestamps
                .map(|(tsval, _)| tsval)
        );

        assert_eq!(net.client().state(), State::Established);
        assert_eq!(net.server().state(), State::Established);
        let negotiated = *net.client().negotiated();
        assert_eq!((negotiated.mss, negotiated.snd_wscale), (1000, 5));
        assert!(!negotiated.sack);
        assert_eq!(net.proxy_events, [ProxyEvent::Established]);
        for direction in [Direction::ClientToServer, Direction::ServerToClient] {
            assert_eq!(net.proxy_ref().seq_offset(direction), 0);
        }
        let stats = net.proxy_ref().stats();
        assert_eq!(stats.client.map(|leg| leg.state), Some(State::Established));
        assert_eq!(stats.server.map(|leg| leg.state), Some(State::Established));
    }

    #[test]
    fn a_closed_server_port_refuses_the_client() {
        let mut net = plain_net();
        net.server_mode = ServerMode::Refuse;
        net.run_until(1_000);
        assert_eq!(net.client().state(), State::Closed);
        assert!(net.client_events.contains(&Event::Refused));
        let rst = &net.wires[P2C].delivered[0];
        assert_eq!(rst.header.flags, RST | ACK);
        assert_eq!(rst.header.ack, SeqNumber(CLIENT_ISS + 1));
        assert_eq!(net.proxy_events, [ProxyEvent::Refused, ProxyEvent::Closed]);
        assert_eq!(net.proxy_ref().state(), ProxyState::Closed);
        assert_eq!(net.proxy_ref().poll_at(), None);
    }

    #[test]
    fn an_unanswered_server_leaves_the_client_unanswered_and_ends_the_flow() {
        let mut config = ProxyConfig::default();
        config.endpoint.syn_retries = 2;
        let mut net = Net::new(NoInspection, config);
        net.server_mode = ServerMode::Silent;
        net.run_until(10_000);
        assert_eq!(net.wires[P2S].delivered.len(), 3, "a SYN and two retries");
        assert!(
            net.wires[P2C].delivered.is_empty(),
            "the client hears nothing"
        );
        assert_eq!(net.client().state(), State::SynSent);
        assert_eq!(
            net.proxy_events,
            [ProxyEvent::ConnectTimedOut, ProxyEvent::Closed]
        );
        assert_eq!(net.proxy_ref().state(), ProxyState::Closed);
        // The client's own retries find nothing to answer them.
        net.run_until(20_000);
        assert!(net.wires[P2C].delivered.is_empty());
    }

    // ---- relay ----

    #[test]
    fn relays_both_ways_byte_exact_keeping_segment_boundaries_without_copying() {
        let mut net = plain_net();
        established(&mut net);
        // With timestamps on both legs, 988 bytes fill a 1000-byte MSS.
        let up: Vec<TestBytes> = [1, 100, 988, 500, 37]
            .iter()
            .scan(0, |at, &len| {
                *at += len;
                Some(bytes(0, *at - len, len))
            })
            .collect();
        let down: Vec<TestBytes> = [700, 3, 988]
            .iter()
            .scan(0, |at, &len| {
                *at += len;
                Some(bytes(0x55, *at - len, len))
            })
            .collect();
        for payload in &up {
            net.client().send(payload.clone()).unwrap();
        }
        for payload in &down {
            net.server().send(payload.clone()).unwrap();
        }
        net.run_until(1_000);
        net.read_client();
        net.read_server();
        let concat = |parts: &[TestBytes]| -> Vec<u8> {
            parts.iter().flat_map(|p| p.bytes().to_vec()).collect()
        };
        assert_eq!(net.server_received, concat(&up));
        assert_eq!(net.client_received, concat(&down));
        let arrived: Vec<&Seen> = net.wires[P2S].data().collect();
        assert_eq!(
            arrived.iter().map(|seen| seen.len()).collect::<Vec<_>>(),
            [1, 100, 988, 500, 37]
        );
        for (seen, sent) in arrived.iter().zip(&up) {
            let payload = seen.payload.as_ref().unwrap();
            assert!(
                payload.shares_storage_with(sent),
                "relayed by reference, not copied"
            );
        }
        let arrived: Vec<usize> = net.wires[P2C].data().map(Seen::len).collect();
        assert_eq!(arrived, [700, 3, 988]);
        let stats = net.proxy_ref().stats();
        assert_eq!(
            (
                stats.buffered_client_to_server,
                stats.buffered_server_to_client
            ),
            (0, 0)
        );
    }

    #[test]
    fn a_slow_server_reader_closes_the_client_window_within_the_buffer_bound() {
        let config = ProxyConfig {
            buffer: 16 * 1024,
            ..ProxyConfig::default()
        };
        let mut net = Net::new(NoInspection, config);
        // The server's application reads nothing for now: a 4000-byte receive buffer fills.
        net.server_config.receive_buffer = 4_000;
        established(&mut net);
        let total = 100_000;
        for at in (0..total).step_by(1_000) {
            net.client().send(bytes(0, at, 1_000)).unwrap();
        }
        let bound = 16 * 1024;
        let mut most = 0;
        let mut window_closed = false;
        net.run_checking(5_000, |net| {
            let buffered = net.proxy_ref().buffered(Direction::ClientToServer);
            most = most.max(buffered);
            assert!(buffered <= bound, "{buffered} bytes buffered");
            window_closed |= net.client().stats().snd_wnd == 0;
        });
        assert!(window_closed, "the client saw the window close");
        assert!(most > 12 * 1024, "the buffer filled up: {most}");
        let proxy_stats = net.proxy_ref().stats();
        assert!(
            net.client().stats().send_buffered > 50_000,
            "the client holds the rest: {:#?} {:#?} {:#?}",
            net.client().stats(),
            proxy_stats,
            net.server().stats()
        );

        // The server reads slowly: 4000 bytes every 100 ms.
        for round in 0..300 {
            net.read_server();
            let until = net.now + 100;
            net.run_checking(until, |net| {
                let buffered = net.proxy_ref().buffered(Direction::ClientToServer);
                assert!(buffered <= bound, "{buffered} bytes buffered");
            });
            if net.server_received.len() == total {
                break;
            }
            assert!(
                round < 299,
                "only {} bytes arrived",
                net.server_received.len()
            );
        }
        let expected: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        assert_eq!(net.server_received, expected);
    }

    /// One side half-closes after sending; the other keeps sending, then closes too.
    fn half_close(client_first: bool) {
        let mut net = plain_net();
        established(&mut net);
        let (first, second): (&mut Option<Ep>, &mut Option<Ep>) = if client_first {
            (&mut net.client, &mut net.server)
        } else {
            (&mut net.server, &mut net.client)
        };
        let first = first.as_mut().unwrap();
        first.send(bytes(1, 0, 5_000)).unwrap();
        first.shutdown_write();
        second.as_mut().unwrap().send(bytes(2, 0, 3_000)).unwrap();
        net.run_until(1_000);
        let (first_events, second_events) = if client_first {
            (&net.client_events, &net.server_events)
        } else {
            (&net.server_events, &net.client_events)
        };
        assert!(second_events.contains(&Event::PeerClosed));
        assert!(!first_events.contains(&Event::PeerClosed));
        // The half-closed side still receives.
        let more = bytes(2, 3_000, 20_000);
        let second = if client_first {
            net.server()
        } else {
            net.client()
        };
        assert_eq!(second.state(), State::CloseWait);
        second.send(more).unwrap();
        net.run_until(3_000);
        net.read_client();
        net.read_server();
        let (to_second, to_first) = if client_first {
            (&net.server_received, &net.client_received)
        } else {
            (&net.client_received, &net.server_received)
        };
        assert_eq!(to_second.as_slice(), bytes(1, 0, 5_000).bytes());
        assert_eq!(to_first.as_slice(), bytes(2, 0, 23_000).bytes());
        if client_first {
            net.server().shutdown_write();
        } else {
            net.client().shutdown_write();
        }
        net.run_until(4_000);
        let (first_state, second_state) = if client_first {
            (net.client().state(), net.server().state())
        } else {
            (net.server().state(), net.client().state())
        };
        assert_eq!(first_state, State::TimeWait);
        assert_eq!(second_state, State::Closed);
        assert_eq!(net.proxy_ref().state(), ProxyState::TimeWait);
        net.run_until(100_000);
        assert_eq!(net.proxy_ref().state(), ProxyState::Closed);
        assert_eq!(
            net.proxy_events,
            [ProxyEvent::Established, ProxyEvent::Closed]
        );
        assert!(
            net.proxy_ref().stats().client.is_some(),
            "counters outlive the legs"
        );
    }

    #[test]
    fn half_close_from_the_client() {
        half_close(true);
    }

    #[test]
    fn half_close_from_the_server() {
        half_close(false);
    }

    #[test]
    fn a_reset_from_either_side_resets_the_other() {
        for client_resets in [true, false] {
            let mut net = plain_net();
            established(&mut net);
            net.client().send(bytes(0, 0, 2_000)).unwrap();
            net.run_until(300);
            let now = net.now;
            if client_resets {
                net.client().abort(now);
            } else {
                net.server().abort(now);
            }
            net.run_until(1_000);
            let (reset, leg) = if client_resets {
                (&net.server_events, Leg::Client)
            } else {
                (&net.client_events, Leg::Server)
            };
            assert!(
                reset.contains(&Event::Reset),
                "{reset:?} {:?} {:#?}",
                net.proxy_events,
                net.proxy
            );
            assert_eq!(net.client().state(), State::Closed);
            assert_eq!(net.server().state(), State::Closed);
            assert_eq!(
                net.proxy_events,
                [
                    ProxyEvent::Established,
                    ProxyEvent::Reset { leg },
                    ProxyEvent::Closed
                ]
            );
        }
    }

    #[test]
    fn a_signature_split_across_segments_resets_both_legs() {
        let signatures = [SignatureConfig {
            name: "evil".into(),
            pattern: b"EVIL-PATTERN".to_vec(),
            direction: Some(Direction::ClientToServer),
        }];
        let inspector = Rc::new(SignatureInspector::new(&signatures).unwrap());
        let mut net = Net::new(inspector, ProxyConfig::default());
        net.run_until(200);
        assert_eq!(net.proxy_events, [ProxyEvent::Established]);
        net.client()
            .send(TestBytes::from(b"GET / HTTP/1.1\r\nX: EVIL-"))
            .unwrap();
        // The same bytes from the server are harmless: the signature is client-to-server only.
        net.server().send(TestBytes::from(b"EVIL-PATTERN")).unwrap();
        net.run_until(300);
        net.client()
            .send(TestBytes::from(b"PATTERN\r\n\r\n"))
            .unwrap();
        net.run_until(1_000);
        net.read_server();
        net.read_client();
        assert_eq!(net.server_received, b"GET / HTTP/1.1\r\nX: EVIL-");
        assert_eq!(net.client_received, b"EVIL-PATTERN");
        assert!(net.client_events.contains(&Event::Reset));
        assert!(net.server_events.contains(&Event::Reset));
        assert!(net.proxy_events.contains(&ProxyEvent::InspectorReset {
            direction: Direction::ClientToServer,
            signature: 0
        }));
        let stats = net.proxy_ref().stats();
        assert_eq!(stats.state, ProxyState::Closed);
        assert_eq!((stats.inspector_resets, stats.last_signature), (1, Some(0)));
    }

    /// Drops the `n`th data segment (from 1) and nothing else.
    fn drop_data_segment(n: usize) -> DropRule {
        let mut seen = 0;
        Box::new(move |_, len| {
            if len == 0 {
                return false;
            }
            seen += 1;
            seen == n
        })
    }

    /// Data segments arrive in order, each once: the receiver never saw a gap or a repeat.
    fn assert_no_gap(wire: &Wire) {
        let mut next = None;
        for seen in wire.data() {
            if let Some(next) = next {
                assert_eq!(seen.header.seq, next, "a gap or a repeat: {seen:?}");
            }
            next = Some(seen.header.seq + seen.len());
        }
    }

    #[test]
    fn loss_on_the_client_leg_is_repaired_by_the_proxy_and_the_server_sees_no_gap() {
        let mut net = plain_net();
        net.wires[C2P].drop = Some(drop_data_segment(3));
        established(&mut net);
        for i in 0..10 {
            net.client().send(bytes(0, i * 988, 988)).unwrap();
        }
        net.run_until(3_000);
        net.read_server();
        assert_eq!(net.server_received, bytes(0, 0, 9_880).bytes());
        assert!(net.client().stats().retransmissions >= 1);
        let stats = net.proxy_ref().stats();
        assert_eq!(stats.server.unwrap().tcp.retransmissions, 0);
        assert_eq!(net.server().stats().out_of_order_received, 0);
        assert_no_gap(&net.wires[P2S]);
    }

    #[test]
    fn loss_on_the_server_leg_is_repaired_by_the_proxy_and_the_client_never_retransmits() {
        let mut net = plain_net();
        net.wires[P2S].drop = Some(drop_data_segment(3));
        established(&mut net);
        for i in 0..10 {
            net.client().send(bytes(0, i * 988, 988)).unwrap();
        }
        net.run_until(3_000);
        net.read_server();
        assert_eq!(net.server_received, bytes(0, 0, 9_880).bytes());
        let stats = net.proxy_ref().stats();
        assert!(stats.server.unwrap().tcp.retransmissions >= 1);
        assert_eq!(net.client().stats().retransmissions, 0);
        assert_eq!(stats.client.unwrap().tcp.out_of_order_received, 0);
        assert_no_gap(&net.wires[C2P]);
    }

    // ---- stalls ----

    /// A segment from the hand-driven client.
    fn from_client(flags: TcpFlags, seq: u32, ack: u32) -> SegmentHeader {
        SegmentHeader {
            src_port: CLIENT_PORT,
            dst_port: SERVER_PORT,
            seq: SeqNumber(seq),
            ack: SeqNumber(ack),
            flags,
            window: 65535,
            urgent: 0,
            options: TcpOptions::default(),
            ecn: Ecn::NotEct,
        }
    }

    /// The server closes first and the client reconnects from the same port as soon as its own
    /// FIN is acknowledged, which the client leg does before the server has acknowledged the
    /// server leg's FIN: the new SYN must still open a new connection, as the server's
    /// TIME-WAIT would take it end to end, and an old duplicate SYN must not.
    #[test]
    fn a_reconnection_from_the_same_port_takes_over_once_nothing_is_owed() {
        let mut net = plain_net();
        established(&mut net);
        net.server().send(bytes(1, 0, 500)).unwrap();
        net.server().shutdown_write();
        net.run_until(400);
        net.wires[S2P].link.delay = 1_000;
        net.client().shutdown_write();
        net.run_until(600);
        let proxy = net.proxy_ref();
        let client_leg = proxy.leg(Leg::Client).unwrap();
        assert_eq!(client_leg.state(), State::TimeWait);
        assert_eq!(proxy.leg(Leg::Server).unwrap().state(), State::LastAck);
        assert_ne!(
            proxy.state(),
            ProxyState::TimeWait,
            "the server's ACK is on its way"
        );

        let (tsval, rcv_nxt) = (client_leg.ts_recent(), client_leg.rcv_nxt());
        let syn = |seq: SeqNumber, tsval: u32| {
            let mut syn = from_client(SYN, seq.0, 0);
            syn.options.timestamps = Some((tsval, 0));
            syn
        };
        assert!(proxy.yields_to_client_syn(&syn(rcv_nxt + 70_000, tsval + 1)));
        assert!(
            proxy.yields_to_client_syn(&syn(rcv_nxt + 70_000, tsval)),
            "the same millisecond, a sequence number past the old connection's"
        );
        assert!(
            !proxy.yields_to_client_syn(&syn(SeqNumber(CLIENT_ISS), tsval)),
            "the old connection's own SYN, again"
        );
        assert!(
            !proxy.yields_to_client_syn(&syn(rcv_nxt + 70_000, tsval - 1)),
            "an older timestamp (PAWS)"
        );

        // With data still owed to the server, the connection holds on.
        let mut net = plain_net();
        established(&mut net);
        net.server().shutdown_write();
        net.run_until(400);
        net.wires[P2S].link.delay = 1_000;
        net.client().send(bytes(2, 0, 500)).unwrap();
        net.client().shutdown_write();
        net.run_until(600);
        let proxy = net.proxy_ref();
        let client_leg = proxy.leg(Leg::Client).unwrap();
        assert_eq!(client_leg.state(), State::TimeWait);
        let syn = syn(client_leg.rcv_nxt() + 70_000, client_leg.ts_recent() + 1);
        assert!(!proxy.yields_to_client_syn(&syn));
    }

    /// RFC 9293 section 3.7.1: a SYN without the option means 536 bytes over IPv4 and 1220 over
    /// IPv6; the server leg offers what the client can take, and each leg sends segments that
    /// size.
    #[test]
    fn an_ipv6_syn_without_mss_means_1220_bytes_on_both_legs() {
        for (config, expected) in [
            (ProxyConfig::default(), 536),
            (ProxyConfig::default().for_ipv6(), 1220),
        ] {
            let mut net = Net::new(NoInspection, config);
            net.client = None;
            net.server_offer.mss = 1460;
            net.client_send(from_client(SYN, CLIENT_ISS, 0), None);
            net.run_until(50);
            let syn = net.wires[P2S].delivered[0].header;
            assert_eq!(syn.options.mss, Some(expected), "the server leg's SYN");
            let syn_ack = net.client_inbox[0].header;
            let server_isn = syn_ack.seq.0;
            net.client_send(from_client(ACK, CLIENT_ISS + 1, server_isn + 1), None);
            net.run_until(100);
            net.server().send(bytes(5, 0, 4_000)).unwrap();
            net.run_until(300);
            let largest = net.client_inbox.iter().map(Seen::len).max().unwrap();
            assert_eq!(largest, usize::from(expected), "the client leg's segments");
        }
    }

    /// A client whose TSval ticks every 10 ms (RFC 7323 section 5.4 allows 1 ms to 1 s): a
    /// clock of the proxy's own, set at the SYN, runs ahead of it, and the server's TIME-WAIT
    /// then takes the client's next SYN from the same port for an old duplicate (RFC 6191).
    /// Each leg sends only TSvals its far endpoint sent, and a handover needs no shift.
    #[test]
    fn each_leg_carries_the_tsvals_of_the_endpoint_across_the_proxy() {
        let mut net = Net::new(NoInspection, ProxyConfig::default());
        net.client = None;
        let client_clock = |t: u64| 70_000 + (t / 10) as u32;
        let mut client_sent = std::collections::HashSet::new();
        let mut syn = from_client(SYN, CLIENT_ISS, 0);
        syn.options.mss = Some(1000);
        syn.options.timestamps = Some((client_clock(0), 0));
        client_sent.insert(client_clock(0));
        net.client_send(syn, None);
        net.run_until(50);
        let server_isn = net.client_inbox[0].header.seq.0;
        for i in 0..30 {
            let t = 100 + i as u64 * 100;
            net.run_until(t);
            let echo = net.client_inbox.last().unwrap().header.options.timestamps;
            let mut data = from_client(ACK | TcpFlags::PSH, ctcp_seq(i).0, server_isn + 1);
            data.options.timestamps = Some((client_clock(t), echo.unwrap().0));
            client_sent.insert(client_clock(t));
            net.client_send(data, Some(ctcp_payload(i)));
            if i % 3 == 0 {
                net.server().send(bytes(3, i * 10, 10)).unwrap();
            }
        }
        net.run_until(3_500);
        net.read_server();
        assert_eq!(net.server_received.len(), 30 * CTCP_SEGMENT);

        let tsvals = |wire: usize| -> Vec<u32> {
            net.wires[wire]
                .delivered
                .iter()
                .map(|seen| seen.header.options.timestamps.expect("timestamps").0)
                .collect()
        };
        let to_server = tsvals(P2S);
        assert!(to_server.len() > 30);
        for tsval in &to_server {
            assert!(
                client_sent.contains(tsval),
                "the server leg sent TSval {tsval}, which the client never did"
            );
        }
        let server_sent: std::collections::HashSet<u32> = tsvals(S2P).into_iter().collect();
        let to_client = tsvals(P2C);
        assert!(net.client_inbox.iter().any(|seen| seen.len() > 0));
        for tsval in &to_client {
            assert!(
                server_sent.contains(tsval),
                "the client leg sent TSval {tsval}, which the server never did"
            );
        }

        let handover = net.convert();
        for direction in [Direction::ClientToServer, Direction::ServerToClient] {
            let translation = handover.translation(direction);
            assert_eq!(
                (translation.tsval_delta, translation.tsecr_delta),
                (0, 0),
                "{direction:?}: the legs' timestamps already agree"
            );
        }
    }

    const CTCP_SEGMENT: usize = 100;

    fn ctcp_payload(i: usize) -> TestBytes {
        bytes(7, i * CTCP_SEGMENT, CTCP_SEGMENT)
    }

    fn ctcp_seq(i: usize) -> SeqNumber {
        SeqNumber(CLIENT_ISS + 1) + i * CTCP_SEGMENT
    }

    /// A client that completes a normal handshake and then behaves like Cisco's cTCP: each
    /// segment is sent once, duplicate ACKs are ignored. Returns the server's ISN as the client
    /// learnt it.
    fn ctcp_net(action: OnStall) -> (Net<NoInspection>, u32) {
        let mut config = ProxyConfig::default();
        config.stall.action = action;
        ctcp_net_with(config)
    }

    fn ctcp_net_with(config: ProxyConfig) -> (Net<NoInspection>, u32) {
        let mut net = Net::new(NoInspection, config);
        net.client = None;
        let mut syn = from_client(SYN, CLIENT_ISS, 0);
        syn.options.mss = Some(1000);
        net.client_send(syn, None);
        net.run_until(50);
        let syn_ack = net.client_inbox[0].header;
        assert_eq!(syn_ack.flags, SYN | ACK);
        assert_eq!(syn_ack.ack, SeqNumber(CLIENT_ISS + 1));
        let server_isn = syn_ack.seq.0;
        net.client_send(from_client(ACK, CLIENT_ISS + 1, server_isn + 1), None);
        net.run_until(100);
        assert_eq!(net.proxy_events, [ProxyEvent::Established]);
        (net, server_isn)
    }

    fn ctcp_send(net: &mut Net<NoInspection>, i: usize, server_isn: u32) {
        let header = from_client(TcpFlags::ACK | TcpFlags::PSH, ctcp_seq(i).0, server_isn + 1);
        net.client_send(header, Some(ctcp_payload(i)));
    }

    /// Segments 0 to 9, one a millisecond from t = 100; the third is lost on the way and
    /// never sent again.
    fn send_with_a_hole(net: &mut Net<NoInspection>, server_isn: u32) {
        for i in 0..10 {
            net.run_until(100 + i as u64);
            if i != 2 {
                ctcp_send(net, i, server_isn);
            }
        }
    }

    fn dup_acks_for_the_hole(net: &Net<NoInspection>) -> usize {
        net.client_inbox
            .iter()
            .filter(|seen| seen.len() == 0 && seen.header.ack == ctcp_seq(2))
            .count()
    }

    #[test]
    fn a_stall_with_wait_is_counted_once_and_the_flow_keeps_waiting() {
        let (mut net, server_isn) = ctcp_net(OnStall::Wait);
        send_with_a_hole(&mut net, server_isn);
        // The hole opened at 108, when segment 3 arrived; the client leg's RTO is the 200 ms
        // floor, so a stall is max(3 × 200 ms, 1 s) later.
        net.run_until(1_100);
        assert!(dup_acks_for_the_hole(&net) >= 3, "the client was asked");
        assert_eq!(net.proxy_ref().stats().stalls, 0);
        net.run_until(1_200);
        assert_eq!(net.proxy_ref().stats().stalls, 1);
        assert!(net.proxy_events.contains(&ProxyEvent::Stalled {
            leg: Leg::Client,
            action: OnStall::Wait
        }));
        // The held segments wait out the out-of-order timeout (10 s by default) on the hole's
        // clock, as on the ASA, and are then discarded.
        net.run_until(10_107);
        assert_eq!(
            net.proxy_ref()
                .stats()
                .client
                .unwrap()
                .tcp
                .out_of_order_segments,
            7
        );
        net.run_until(10_108);
        let tcp = net.proxy_ref().stats().client.unwrap().tcp;
        assert_eq!(
            (tcp.out_of_order_segments, tcp.out_of_order_discarded),
            (0, 7)
        );
        net.run_until(60_000);
        let stats = net.proxy_ref().stats();
        assert_eq!(stats.stalls, 1, "one hole, one stall");
        assert_eq!(stats.state, ProxyState::Relaying);
        assert_eq!(stats.client.unwrap().tcp.out_of_order_discarded, 7);
        net.read_server();
        assert_eq!(
            net.server_received.len(),
            2 * CTCP_SEGMENT,
            "the server waits too"
        );
        assert!(net
            .client_inbox
            .iter()
            .all(|seen| !seen.header.flags.contains(RST)));
        assert!(!net.server_events.contains(&Event::Reset));
    }

    /// A cTCP client acknowledges nothing the proxy can use (its ACKs ride on segments beyond
    /// the window), so the client leg's RTO backs off on the server's data; the stall still
    /// comes on the clock of an RTO with at most two doublings, not one that keeps moving away.
    #[test]
    fn a_stall_comes_while_the_leg_backs_off_on_a_peer_that_acknowledges_nothing() {
        let (mut net, server_isn) = ctcp_net(OnStall::Wait);
        net.server().send(TestBytes::from(&[7u8; 500][..])).unwrap();
        send_with_a_hole(&mut net, server_isn);
        // Never acknowledged, the server's data is sent again at 200, 400, 800, 1600 ms...
        net.run_until(2_400);
        let client_leg = net.proxy_ref().leg(Leg::Client).unwrap();
        assert!(client_leg.rto_ms() >= 1_600, "{}", client_leg.rto_ms());
        assert_eq!(net.proxy_ref().stats().stalls, 0);
        // ...and the hole (opened at 108) is a stall 3 × (200 ms << 2) later.
        net.run_until(2_510);
        assert_eq!(net.proxy_ref().stats().stalls, 1);
        assert!(net.proxy_events.contains(&ProxyEvent::Stalled {
            leg: Leg::Client,
            action: OnStall::Wait
        }));
    }

    #[test]
    fn a_stall_with_reset_resets_both_legs() {
        let (mut net, server_isn) = ctcp_net(OnStall::Reset);
        send_with_a_hole(&mut net, server_isn);
        net.run_until(2_000);
        assert!(net.proxy_events.contains(&ProxyEvent::Stalled {
            leg: Leg::Client,
            action: OnStall::Reset
        }));
        let rst = net
            .client_inbox
            .iter()
            .find(|seen| seen.header.flags.contains(RST))
            .expect("the client is reset");
        assert_eq!(rst.header.seq, SeqNumber(server_isn + 1));
        assert!(net.server_events.contains(&Event::Reset));
        let stats = net.proxy_ref().stats();
        assert_eq!((stats.state, stats.stalls), (ProxyState::Closed, 1));
    }

    #[test]
    fn a_stall_with_bypass_hands_the_flow_over_and_the_server_gets_everything_after_the_hole() {
        let (mut net, server_isn) = ctcp_net(OnStall::Bypass);
        send_with_a_hole(&mut net, server_isn);
        net.run_until(2_000);
        assert_eq!(
            net.proxy_events[1..],
            [
                ProxyEvent::Stalled {
                    leg: Leg::Client,
                    action: OnStall::Bypass
                },
                ProxyEvent::PassThrough
            ]
        );
        assert_eq!(net.proxy_ref().state(), ProxyState::PassThrough);
        let handover = net.handover.expect("the stall produced a handover");
        // The legs share sequence spaces and neither side uses timestamps: nothing to rewrite.
        assert!(handover.client_to_server.is_identity());
        assert!(handover.server_to_client.is_identity());
        let owed = net.proxy_ref().owed().expect("owed streams").clone();
        assert_eq!(
            (owed[0].stats().bytes, owed[1].stats().bytes),
            (0, 7 * CTCP_SEGMENT as u64),
            "the default out-of-order timeout outlasts stall detection: the held segments are owed"
        );
        assert!(
            net.proxy_ref().owes(),
            "the server cannot acknowledge them past the hole"
        );
        for i in 3..10 {
            let seen = net.wires[P2S]
                .data()
                .find(|seen| seen.header.seq == ctcp_seq(i))
                .unwrap_or_else(|| panic!("segment {i} reached the server"));
            assert_eq!(seen.bytes(), ctcp_payload(i).bytes());
            assert_eq!(seen.header.ack, SeqNumber(server_isn + 1));
        }
        // The flow goes on as pass-through: a new segment, then (as a real TCP would send it)
        // the missing one, after which the server's stream is whole.
        ctcp_send(&mut net, 10, server_isn);
        net.run_until(2_100);
        assert!(net.wires[P2S]
            .data()
            .any(|seen| seen.header.seq == ctcp_seq(10)));
        ctcp_send(&mut net, 2, server_isn);
        net.run_until(2_200);
        net.read_server();
        let expected: Vec<u8> = (0..11)
            .flat_map(|i| ctcp_payload(i).bytes().to_vec())
            .collect();
        assert_eq!(net.server_received, expected);
        assert!(
            !net.proxy_ref().owes(),
            "the server acknowledged what was owed once the hole was filled"
        );
        let last_ack = net.client_inbox.last().unwrap().header.ack;
        assert_eq!(
            last_ack,
            ctcp_seq(11),
            "the server's ACKs reach the client as they are"
        );
    }

    /// An out-of-order timeout shorter than stall detection, with bypass. What happens, in order:
    /// the held segments are discarded at the timeout (counted, SACK forgets them); the hole
    /// stays open on its own clock, so the stall is still detected when it would have been and
    /// the flow handed over, with nothing held left to flush; from then on the client's
    /// segments pass through, and the discarded ones are the client's to send again, as a
    /// real TCP does on its retransmission timeout (RFC 2018 section 8). A cTCP client never
    /// would: that is the price of a timeout shorter than the stall detection.
    #[test]
    fn a_short_out_of_order_timeout_discards_before_a_bypass_stall_which_still_comes() {
        let mut config = ProxyConfig::default();
        config.stall.action = OnStall::Bypass;
        config.endpoint.reassembly.timeout_ms = Some(500);
        let (mut net, server_isn) = ctcp_net_with(config);
        send_with_a_hole(&mut net, server_isn);
        // The hole opened at 108 (segment 3's arrival): discarded at 608, a stall at 1108.
        net.run_until(607);
        assert_eq!(
            net.proxy_ref()
                .stats()
                .client
                .unwrap()
                .tcp
                .out_of_order_segments,
            7
        );
        net.run_until(608);
        let stats = net.proxy_ref().stats();
        let tcp = stats.client.unwrap().tcp;
        assert_eq!(
            (tcp.out_of_order_segments, tcp.out_of_order_discarded),
            (0, 7)
        );
        assert_eq!((stats.state, stats.stalls), (ProxyState::Relaying, 0));
        net.run_until(1_107);
        assert_eq!(net.proxy_ref().stats().stalls, 0);
        net.run_until(1_108);
        assert_eq!(
            net.proxy_events[1..],
            [
                ProxyEvent::Stalled {
                    leg: Leg::Client,
                    action: OnStall::Bypass
                },
                ProxyEvent::PassThrough
            ]
        );
        assert!(net.handover.is_some(), "the stall produced a handover");
        let owed = net.proxy_ref().owed().expect("owed streams");
        assert_eq!(
            (owed[0].stats().bytes, owed[1].stats().bytes),
            (0, 0),
            "nothing held was left to owe"
        );
        assert!(!net.proxy_ref().owes());
        let stats = net.proxy_ref().stats();
        assert_eq!(stats.client.unwrap().tcp.out_of_order_discarded, 7);
        // Pass-through: the server's own TCP now sees the hole and asks for it; the client sends
        // the missing segment and then the discarded ones, and the server's stream is whole.
        ctcp_send(&mut net, 10, server_isn);
        net.run_until(1_200);
        net.read_server();
        assert_eq!(net.server_received.len(), 2 * CTCP_SEGMENT);
        for i in 2..10 {
            ctcp_send(&mut net, i, server_isn);
        }
        net.run_until(1_300);
        net.read_server();
        let expected: Vec<u8> = (0..11)
            .flat_map(|i| ctcp_payload(i).bytes().to_vec())
            .collect();
        assert_eq!(net.server_received, expected);
        assert_eq!(net.client_inbox.last().unwrap().header.ack, ctcp_seq(11));
    }

    // ---- SYN cookies and conversion ----

    /// Both sides send `len` more bytes of their streams from `at`.
    fn send_both(net: &mut Net<NoInspection>, up: (usize, usize), down: (usize, usize)) {
        for at in (up.0..up.0 + up.1).step_by(1_000) {
            let len = 1_000.min(up.0 + up.1 - at);
            net.client().send(bytes(0, at, len)).unwrap();
        }
        for at in (down.0..down.0 + down.1).step_by(700) {
            let len = 700.min(down.0 + down.1 - at);
            net.server().send(bytes(0x55, at, len)).unwrap();
        }
    }

    // ---- ECN ----

    const ECE: TcpFlags = TcpFlags::ECE;
    const CWR: TcpFlags = TcpFlags::CWR;

    /// A flow whose client offers ECN or not, to a server that accepts it or not, through a
    /// proxy configured with `proxy.ecn` or not, with or without a SYN cookie.
    fn ecn_net(client: bool, server: bool, config: bool, cookies: bool) -> Net<NoInspection> {
        let config = ProxyConfig {
            ecn: config,
            ..ProxyConfig::default()
        };
        let mut net = Net::new(NoInspection, config);
        let offer = SynOptions {
            ecn: client,
            ..client_offer()
        };
        net.client = Some(Ep::connect(
            EndpointConfig::default(),
            CLIENT_PORT,
            SERVER_PORT,
            SeqNumber(CLIENT_ISS),
            offer,
            0,
        ));
        net.server_offer.ecn = server;
        if cookies {
            net.cookies = Some(CookieJar::new([7; 16]));
        }
        established(&mut net);
        net
    }

    fn leg_ecn(net: &Net<NoInspection>, leg: Leg) -> bool {
        net.proxy_ref().leg(leg).unwrap().negotiated().ecn
    }

    #[test]
    fn ecn_is_set_up_on_each_leg_whose_endpoint_offers_it() {
        // (client offers, server accepts, proxy.ecn, cookie) → (client leg, server leg).
        for (client, server, config, cookies, expected) in [
            (true, true, true, false, (true, true)),
            (false, true, true, false, (false, false)),
            (true, false, true, false, (false, false)),
            (true, true, false, false, (false, false)),
            // A cookie settles the client leg before the server is asked: without ECN on
            // either leg, so that a hand-over never leaves ECN on one side only.
            (true, true, true, true, (false, false)),
            (true, false, true, true, (false, false)),
            (false, true, true, true, (false, false)),
            (true, true, false, true, (false, false)),
        ] {
            let case = format!("client {client} server {server} config {config} cookie {cookies}");
            let mut net = ecn_net(client, server, config, cookies);
            let server_syn = net.wires[P2S].delivered[0].header;
            assert_eq!(server_syn.flags & (SYN | ACK), SYN);
            assert_eq!(
                server_syn.flags.contains(ECE | CWR),
                client && config && !cookies,
                "{case}: the server leg's SYN"
            );
            let client_syn_ack = net.wires[P2C].delivered[0].header;
            assert_eq!(client_syn_ack.flags & SYN, SYN);
            assert_eq!(
                client_syn_ack.flags & (ECE | CWR),
                if expected.0 { ECE } else { TcpFlags::empty() },
                "{case}: the client leg's SYN-ACK"
            );
            assert_eq!(
                (leg_ecn(&net, Leg::Client), leg_ecn(&net, Leg::Server)),
                expected,
                "{case}"
            );
            assert_eq!(net.client().negotiated().ecn, expected.0, "{case}");
            assert_eq!(net.server().negotiated().ecn, expected.1, "{case}");
            let stats = net.proxy_ref().stats();
            assert_eq!(stats.client.unwrap().tcp.ecn, expected.0);
            assert_eq!(stats.server.unwrap().tcp.ecn, expected.1);
            // Data both ways: ECT(0) on the legs that set it up, byte-exact either way.
            send_both(&mut net, (0, 20_000), (0, 14_000));
            net.run_until(2_000);
            net.read_client();
            net.read_server();
            assert_eq!(net.server_received, bytes(0, 0, 20_000).bytes(), "{case}");
            assert_eq!(
                net.client_received,
                bytes(0x55, 0, 14_000).bytes(),
                "{case}"
            );
            let ect = |wire: usize| {
                net.wires[wire]
                    .data()
                    .all(|seen| (seen.header.ecn == Ecn::Ect0) == (wire_leg_ecn(wire, expected)))
            };
            for wire in [C2P, P2C, P2S, S2P] {
                assert!(ect(wire), "{case}: wire {wire}");
            }
        }
    }

    /// Whether the data on `wire` is sent by an ECN-capable sender, given the legs' ECN.
    fn wire_leg_ecn(wire: usize, (client, server): (bool, bool)) -> bool {
        if wire == C2P || wire == P2C {
            client
        } else {
            server
        }
    }

    #[test]
    fn a_client_falling_back_from_ecn_gets_no_ecn_on_either_leg() {
        let syn = |flags| SegmentHeader {
            src_port: CLIENT_PORT,
            dst_port: SERVER_PORT,
            seq: SeqNumber(CLIENT_ISS),
            ack: SeqNumber(0),
            flags,
            window: 65_535,
            urgent: 0,
            options: TcpOptions::default(),
            ecn: Ecn::NotEct,
        };
        let config = ProxyConfig::default();
        let mut proxy: TcpProxy<TestBytes, NoInspection> =
            TcpProxy::on_client_syn(config, NoInspection, &syn(SYN | ECE | CWR), 0).unwrap();
        let (leg, ours) = proxy.poll_transmit(0).unwrap();
        assert_eq!((leg, ours.header.flags), (Leg::Server, SYN | ECE | CWR));
        // The server is slow; the client's SYN comes again, without ECN (Linux's fallback),
        // and so does the server leg's.
        proxy.on_segment(Leg::Client, &syn(SYN), none(), 1_000);
        proxy.on_timer(1_005);
        let resent: Vec<_> = std::iter::from_fn(|| proxy.poll_transmit(1_005)).collect();
        assert!(!resent.is_empty());
        assert!(resent
            .iter()
            .all(|(leg, out)| *leg == Leg::Server && out.header.flags == SYN));
        let syn_ack = SegmentHeader {
            src_port: SERVER_PORT,
            dst_port: CLIENT_PORT,
            seq: SeqNumber(SERVER_ISS),
            ack: SeqNumber(CLIENT_ISS + 1),
            flags: SYN | ACK | ECE,
            ..syn(SYN)
        };
        proxy.on_segment(Leg::Server, &syn_ack, none(), 1_010);
        let sent: Vec<_> = std::iter::from_fn(|| proxy.poll_transmit(1_010)).collect();
        let to_client = sent.iter().find(|(leg, _)| *leg == Leg::Client).unwrap();
        assert_eq!(to_client.1.header.flags, SYN | ACK);
        assert!(!proxy.leg(Leg::Client).unwrap().negotiated().ecn);
        assert!(
            !proxy.leg(Leg::Server).unwrap().negotiated().ecn,
            "the legs agree, whichever SYN the server answered"
        );
    }

    #[test]
    fn congestion_on_one_leg_is_answered_on_that_leg_only() {
        let mut net = ecn_net(true, true, true, false);
        // A congested router between the client and tollgate marks every fourth data segment.
        let mut n = 0;
        net.wires[C2P].mark = Some(Box::new(move |_, len| {
            n += usize::from(len > 0);
            len > 0 && n % 4 == 0
        }));
        send_both(&mut net, (0, 200_000), (0, 0));
        net.run_until(5_000);
        net.read_server();
        assert_eq!(net.server_received, bytes(0, 0, 200_000).bytes());
        // The client leg echoed the marks to the client, which slowed down (and said CWR)...
        let client_leg = net.proxy_ref().leg(Leg::Client).unwrap().stats();
        assert!(client_leg.ecn_ce_received > 0);
        assert!(net.wires[P2C]
            .delivered
            .iter()
            .any(|s| s.header.flags.contains(ECE)));
        let client = net.client().stats();
        assert!(client.ecn_cwnd_reductions > 0, "{client:?}");
        assert!(net.wires[C2P].data().any(|s| s.header.flags.contains(CWR)));
        // ...and nothing of it reached the server's loop: no mark, no echo, no reduction.
        assert!(net.wires[P2S].data().all(|s| s.header.ecn == Ecn::Ect0));
        let after_syns = |wire: usize| net.wires[wire].delivered.iter().skip(1);
        assert!(after_syns(S2P).all(|s| !s.header.flags.contains(ECE)));
        assert!(after_syns(P2S).all(|s| !s.header.flags.contains(CWR)));
        let server_leg = net.proxy_ref().leg(Leg::Server).unwrap().stats();
        assert_eq!(
            (server_leg.ecn_ece_received, server_leg.ecn_cwnd_reductions),
            (0, 0)
        );
        assert_eq!(net.server().stats().ecn_ce_received, 0);
        // No data was lost, so the leg that reduced cwnd sent nothing again.
        assert_eq!(client.retransmissions, 0);
    }

    /// Reads on both sides until the streams are `up` and `down` bytes long, then closes both
    /// and checks they close cleanly.
    fn finish(net: &mut Net<NoInspection>, up: usize, down: usize) {
        for _ in 0..200 {
            net.read_client();
            net.read_server();
            if net.server_received.len() >= up && net.client_received.len() >= down {
                break;
            }
            let until = net.now + 50;
            net.run_until(until);
        }
        assert_eq!(net.server_received, bytes(0, 0, up).bytes());
        assert_eq!(net.client_received, bytes(0x55, 0, down).bytes());
        net.client().shutdown_write();
        net.server().shutdown_write();
        let until = net.now + 5_000;
        net.run_until(until);
        for state in [net.client().state(), net.server().state()] {
            assert!(
                matches!(state, State::TimeWait | State::Closed),
                "{state:?}"
            );
        }
        for events in [&net.client_events, &net.server_events] {
            assert!(events.contains(&Event::PeerClosed), "{events:?}");
            assert!(!events.contains(&Event::Reset), "{events:?}");
        }
    }

    #[test]
    fn converting_mid_stream_keeps_both_endpoints_going() {
        let mut net = plain_net();
        established(&mut net);
        send_both(&mut net, (0, 60_000), (0, 50_000));
        net.run_until(230);
        assert!(net.proxy_ref().buffered(Direction::ClientToServer) > 0);
        assert!(net.proxy_ref().buffered(Direction::ServerToClient) > 0);
        let handover = net.convert();
        assert_eq!(net.proxy_events.last(), Some(&ProxyEvent::PassThrough));
        assert!(net.proxy_ref().owes(), "buffered bytes are owed");
        for translation in [handover.client_to_server, handover.server_to_client] {
            assert_eq!((translation.seq_delta, translation.ack_delta), (0, 0));
            assert_eq!(translation.window_scale, None);
            // The clocks mirror each other: they differ by the time since each side last spoke.
            assert!(translation.tsval_delta < 100, "{translation:?}");
        }
        let now = net.now;
        assert_eq!(
            net.proxy().convert_to_passthrough(now),
            Err(ConvertError::Finished)
        );
        send_both(&mut net, (60_000, 20_000), (50_000, 20_000));
        finish(&mut net, 80_000, 70_000);
    }

    #[test]
    fn a_syn_cookie_flow_to_a_closed_port_resets_the_client() {
        let mut net = plain_net();
        net.cookies = Some(CookieJar::new([7; 16]));
        net.server_mode = ServerMode::Refuse;
        net.run_until(1_000);
        assert!(net.client_events.contains(&Event::Established));
        assert!(net.client_events.contains(&Event::Reset));
        assert_eq!(net.proxy_events, [ProxyEvent::Refused, ProxyEvent::Closed]);
    }

    #[test]
    fn a_syn_cookie_flow_relays_and_hands_over_with_the_cookie_offset() {
        let mut net = plain_net();
        net.cookies = Some(CookieJar::new([7; 16]));
        established(&mut net);
        let syn_ack = net.wires[P2C].delivered[0].header;
        assert_eq!(syn_ack.flags, SYN | ACK);
        assert_eq!(
            net.wires[P2S].delivered[0].at,
            net.wires[C2P].delivered[1].at + 5,
            "the server is asked once the client's ACK proves the cookie"
        );
        let cookie = syn_ack.seq.0;
        let offset = cookie.wrapping_sub(SERVER_ISS);
        assert_ne!(offset, 0);
        assert_eq!(net.proxy_ref().seq_offset(Direction::ClientToServer), 0);
        assert_eq!(
            net.proxy_ref().seq_offset(Direction::ServerToClient),
            offset
        );

        send_both(&mut net, (0, 30_000), (0, 40_000));
        net.run_until(400);
        send_both(&mut net, (30_000, 20_000), (40_000, 30_000));
        net.run_until(420);
        let handover = net.convert();
        let (c2s, s2c) = (handover.client_to_server, handover.server_to_client);
        assert_eq!((c2s.seq_delta, c2s.ack_delta), (0, offset.wrapping_neg()));
        assert_eq!((s2c.seq_delta, s2c.ack_delta), (offset, 0));
        // The client was told shift 7 by the cookie; the server uses 5.
        assert_eq!(s2c.window_scale, Some((5, 7)));
        assert_eq!(c2s.window_scale, None);
        send_both(&mut net, (50_000, 10_000), (70_000, 10_000));
        finish(&mut net, 60_000, 80_000);
    }

    // ---- random flows over bad links ----

    fn random_offer(rng: &mut TestRng) -> SynOptions {
        SynOptions {
            mss: 100 + rng.below(1400) as u16,
            window_scale: rng.chance(60).then(|| rng.below(9) as u8),
            sack_permitted: rng.chance(60),
            timestamps: rng.chance(60).then(|| TimestampClock::new(rng.u32())),
            ecn: rng.chance(50),
        }
    }

    fn random_endpoint_config(rng: &mut TestRng, small_buffers: bool) -> EndpointConfig {
        let buffers: &[usize] = if small_buffers {
            &[3_000, 20_000, 256 * 1024]
        } else {
            &[256 * 1024]
        };
        EndpointConfig {
            send_buffer: [2_000, 16_000, 256 * 1024][rng.index(3)],
            receive_buffer: buffers[rng.index(buffers.len())],
            reassembly: crate::tcp::reassembly::ReassemblyLimits {
                max_segments: [4, 64][rng.index(2)],
                max_bytes: [8_000, 256 * 1024][rng.index(2)],
                timeout_ms: [None, Some(300), Some(10_000)][rng.index(3)],
            },
            delayed_ack_ms: [0, 40][rng.index(2)],
            // Past the 60 s maximum RTO, so that a FIN sent again at full backoff still finds
            // TIME-WAIT (see `EndpointConfig::time_wait_ms`).
            time_wait_ms: 130_000,
            ..EndpointConfig::default()
        }
    }

    fn random_iss(rng: &mut TestRng) -> SeqNumber {
        if rng.chance(30) {
            // Close enough to 2^32 that the data crosses it.
            SeqNumber(u32::MAX - rng.below(20_000) as u32)
        } else {
            SeqNumber(rng.u32())
        }
    }

    /// One side's application: the stream it sends, and how it reads.
    struct App {
        stream: Vec<u8>,
        queued: usize,
        capacity: usize,
        shut: bool,
    }

    impl App {
        fn act(
            &mut self,
            ep: &mut Ep,
            rng: &mut TestRng,
            received: &mut Vec<u8>,
            reads: u64,
            small: bool,
        ) {
            while self.queued < self.stream.len() && rng.chance(70) {
                let len = (1 + rng.index(3_000)).min(self.stream.len() - self.queued);
                let chunk = TestBytes::from(&self.stream[self.queued..self.queued + len]);
                if ep.send(chunk).is_err() {
                    break;
                }
                self.queued += len;
            }
            if self.queued == self.stream.len() && !self.shut && rng.chance(20) {
                ep.shutdown_write();
                self.shut = true;
            }
            if small && rng.chance(10) {
                self.capacity = [0, 1_000, 3_000, 20_000, 256 * 1024][rng.index(5)];
            }
            ep.set_receive_capacity(self.capacity);
            if rng.chance(reads) {
                while let Some(payload) = ep.recv() {
                    received.extend_from_slice(payload.bytes());
                }
            }
        }
    }

    fn finished(ep: Option<&Ep>) -> bool {
        ep.is_some_and(|ep| matches!(ep.state(), State::Closed | State::TimeWait))
    }

    /// One flow: client endpoint ↔ link ↔ proxy ↔ link ↔ server endpoint, with random options,
    /// ISNs, buffers, applications (slow readers closing their windows among them) and link
    /// faults (loss, duplication, reordering). With `convert`, the flow is handed over to
    /// pass-through at a random moment, and what the proxy owed must still arrive.
    fn simulate(seed: u64, convert: bool) -> bool {
        let mut rng = TestRng::new(seed);
        let small = true;
        let buffers: &[usize] = &[4_000, 16_000, 256 * 1024];
        let config = ProxyConfig {
            endpoint: random_endpoint_config(&mut rng, true),
            buffer: buffers[rng.index(buffers.len())],
            mss: [536, 1460][rng.index(2)],
            window_scaling: rng.chance(80),
            sack: rng.chance(80),
            timestamps: rng.chance(80),
            ..ProxyConfig::default()
        };
        let mut net = Net::new(NoInspection, config);
        net.rng = TestRng::new(seed ^ 0x5eed_5eed);
        let client_config = random_endpoint_config(&mut rng, small);
        let (client_offer, client_iss) = (random_offer(&mut rng), random_iss(&mut rng));
        net.client = Some(Ep::connect(
            client_config,
            CLIENT_PORT,
            SERVER_PORT,
            client_iss,
            client_offer,
            0,
        ));
        net.server_config = random_endpoint_config(&mut rng, small);
        net.server_offer = random_offer(&mut rng);
        net.server_iss = random_iss(&mut rng);
        let mut faults = Vec::new();
        for link in [[C2P, P2C], [P2S, S2P]] {
            let (loss, duplication) = (rng.below(10), rng.below(5));
            let delay = 1 + rng.below(20);
            let jitter = rng.below(30);
            for wire in link {
                let wire = &mut net.wires[wire];
                wire.link = LossyLink::faulty(delay, jitter, loss, duplication);
            }
            faults.push((loss, duplication, delay, jitter));
        }
        let mut apps: Vec<App> = (0..2)
            .map(|_| {
                let len = rng.index(30_000);
                App {
                    stream: (0..len).map(|_| rng.u32() as u8).collect(),
                    queued: 0,
                    capacity: 256 * 1024,
                    shut: false,
                }
            })
            .collect();
        let reads = [3, 20, 60, 100][rng.index(4)];
        let convert_at = convert.then(|| rng.below(1_500));
        net.streams = Some([
            (client_iss + 1, apps[0].stream.clone()),
            (net.server_iss + 1, apps[1].stream.clone()),
        ]);
        let describe = format!(
            "seed {seed}: links (loss%, dup%, delay, jitter) {faults:?}, reads {reads}%, \
             convert at {convert_at:?}, proxy {config:?}, client {client_config:?} \
             {client_offer:?} {client_iss:?}, server {:?} {:?} {:?}, streams {} and {} bytes",
            net.server_config,
            net.server_offer,
            net.server_iss,
            apps[0].stream.len(),
            apps[1].stream.len()
        );

        let mut next_app = 0;
        let mut steps = 0u64;
        loop {
            steps += 1;
            assert!(
                steps < 3_000_000,
                "no end in sight at {}: {describe}: {:?} {:?} {:?} {:?} {:?} {:?}",
                net.now,
                net.proxy_events,
                net.client_events,
                net.server_events,
                net.client,
                net.proxy,
                net.server
            );
            let now = net.now;
            if now >= next_app {
                if let Some(ep) = net.client.as_mut() {
                    apps[0].act(ep, &mut net.rng, &mut net.client_received, reads, small);
                }
                if let Some(ep) = net.server.as_mut() {
                    apps[1].act(ep, &mut net.rng, &mut net.server_received, reads, small);
                }
                next_app = now + 1 + net.rng.below(30);
            }
            if convert_at.is_some_and(|at| now >= at) && net.handover.is_none() {
                if let Some(proxy) = net.proxy.as_mut() {
                    if let Ok(handover) = proxy.convert_to_passthrough(now) {
                        net.start_passthrough(handover);
                    }
                }
            }
            net.drain();
            if let Some(proxy) = net.proxy.as_ref() {
                for direction in [Direction::ClientToServer, Direction::ServerToClient] {
                    let buffered = proxy.buffered(direction);
                    assert!(
                        buffered <= config.buffer,
                        "{buffered} bytes buffered {direction:?} at {}: {describe}: {:#?}",
                        net.now,
                        proxy.stats()
                    );
                }
            }
            for (received, sent) in [
                (&net.server_received, &apps[0].stream),
                (&net.client_received, &apps[1].stream),
            ] {
                assert!(sent.starts_with(received), "corrupted stream: {describe}");
            }
            // A RST may end an endpoint's TIME-WAIT (a leg already closed answers a duplicate
            // with one, as a host without the connection would), after everything arrived; a RST
            // that loses data shows as a stream cut short at the end.
            for events in [&net.client_events, &net.server_events] {
                assert!(
                    !events
                        .iter()
                        .any(|e| matches!(e, Event::TimedOut | Event::Refused)),
                    "{events:?} at {}: {describe}: proxy {:?} client {:?} server {:?}",
                    net.now,
                    net.proxy_events,
                    net.client_events,
                    net.server_events
                );
            }
            let proxy_done = net.proxy.as_ref().is_some_and(|proxy| {
                matches!(
                    proxy.state(),
                    ProxyState::TimeWait | ProxyState::Closed | ProxyState::PassThrough
                ) && !proxy.owes()
            });
            if finished(net.client.as_ref()) && finished(net.server.as_ref()) && proxy_done {
                break;
            }
            assert!(
                net.now < 86_400_000,
                "not closed after a day: {describe}: {:?} {:?} {:?}",
                net.client,
                net.proxy,
                net.server
            );
            if !net.step(next_app) {
                net.now = net.now.max(next_app);
            }
        }

        net.read_client();
        net.read_server();
        assert!(
            net.server_received == apps[0].stream,
            "the server received {} of {} bytes: {describe}",
            net.server_received.len(),
            apps[0].stream.len()
        );
        assert!(
            net.client_received == apps[1].stream,
            "the client received {} of {} bytes: {describe}",
            net.client_received.len(),
            apps[1].stream.len()
        );
        assert!(
            !net.proxy_events.iter().any(|e| matches!(
                e,
                ProxyEvent::Reset { .. } | ProxyEvent::TimedOut { .. } | ProxyEvent::Refused
            )),
            "{:?}: {describe}",
            net.proxy_events
        );
        net.handover.is_some()
    }

    fn seeds(count: u64) -> impl Iterator<Item = u64> {
        let only: Option<u64> = std::env::var("SIM_SEED").ok().and_then(|v| v.parse().ok());
        let count = std::env::var("SIM_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(count);
        (1..=count).filter(move |seed| only.is_none_or(|only| only == *seed))
    }

    /// `SIM_SEED=n` runs one seed (a failure names its seed), `SIM_SEEDS=n` the first n, and
    /// `SIM_TRACE=1` prints every segment delivered.
    #[test]
    fn proxied_flows_over_lossy_reordering_links_deliver_both_streams_exactly() {
        for seed in seeds(300) {
            simulate(seed, false);
        }
    }

    #[test]
    fn flows_handed_over_at_random_moments_deliver_both_streams_exactly() {
        let mut converted = 0;
        for seed in seeds(100) {
            converted += usize::from(simulate(seed, true));
        }
        // Some flows end before their moment comes; most are handed over.
        eprintln!("{converted} flows handed over");
        assert!(
            converted >= 50 || std::env::var("SIM_SEED").is_ok(),
            "{converted}"
        );
    }
}
