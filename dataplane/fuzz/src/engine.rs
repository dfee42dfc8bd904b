//! The `tcp_engine` target: one proxied connection, both of whose real endpoints are played by
//! the fuzz input, a segment at a time.
//!
//! An input is a [`Setup`] (the proxy's configuration, what each endpoint offers in its SYN,
//! both ISNs, whether a SYN cookie answers the client) and then a script of operations: a segment from the client or the server, time
//! passing, the timers running, a hand-over to pass-through, an abort. Sequence and
//! acknowledgment numbers are written relative to what each endpoint has sent and been sent,
//! so small numbers mean ordinary segments and the fuzzer need not guess 32-bit values to get
//! past the window checks; raw values stay possible.
//!
//! The payload of every segment is a function of its sequence numbers ([`stream_byte`]), so
//! retransmissions, overlaps and duplicates always agree, and what the proxy sends can be
//! checked byte by byte against what the other side sent. What is checked, after every step:
//! - every byte relayed to one side is the byte the other side sent at that place, and the
//!   other side sent everything before it: the relayed stream is a prefix of the sent one;
//! - a relayed FIN sits where the other side put its FIN;
//! - nothing acknowledges a byte the acknowledged side never sent;
//! - no segment exceeds the MSS its receiver announced or the window it offered, the proxy's
//!   own window does not shrink, and every header the proxy sends can be written to the wire
//!   and reads back the same;
//! - a hand-over to pass-through numbers the bytes as the proxy did;
//! - what the proxy buffers per direction stays within its configured bound, and what it holds
//!   out of order within the reassembly limits;
//! - `poll_transmit` runs dry, timers do not stay due however often they run (a worker would
//!   spin), and a finished flow takes no more segments and wants no more timers.

use std::net::SocketAddr;
use std::sync::OnceLock;

use tollgate_core::tcp::cookie::{CookieJar, FourTuple};
use tollgate_core::tcp::endpoint::{
    AcceptError, EndpointConfig, KeepaliveConfig, Reject, SegmentOutcome, State, Transmit,
    DEFAULT_PEER_MSS,
};
use tollgate_core::tcp::inspect::{
    Direction, Inspector, NoInspection, SignatureConfig, SignatureInspector,
};
use tollgate_core::tcp::payload::{Payload, TestBytes};
use tollgate_core::tcp::proxy::{
    cookie_syn_ack, Handover, Leg, OnStall, ProxyConfig, ProxyEvent, ProxyState, StallConfig,
    TcpProxy,
};
use tollgate_core::tcp::reassembly::ReassemblyLimits;
use tollgate_core::tcp::rtt::TimestampClock;
use tollgate_core::tcp::segment::{Ecn, SackList, SegmentHeader, TcpFlags, TcpOptions};
use tollgate_core::tcp::seq::SeqNumber;

use crate::coverage::SeqCoverage;
use crate::cursor::Cursor;

pub const CLIENT_PORT: u16 = 40_000;
/// Cisco's cTCP port: the flows the proxy exists to get right.
pub const SERVER_PORT: u16 = 10_000;

/// ISNs the seeds use; the signature of [`Setup::inspect`] is placed in the client's stream
/// numbered from this one.
pub const SEED_CLIENT_ISN: u32 = 0x1000_0000;
pub const SEED_SERVER_ISN: u32 = 0xffff_f000;

/// Where in the seeds' client stream the inspector's signature lies, and its length.
pub const SIGNATURE_AT: usize = 192;
const SIGNATURE_LEN: usize = 4;

/// The clock at the start: not zero, so that nothing relies on time starting there.
const START_MS: u64 = 1_000;

/// Segments one step may emit; a proxy past this is looping.
const MAX_TRANSMITS_PER_STEP: usize = 100_000;

/// Rounds of timers at one instant; a proxy past this keeps a timer due that never fires.
const MAX_TIMER_ROUNDS: usize = 1_000;

/// Operations, the low three bits of an operation's first byte.
pub mod op {
    pub const CLIENT_SEGMENT: u8 = 0;
    pub const SERVER_SEGMENT: u8 = 1;
    /// Time passes: `(n + 1) × scale` ms, with n the next byte and the scale
    /// `[1, 10, 100, 1000][bits 3-4]`; timers run when due, or (bit 5) all at the end, as
    /// on a worker that was busy.
    pub const ADVANCE: u8 = 2;
    /// Time jumps to the next timer, which runs; `1 + bits 3-7` times.
    pub const TIMERS: u8 = 3;
    pub const PASS_THROUGH: u8 = 4;
    pub const ABORT: u8 = 5;
    /// Both endpoints acknowledge everything the proxy sent them.
    pub const ACK_ALL: u8 = 6;
    /// A segment from the client (bit 3 clear) or the server, its header bytes taken as they
    /// are from the input, options included; sequence and acknowledgment numbers are added to
    /// what `Seq::Next` and `Ack::All` would give.
    pub const RAW_SEGMENT: u8 = 7;
}

/// The byte each side sends at each sequence number.
pub fn stream_byte(direction: Direction, seq: SeqNumber) -> u8 {
    let tag = match direction {
        Direction::ClientToServer => 0x00,
        Direction::ServerToClient => 0xa5,
    };
    let x = seq.0.wrapping_mul(0x9e37_79b1);
    ((x ^ (x >> 15)) >> 8) as u8 ^ tag
}

fn stream_bytes(direction: Direction, start: SeqNumber, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| stream_byte(direction, start + i))
        .collect()
}

/// What one endpoint offers in its SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamps: bool,
}

const MSS_VALUES: [u16; 8] = [1460, 536, 1220, 88, 0, 9000, 65535, 100];

impl Offer {
    fn decode(cursor: &mut Cursor<'_>) -> Offer {
        let (bits, mss) = (cursor.u8(), cursor.u8());
        Offer {
            mss: (bits & 1 != 0)
                .then(|| MSS_VALUES[usize::from(mss & 7)].saturating_add(u16::from(mss >> 3))),
            window_scale: (bits & 2 != 0).then_some(bits >> 4),
            sack_permitted: bits & 4 != 0,
            timestamps: bits & 8 != 0,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut bits = 0;
        if self.mss.is_some() {
            bits |= 1;
        }
        if let Some(shift) = self.window_scale {
            bits |= 2 | (shift.min(15) << 4);
        }
        if self.sack_permitted {
            bits |= 4;
        }
        if self.timestamps {
            bits |= 8;
        }
        let mss = self.mss.map_or(0, |mss| {
            (0u8..8)
                .find(|&code| MSS_VALUES[usize::from(code)] == mss)
                .expect("an MSS the script format can write")
        });
        out.extend_from_slice(&[bits, mss]);
    }

    /// Everything on: what Linux offers.
    pub fn linux() -> Offer {
        Offer {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamps: true,
        }
    }

    fn options(&self, tsval: u32) -> TcpOptions {
        TcpOptions {
            mss: self.mss,
            window_scale: self.window_scale,
            sack_permitted: self.sack_permitted,
            sack: SackList::new(),
            timestamps: self.timestamps.then_some((tsval, 0)),
        }
    }
}

/// The input's header: the proxy's configuration and the two endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub window_scaling: bool,
    pub sack: bool,
    pub timestamps: bool,
    pub on_stall: OnStall,
    pub delayed_acks: bool,
    /// 4 segments and 4 KiB held out of order, rather than the defaults.
    pub small_reassembly: bool,
    /// A signature inspector whose signature lies in the client's stream, rather than none.
    pub inspect: bool,
    /// Index into [`BUFFERS`].
    pub buffer: u8,
    pub idle_timeout: bool,
    pub keepalive: bool,
    /// Out-of-order data is dropped after 500 ms rather than 10 s.
    pub short_reassembly_timeout: bool,
    /// A stall after 2 s of an unfilled hole rather than after 3 RTOs.
    pub fixed_stall_time: bool,
    /// One duplicate ACK before a hole can be a stall rather than three.
    pub one_dup_ack: bool,
    /// The client's SYN is answered with a SYN cookie, as under a SYN flood, so the two legs'
    /// sequence spaces differ.
    pub cookie: bool,
    pub client: Offer,
    pub server: Offer,
    pub client_isn: u32,
    pub server_isn: u32,
}

/// Bytes buffered per direction.
pub const BUFFERS: [usize; 4] = [256 * 1024, 16 * 1024, 4 * 1024, 1_500];

impl Setup {
    pub fn decode(cursor: &mut Cursor<'_>) -> Setup {
        let (a, b) = (cursor.u8(), cursor.u8());
        Setup {
            window_scaling: a & 1 != 0,
            sack: a & 2 != 0,
            timestamps: a & 4 != 0,
            on_stall: match (a >> 3) & 3 {
                0 => OnStall::Wait,
                1 => OnStall::Reset,
                _ => OnStall::Bypass,
            },
            delayed_acks: a & 0x20 != 0,
            small_reassembly: a & 0x40 != 0,
            inspect: a & 0x80 != 0,
            buffer: b & 3,
            idle_timeout: b & 4 != 0,
            keepalive: b & 8 != 0,
            short_reassembly_timeout: b & 0x10 != 0,
            fixed_stall_time: b & 0x20 != 0,
            one_dup_ack: b & 0x40 != 0,
            cookie: b & 0x80 != 0,
            client: Offer::decode(cursor),
            server: Offer::decode(cursor),
            client_isn: cursor.u32(),
            server_isn: cursor.u32(),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let stall = match self.on_stall {
            OnStall::Wait => 0,
            OnStall::Reset => 1,
            OnStall::Bypass => 2,
        };
        let a = u8::from(self.window_scaling)
            | u8::from(self.sack) << 1
            | u8::from(self.timestamps) << 2
            | stall << 3
            | u8::from(self.delayed_acks) << 5
            | u8::from(self.small_reassembly) << 6
            | u8::from(self.inspect) << 7;
        let b = (self.buffer & 3)
            | u8::from(self.idle_timeout) << 2
            | u8::from(self.keepalive) << 3
            | u8::from(self.short_reassembly_timeout) << 4
            | u8::from(self.fixed_stall_time) << 5
            | u8::from(self.one_dup_ack) << 6
            | u8::from(self.cookie) << 7;
        out.extend_from_slice(&[a, b]);
        self.client.encode(out);
        self.server.encode(out);
        out.extend_from_slice(&self.client_isn.to_be_bytes());
        out.extend_from_slice(&self.server_isn.to_be_bytes());
    }

    /// The defaults of the data plane, both endpoints offering everything.
    pub fn seed() -> Setup {
        Setup {
            window_scaling: true,
            sack: true,
            timestamps: true,
            on_stall: OnStall::Wait,
            delayed_acks: false,
            small_reassembly: false,
            inspect: false,
            buffer: 0,
            idle_timeout: false,
            keepalive: false,
            short_reassembly_timeout: false,
            fixed_stall_time: false,
            one_dup_ack: false,
            cookie: false,
            client: Offer::linux(),
            server: Offer::linux(),
            client_isn: SEED_CLIENT_ISN,
            server_isn: SEED_SERVER_ISN,
        }
    }

    fn proxy_config(&self) -> ProxyConfig {
        let mut reassembly = ReassemblyLimits::default();
        if self.small_reassembly {
            reassembly.max_segments = 4;
            reassembly.max_bytes = 4 * 1024;
        }
        if self.short_reassembly_timeout {
            reassembly.timeout_ms = Some(500);
        }
        ProxyConfig {
            endpoint: EndpointConfig {
                reassembly,
                delayed_ack_ms: if self.delayed_acks { 40 } else { 0 },
                idle_timeout_ms: self.idle_timeout.then_some(30_000),
                keepalive: self.keepalive.then_some(KeepaliveConfig {
                    idle_ms: 10_000,
                    interval_ms: 1_000,
                    probes: 3,
                }),
                ..EndpointConfig::default()
            },
            buffer: BUFFERS[usize::from(self.buffer & 3)],
            window_scaling: self.window_scaling,
            sack: self.sack,
            timestamps: self.timestamps,
            stall: StallConfig {
                after_ms: self.fixed_stall_time.then_some(2_000),
                dup_acks: if self.one_dup_ack { 1 } else { 3 },
                action: self.on_stall,
            },
            ..ProxyConfig::default()
        }
    }
}

/// A segment's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seq {
    /// Right after everything the endpoint has sent (its ISN on a SYN).
    Next,
    /// That many before: a retransmission or an overlap.
    Back(u16),
    /// That many after: a hole before it.
    Ahead(u16),
    Raw(u32),
}

/// A segment's acknowledgment number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Everything the proxy has sent this endpoint.
    All,
    Back(u16),
    /// Beyond what was sent: an acknowledgment of nothing.
    Ahead(u16),
    Raw(u32),
}

/// Option bits of a [`SegmentOp`].
pub mod opt {
    pub const NO_TIMESTAMPS: u8 = 1;
    /// A TSval from far in the past: PAWS.
    pub const STALE_TSVAL: u8 = 2;
    /// SACK blocks follow the option byte.
    pub const SACK: u8 = 4;
    pub const ZERO_TSECR: u8 = 8;
    /// A SYN without any option.
    pub const BARE_SYN: u8 = 0x10;
    pub const URGENT: u8 = 0x20;
}

/// One segment of the script, as the endpoint sending it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentOp {
    pub flags: TcpFlags,
    pub seq: Seq,
    pub ack: Ack,
    /// 0: 65535; n: (n - 1) × 257, so 1 is a zero window.
    pub window: u8,
    /// Payload bytes: 0-127 as they are, above that (n - 127) × 64, up to 8 KiB.
    pub len: u8,
    pub options: u8,
    /// SACK blocks as (offset from the acknowledgment number, length).
    pub sack: Vec<(u16, u16)>,
}

pub fn window_of(code: u8) -> u16 {
    match code {
        0 => u16::MAX,
        n => u16::from(n - 1) * 257,
    }
}

pub fn len_of(code: u8) -> usize {
    match code {
        0..=127 => usize::from(code),
        n => usize::from(n - 127) * 64,
    }
}

impl SegmentOp {
    /// A pure ACK of everything, the segment all-zero bytes decode to.
    pub fn ack() -> SegmentOp {
        SegmentOp {
            flags: TcpFlags::ACK,
            seq: Seq::Next,
            ack: Ack::All,
            window: 0,
            len: 0,
            options: 0,
            sack: Vec::new(),
        }
    }

    pub fn syn() -> SegmentOp {
        SegmentOp {
            flags: TcpFlags::SYN,
            ..SegmentOp::ack()
        }
    }

    pub fn syn_ack() -> SegmentOp {
        SegmentOp {
            flags: TcpFlags::SYN | TcpFlags::ACK,
            ..SegmentOp::ack()
        }
    }

    /// `len` bytes (a length [`len_of`] can give) with PSH, acknowledging everything.
    pub fn data(len: usize) -> SegmentOp {
        let code = match len {
            0..=127 => len as u8,
            _ => {
                assert_eq!(len % 64, 0, "long payloads are multiples of 64 bytes");
                (127 + len / 64) as u8
            }
        };
        assert_eq!(len_of(code), len);
        SegmentOp {
            flags: TcpFlags::ACK | TcpFlags::PSH,
            len: code,
            ..SegmentOp::ack()
        }
    }

    pub fn with_flags(mut self, flags: TcpFlags) -> SegmentOp {
        self.flags = flags;
        self
    }

    pub fn with_seq(mut self, seq: Seq) -> SegmentOp {
        self.seq = seq;
        self
    }

    pub fn with_ack(mut self, ack: Ack) -> SegmentOp {
        self.ack = ack;
        self
    }

    pub fn with_window(mut self, code: u8) -> SegmentOp {
        self.window = code;
        self
    }

    pub fn with_sack(mut self, blocks: &[(u16, u16)]) -> SegmentOp {
        self.options |= opt::SACK;
        self.sack = blocks.to_vec();
        self
    }

    fn decode(cursor: &mut Cursor<'_>) -> SegmentOp {
        // ACK is flipped so that a zero byte is a plain ACK.
        let flags = TcpFlags::from_bits(cursor.u8() ^ TcpFlags::ACK.bits());
        let seq = match cursor.u8() & 3 {
            0 => Seq::Next,
            1 => Seq::Back(cursor.u16()),
            2 => Seq::Ahead(cursor.u16()),
            _ => Seq::Raw(cursor.u32()),
        };
        let ack = match cursor.u8() & 3 {
            0 => Ack::All,
            1 => Ack::Back(cursor.u16()),
            2 => Ack::Ahead(cursor.u16()),
            _ => Ack::Raw(cursor.u32()),
        };
        let (window, len, options) = (cursor.u8(), cursor.u8(), cursor.u8());
        let mut sack = Vec::new();
        if options & opt::SACK != 0 {
            for _ in 0..=cursor.u8() & 3 {
                sack.push((cursor.u16(), cursor.u16()));
            }
        }
        SegmentOp {
            flags,
            seq,
            ack,
            window,
            len,
            options,
            sack,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.flags.bits() ^ TcpFlags::ACK.bits());
        match self.seq {
            Seq::Next => out.push(0),
            Seq::Back(d) => {
                out.push(1);
                out.extend_from_slice(&d.to_be_bytes());
            }
            Seq::Ahead(d) => {
                out.push(2);
                out.extend_from_slice(&d.to_be_bytes());
            }
            Seq::Raw(x) => {
                out.push(3);
                out.extend_from_slice(&x.to_be_bytes());
            }
        }
        match self.ack {
            Ack::All => out.push(0),
            Ack::Back(d) => {
                out.push(1);
                out.extend_from_slice(&d.to_be_bytes());
            }
            Ack::Ahead(d) => {
                out.push(2);
                out.extend_from_slice(&d.to_be_bytes());
            }
            Ack::Raw(x) => {
                out.push(3);
                out.extend_from_slice(&x.to_be_bytes());
            }
        }
        out.extend_from_slice(&[self.window, self.len, self.options]);
        if self.options & opt::SACK != 0 {
            assert!(
                (1..=4).contains(&self.sack.len()),
                "one to four SACK blocks"
            );
            out.push(self.sack.len() as u8 - 1);
            for (offset, len) in &self.sack {
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
    }
}

/// Writes scripts, for the seed corpus and the tests.
pub struct Script {
    bytes: Vec<u8>,
}

impl Script {
    pub fn new(setup: &Setup) -> Script {
        let mut bytes = Vec::new();
        setup.encode(&mut bytes);
        Script { bytes }
    }

    fn segment(mut self, op: u8, segment: &SegmentOp) -> Script {
        self.bytes.push(op);
        segment.encode(&mut self.bytes);
        self
    }

    pub fn client(self, segment: SegmentOp) -> Script {
        self.segment(op::CLIENT_SEGMENT, &segment)
    }

    pub fn server(self, segment: SegmentOp) -> Script {
        self.segment(op::SERVER_SEGMENT, &segment)
    }

    /// Time passes by `ms`, which must be a multiple of 1, 10, 100 or 1000 the encoding can
    /// write in one step.
    pub fn advance(mut self, ms: u64) -> Script {
        let (scale_code, scale) = [(0u8, 1u64), (1, 10), (2, 100), (3, 1000)]
            .into_iter()
            .find(|&(_, scale)| ms.is_multiple_of(scale) && (1..=256).contains(&(ms / scale)))
            .expect("a time step the script format can write");
        self.bytes
            .extend_from_slice(&[op::ADVANCE | scale_code << 3, (ms / scale - 1) as u8]);
        self
    }

    /// The next `times` timers (1 to 32) run.
    pub fn timers(mut self, times: u8) -> Script {
        assert!((1..=32).contains(&times));
        self.bytes.push(op::TIMERS | (times - 1) << 3);
        self
    }

    pub fn pass_through(mut self) -> Script {
        self.bytes.push(op::PASS_THROUGH);
        self
    }

    pub fn abort(mut self) -> Script {
        self.bytes.push(op::ABORT);
        self
    }

    pub fn ack_all(mut self) -> Script {
        self.bytes.push(op::ACK_ALL);
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// What a run did, for the tests of the seeds.
#[derive(Debug, Default)]
pub struct Outcome {
    pub events: Vec<ProxyEvent>,
    /// Payload bytes the proxy sent on, client to server and server to client (hand-over
    /// owed segments included).
    pub relayed: [usize; 2],
    pub final_state: Option<ProxyState>,
    pub handed_over: bool,
    /// The client's handshake was completed with a SYN cookie.
    pub cookie: bool,
}

/// `TOLLGATE_FUZZ_TRACE=1` prints every segment each way, to follow a failing input.
fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("TOLLGATE_FUZZ_TRACE").is_some())
}

/// Runs one input; panics when the engine breaks a promise.
pub fn run(data: &[u8]) -> Outcome {
    let mut cursor = Cursor::new(data);
    let setup = Setup::decode(&mut cursor);
    if setup.inspect {
        Harness::start(setup, signature_inspector()).run(cursor)
    } else {
        Harness::start(setup, NoInspection).run(cursor)
    }
}

/// One signature: four bytes of the seeds' client stream, so that the seeds can reach it.
fn signature_inspector() -> &'static SignatureInspector {
    static INSPECTOR: OnceLock<SignatureInspector> = OnceLock::new();
    INSPECTOR.get_or_init(|| {
        let start = SeqNumber(SEED_CLIENT_ISN) + 1 + SIGNATURE_AT;
        let config = SignatureConfig {
            name: "fuzz".to_owned(),
            pattern: stream_bytes(Direction::ClientToServer, start, SIGNATURE_LEN),
            direction: None,
        };
        SignatureInspector::new(&[config]).expect("a valid signature")
    })
}

/// One of the real endpoints, as the script plays it.
struct Peer {
    /// The proxy's leg this endpoint talks to.
    leg: Leg,
    offer: Offer,
    isn: SeqNumber,
    /// One past the highest sequence number sent, SYN and FIN included.
    next: SeqNumber,
    /// Every payload byte ever sent.
    sent: SeqCoverage,
    /// The sequence number of every FIN sent.
    fins: Vec<SeqNumber>,
    /// The largest MSS announced in a SYN (536 for a SYN without one, RFC 9293 section 3.7.1).
    announced_mss: Option<u16>,
    /// One past the highest sequence number the proxy has sent this endpoint.
    received_end: Option<SeqNumber>,
    /// The last TSval received, echoed as TSecr.
    ts_recent: u32,
    ts_base: u32,
    /// The first sequence number the proxy sent this endpoint (its ISS on this leg).
    received_start: Option<SeqNumber>,
    /// The furthest right edge of its receive window this endpoint has advertised, as an
    /// offset from `received_start`, with acknowledgments of what the proxy sent.
    window_edge: Option<u64>,
    /// The right edge of the proxy's window in its last ACK to this endpoint, and the shift it
    /// was scaled by.
    offered_edge: Option<(SeqNumber, u8)>,
}

impl Peer {
    fn new(leg: Leg, offer: Offer, isn: u32) -> Peer {
        let isn = SeqNumber(isn);
        Peer {
            leg,
            offer,
            isn,
            next: isn + 1,
            sent: SeqCoverage::new(isn),
            fins: Vec::new(),
            announced_mss: None,
            received_end: None,
            ts_recent: 0,
            ts_base: isn.0.rotate_left(16),
            received_start: None,
            window_edge: None,
            offered_edge: None,
        }
    }

    fn direction(&self) -> Direction {
        self.leg.inbound()
    }

    fn tsval(&self, now: u64) -> u32 {
        self.ts_base.wrapping_add(now as u32)
    }

    /// Notes the window a segment this endpoint sends offers, read with `shift` unless it is
    /// a SYN's (RFC 7323 section 2.2).
    fn record_window(&mut self, header: &SegmentHeader, shift: u8) {
        if !header.flags.contains(TcpFlags::ACK) || header.flags.contains(TcpFlags::RST) {
            return;
        }
        let (Some(start), Some(end)) = (self.received_start, self.received_end) else {
            return;
        };
        // Any other acknowledgment is refused, window and all.
        let acked = header.ack.0.wrapping_sub(start.0);
        if acked > end.0.wrapping_sub(start.0) {
            return;
        }
        let shift = if header.flags.contains(TcpFlags::SYN) {
            0
        } else {
            shift
        };
        let edge = u64::from(acked) + (u64::from(header.window) << shift);
        if self.window_edge.is_none_or(|furthest| edge > furthest) {
            self.window_edge = Some(edge);
        }
    }

    /// Notes a segment this endpoint sends.
    fn record(&mut self, header: &SegmentHeader, len: usize) {
        let syn = header.flags.contains(TcpFlags::SYN);
        let data_start = header.seq + usize::from(syn);
        self.sent.insert(data_start, len);
        let mut end = data_start + len;
        if header.flags.contains(TcpFlags::FIN) {
            self.fins.push(end);
            end += 1;
        }
        // A bare ACK occupies no sequence number, wherever it points.
        if end != header.seq && end > self.next {
            self.next = end;
        }
        if syn {
            let mss = header.options.mss.unwrap_or(536);
            self.announced_mss = Some(self.announced_mss.map_or(mss, |m| m.max(mss)));
        }
    }
}

struct Harness<I: Inspector> {
    config: ProxyConfig,
    proxy: TcpProxy<TestBytes, I>,
    now: u64,
    /// The client, then the server.
    peers: [Peer; 2],
    outcome: Outcome,
    /// [`TcpProxy::seq_offset`] each way, once both legs are synchronized: what a hand-over's
    /// translations must carry on.
    offsets: Option<[u32; 2]>,
    /// Owed segments sent after a hand-over, by direction, sequence number and length.
    owed_sent: std::collections::HashSet<(usize, u32, usize)>,
}

/// Wrapping distance from `from` to `to`, when `to` is not before `from`.
fn span(from: SeqNumber, to: SeqNumber) -> Option<usize> {
    let distance = to.0.wrapping_sub(from.0);
    (distance < 1 << 31).then_some(distance as usize)
}

impl<I: Inspector> Harness<I> {
    fn start(setup: Setup, inspector: I) -> Harness<I> {
        let config = setup.proxy_config();
        let now = START_MS;
        let mut client = Peer::new(Leg::Client, setup.client, setup.client_isn);
        let server = Peer::new(Leg::Server, setup.server, setup.server_isn);
        let syn = SegmentHeader {
            src_port: CLIENT_PORT,
            dst_port: SERVER_PORT,
            seq: client.isn,
            ack: SeqNumber(0),
            flags: TcpFlags::SYN,
            window: u16::MAX,
            urgent: 0,
            options: setup.client.options(client.tsval(now)),
            ecn: Ecn::NotEct,
        };
        client.record(&syn, 0);
        let mut peers = [client, server];
        let mut outcome = Outcome::default();
        let proxy = if setup.cookie {
            Self::cookie_handshake(config, inspector, &syn, &mut peers, &mut outcome, now)
        } else {
            TcpProxy::on_client_syn(config, inspector, &syn, now)
        };
        let proxy = proxy.unwrap_or_else(|e| panic!("the client's SYN refused: {e:?}"));
        let mut harness = Harness {
            config,
            proxy,
            now,
            peers,
            outcome,
            offsets: None,
            owed_sent: std::collections::HashSet::new(),
        };
        harness.drain();
        harness
    }

    /// What the worker does under a SYN flood: the SYN answered statelessly, the proxy made
    /// from the client's ACK of the cookie.
    fn cookie_handshake(
        config: ProxyConfig,
        inspector: I,
        syn: &SegmentHeader,
        peers: &mut [Peer; 2],
        outcome: &mut Outcome,
        now: u64,
    ) -> Result<TcpProxy<TestBytes, I>, AcceptError> {
        let jar = CookieJar::new(*b"tollgate-fuzzing");
        let tuple = FourTuple::new(
            SocketAddr::from(([198, 18, 0, 1], CLIENT_PORT)),
            SocketAddr::from(([198, 19, 0, 2], SERVER_PORT)),
        );
        let mss = syn.options.mss.unwrap_or(DEFAULT_PEER_MSS);
        let (cookie, _) = jar.syn_ack_isn(&tuple, syn.seq, mss, now);
        let clock = TimestampClock::new(jar.clock_offset(&tuple));
        let syn_ack = cookie_syn_ack(&config, syn, cookie, clock, now);
        let [client, _] = peers;
        client.received_start = Some(syn_ack.seq);
        client.received_end = Some(syn_ack.seq + 1);
        if let Some((tsval, _)) = syn_ack.options.timestamps {
            client.ts_recent = tsval;
        }
        let mut ack = SegmentHeader {
            seq: client.next,
            ack: syn_ack.seq + 1,
            flags: TcpFlags::ACK,
            options: TcpOptions::default(),
            ..*syn
        };
        if client.offer.timestamps {
            ack.options.timestamps = Some((client.tsval(now), client.ts_recent));
        }
        client.record(&ack, 0);
        let tsecr = ack.options.timestamps.map(|(_, tsecr)| tsecr);
        let shift = syn
            .options
            .window_scale
            .filter(|_| {
                config.window_scaling && config.timestamps && syn.options.timestamps.is_some()
            })
            .unwrap_or(0);
        client.record_window(&ack, shift);
        let params = jar
            .validate(&tuple, ack.ack, ack.seq, tsecr, now)
            .expect("the cookie just made is valid");
        // A cookie remembers the MSS as a table entry, at least 536 (what every IPv4 host must
        // take, RFC 9293 section 3.7.1), whatever the client announced: as Linux does.
        client.announced_mss = client.announced_mss.max(Some(params.mss));
        outcome.cookie = true;
        let payload = TestBytes::from(&[][..]);
        TcpProxy::on_client_cookie_ack(config, inspector, &ack, payload, params, clock, now)
    }

    fn run(mut self, mut cursor: Cursor<'_>) -> Outcome {
        while !cursor.is_empty() {
            let code = cursor.u8();
            match code & 7 {
                op::CLIENT_SEGMENT | op::SERVER_SEGMENT => {
                    let segment = SegmentOp::decode(&mut cursor);
                    let from = usize::from(code & 7 == op::SERVER_SEGMENT);
                    let (header, payload) = self.build(from, &segment);
                    self.deliver(from, &header, payload);
                }
                op::ADVANCE => {
                    let scale = [1, 10, 100, 1_000][usize::from((code >> 3) & 3)];
                    let until = self.now + (u64::from(cursor.u8()) + 1) * scale;
                    if code & 0x20 == 0 {
                        self.run_timers_until(until);
                    }
                    // Late: a worker busy elsewhere comes to the timers only now.
                    self.now = until;
                    self.run_timers();
                }
                op::TIMERS => {
                    for _ in 0..=code >> 3 {
                        let Some(at) = self.proxy.poll_at() else {
                            break;
                        };
                        self.now = self.now.max(at);
                        self.run_timers();
                    }
                }
                op::PASS_THROUGH => {
                    if let Ok(handover) = self.proxy.convert_to_passthrough(self.now) {
                        self.check_handover(handover);
                    }
                    self.drain();
                }
                op::ABORT => {
                    self.proxy.abort(self.now);
                    self.drain();
                }
                op::ACK_ALL => {
                    for from in 0..2 {
                        let (header, payload) = self.build(from, &SegmentOp::ack());
                        self.deliver(from, &header, payload);
                    }
                }
                _ => {
                    let from = usize::from(code & 8 != 0);
                    let raw = cursor.bytes(20);
                    let options_len = raw
                        .get(12)
                        .map_or(0, |offset| usize::from(offset >> 4) * 4)
                        .saturating_sub(20);
                    let mut bytes = raw.to_vec();
                    bytes.extend_from_slice(cursor.bytes(options_len));
                    let len = len_of(cursor.u8());
                    if let Some((header, payload)) = self.build_raw(from, &bytes, len) {
                        self.deliver(from, &header, payload);
                    }
                }
            }
        }
        self.outcome.final_state = Some(self.proxy.state());
        self.outcome
    }

    /// Runs the timers due now, again as long as some are, as the worker's timer wheel does.
    fn run_timers(&mut self) {
        let mut rounds = 0;
        while self.proxy.poll_at().is_some_and(|at| at <= self.now) {
            rounds += 1;
            assert!(
                rounds < MAX_TIMER_ROUNDS,
                "timers stay due however often they run at {}: a worker would spin: {:?}",
                self.now,
                self.proxy.stats()
            );
            self.proxy.on_timer(self.now);
            self.drain();
        }
    }

    /// Time passes to `until`, each timer running when it is due, as on a punctual worker.
    fn run_timers_until(&mut self, until: u64) {
        for _ in 0..MAX_TIMER_ROUNDS {
            match self.proxy.poll_at() {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.run_timers();
                }
                _ => return,
            }
        }
    }

    /// The header and payload of `segment` sent by `from`.
    fn build(&self, from: usize, segment: &SegmentOp) -> (SegmentHeader, TestBytes) {
        let peer = &self.peers[from];
        let syn = segment.flags.contains(TcpFlags::SYN);
        let seq = match segment.seq {
            Seq::Next if syn => peer.isn,
            Seq::Next => peer.next,
            Seq::Back(d) => peer.next - usize::from(d),
            Seq::Ahead(d) => peer.next + usize::from(d),
            Seq::Raw(x) => SeqNumber(x),
        };
        let all = peer.received_end.unwrap_or(SeqNumber(0));
        let ack = match segment.ack {
            Ack::All => all,
            Ack::Back(d) => all - usize::from(d),
            Ack::Ahead(d) => all + usize::from(d),
            Ack::Raw(x) => SeqNumber(x),
        };
        let tsval = if segment.options & opt::STALE_TSVAL != 0 {
            peer.tsval(self.now).wrapping_sub(0x4000_0000)
        } else {
            peer.tsval(self.now)
        };
        let tsecr = if segment.options & opt::ZERO_TSECR != 0 {
            0
        } else {
            peer.ts_recent
        };
        let mut options = if syn && segment.options & opt::BARE_SYN != 0 {
            TcpOptions::default()
        } else if syn {
            peer.offer.options(tsval)
        } else {
            TcpOptions::default()
        };
        if peer.offer.timestamps && segment.options & opt::NO_TIMESTAMPS == 0 {
            options.timestamps = Some((tsval, tsecr));
        }
        if segment.options & opt::SACK != 0 {
            for &(offset, len) in &segment.sack {
                let left = ack + usize::from(offset);
                options.sack.push(left, left + usize::from(len));
            }
        }
        let header = SegmentHeader {
            src_port: if from == 0 { CLIENT_PORT } else { SERVER_PORT },
            dst_port: if from == 0 { SERVER_PORT } else { CLIENT_PORT },
            seq,
            ack,
            flags: segment.flags,
            window: window_of(segment.window),
            urgent: u16::from(segment.options & opt::URGENT != 0),
            options,
            ecn: Ecn::NotEct,
        };
        let payload = self.payload(from, &header, len_of(segment.len));
        (header, payload)
    }

    fn build_raw(
        &self,
        from: usize,
        bytes: &[u8],
        len: usize,
    ) -> Option<(SegmentHeader, TestBytes)> {
        let segment = tollgate_core::wire::TcpSegment::new_checked(bytes).ok()?;
        let mut header = SegmentHeader::parse(&segment).ok()?;
        let peer = &self.peers[from];
        header.src_port = if from == 0 { CLIENT_PORT } else { SERVER_PORT };
        header.dst_port = if from == 0 { SERVER_PORT } else { CLIENT_PORT };
        header.seq = SeqNumber(peer.next.0.wrapping_add(header.seq.0));
        let all = peer.received_end.unwrap_or(SeqNumber(0));
        header.ack = SeqNumber(all.0.wrapping_add(header.ack.0));
        let payload = self.payload(from, &header, len);
        Some((header, payload))
    }

    fn payload(&self, from: usize, header: &SegmentHeader, len: usize) -> TestBytes {
        let start = header.seq + usize::from(header.flags.contains(TcpFlags::SYN));
        TestBytes::from(stream_bytes(self.peers[from].direction(), start, len))
    }

    fn deliver(&mut self, from: usize, header: &SegmentHeader, payload: TestBytes) {
        let len = payload.len();
        let shift = self
            .proxy
            .leg(self.peers[from].leg)
            .map_or(0, |endpoint| endpoint.negotiated().snd_wscale);
        self.peers[from].record_window(header, shift);
        self.peers[from].record(header, len);
        let over = self.is_over();
        if self.proxy.state() == ProxyState::PassThrough {
            // What the worker does with a handed-over flow's segments: the proxy sees them
            // while it owes either side bytes.
            self.proxy
                .on_passthrough(self.peers[from].leg, header, self.now);
        }
        let outcome = self
            .proxy
            .on_segment(self.peers[from].leg, header, payload, self.now);
        if tracing() {
            eprintln!(
                "{:>8} {:?} -> proxy: {header:?} +{len}: {outcome:?}",
                self.now, self.peers[from].leg
            );
        }
        if over {
            assert_eq!(
                outcome,
                SegmentOutcome::Rejected(Reject::Closed),
                "a finished flow took a segment"
            );
        }
        self.drain();
    }

    fn is_over(&self) -> bool {
        matches!(
            self.proxy.state(),
            ProxyState::Closed | ProxyState::PassThrough
        )
    }

    /// Collects everything the proxy has to send and say, checking it all.
    fn drain(&mut self) {
        let synchronized = |leg| {
            self.proxy
                .leg(leg)
                .is_some_and(|endpoint| endpoint.state().is_synchronized())
        };
        if synchronized(Leg::Client) && synchronized(Leg::Server) {
            self.offsets = Some([
                self.proxy.seq_offset(Direction::ClientToServer),
                self.proxy.seq_offset(Direction::ServerToClient),
            ]);
        }
        let mut count = 0;
        while let Some((leg, transmit)) = self.proxy.poll_transmit(self.now) {
            count += 1;
            assert!(
                count < MAX_TRANSMITS_PER_STEP,
                "poll_transmit does not run dry"
            );
            let offset = self.proxy.seq_offset(leg.other().inbound());
            let owed = self.proxy.state() == ProxyState::PassThrough;
            self.check_transmit(leg, &transmit, offset, owed);
        }
        while let Some(event) = self.proxy.poll_event() {
            if tracing() {
                eprintln!("{:>8} event {event:?}", self.now);
            }
            self.outcome.events.push(event);
            if event == ProxyEvent::PassThrough {
                if let Some(handover) = self.proxy.take_handover() {
                    self.check_handover(handover);
                }
            }
        }
        self.check_bounds();
    }

    fn check_handover(&mut self, handover: Handover) {
        self.outcome.handed_over = true;
        let [c2s, s2c] = [&handover.client_to_server, &handover.server_to_client];
        assert_eq!(
            (c2s.ack_delta, s2c.ack_delta),
            (s2c.seq_delta.wrapping_neg(), c2s.seq_delta.wrapping_neg()),
            "acknowledgments do not move with the other way's sequence numbers: {handover:?}"
        );
        if let Some(offsets) = self.offsets {
            assert_eq!(
                [c2s.seq_delta, s2c.seq_delta],
                offsets,
                "pass-through numbers bytes otherwise than the proxy did"
            );
        }
    }

    /// Checks a segment the proxy sends on `leg`, whose sequence numbers are the other side's
    /// plus `offset`. What a hand-over left owed (`owed`) may hold data from above a hole, so
    /// relayed bytes need not follow all the others there.
    fn check_transmit(
        &mut self,
        leg: Leg,
        transmit: &Transmit<TestBytes>,
        offset: u32,
        owed: bool,
    ) {
        let header = &transmit.header;
        if tracing() {
            let len = transmit.payload.as_ref().map_or(0, Payload::len);
            let what = if owed { "owed" } else { "proxy" };
            eprintln!("{:>8} {what} -> {leg:?}: {header:?} +{len}", self.now);
        }
        let to = leg.index();
        let from = 1 - to;
        let direction = leg.other().inbound();

        let expected_ports = if leg == Leg::Client {
            (SERVER_PORT, CLIENT_PORT)
        } else {
            (CLIENT_PORT, SERVER_PORT)
        };
        assert_eq!(
            (header.src_port, header.dst_port),
            expected_ports,
            "ports of a segment on the {leg:?} leg"
        );
        check_header_round_trip(header);

        let syn = header.flags.contains(TcpFlags::SYN);
        let payload = transmit.payload.as_ref().map_or(&[][..], Payload::bytes);
        let data_start = header.seq + usize::from(syn);
        // The same bytes in the sender's numbering.
        let source_start = SeqNumber(data_start.0.wrapping_sub(offset));
        for (i, &byte) in payload.iter().enumerate() {
            let expected = stream_byte(direction, source_start + i);
            assert_eq!(
                byte,
                expected,
                "byte {i} of {} relayed {direction:?} at {:?} (the sender's {:?}) differs \
                 from what was sent",
                payload.len(),
                data_start,
                source_start
            );
        }
        let sender = &self.peers[from];
        if !payload.is_empty() {
            let source_leg = self.proxy.leg(leg.other());
            let first = source_leg
                .filter(|_| !owed)
                .map(|endpoint| endpoint.irs() + 1);
            match first {
                // In order: all the sender's bytes from its first one on were sent.
                Some(first) => {
                    let through = span(first, source_start + payload.len());
                    assert!(
                        through.is_some_and(|len| sender.sent.covers(first, len)),
                        "{} bytes relayed {direction:?} at the sender's {source_start:?} \
                         without everything from {first:?} having been sent",
                        payload.len()
                    );
                }
                None => assert!(
                    sender.sent.covers(source_start, payload.len()),
                    "{} bytes relayed {direction:?} at the sender's {source_start:?} were \
                     never sent",
                    payload.len()
                ),
            }
            if !owed {
                let mss = self.peers[to].announced_mss.unwrap_or(536).max(88);
                assert!(
                    payload.len() <= usize::from(mss),
                    "{} bytes in one segment to a receiver whose MSS is {mss}",
                    payload.len()
                );
            }
            // What a hand-over left owed is sent again until acknowledged: counted once.
            if !owed
                || self
                    .owed_sent
                    .insert((direction.index(), header.seq.0, payload.len()))
            {
                self.outcome.relayed[direction.index()] += payload.len();
            }
        }
        if header.flags.contains(TcpFlags::FIN) && !header.flags.contains(TcpFlags::RST) {
            let fin_at = source_start + payload.len();
            assert!(
                sender.fins.contains(&fin_at),
                "a FIN relayed {direction:?} at the sender's {fin_at:?}, where it sent none \
                 (its FINs: {:?})",
                sender.fins
            );
        }
        let receiver = &self.peers[to];
        if header.flags.contains(TcpFlags::ACK) && !header.flags.contains(TcpFlags::RST) && !owed {
            let irs = self
                .proxy
                .leg(leg)
                .filter(|endpoint| endpoint.state() != State::SynSent)
                .map(|endpoint| endpoint.irs());
            if let Some(irs) = irs {
                let first = irs + 1;
                let sent_up_to =
                    |end| span(first, end).is_some_and(|len| receiver.sent.covers(first, len));
                let ack = header.ack;
                // The acknowledgment of a FIN is one past the bytes before it.
                let fin_acked = receiver.fins.contains(&(ack - 1)) && sent_up_to(ack - 1);
                assert!(
                    sent_up_to(ack) || fin_acked,
                    "the {leg:?} leg acknowledges {ack:?} (its stream starts at {first:?}), \
                     beyond what its peer sent"
                );
            }
        }

        if !owed {
            self.check_windows(leg, header, payload.len());
        }

        let receiver = &mut self.peers[to];
        let end = data_start + payload.len() + usize::from(header.flags.contains(TcpFlags::FIN));
        if receiver.received_end.is_none_or(|seen| end > seen) {
            receiver.received_end = Some(end);
        }
        if receiver.received_start.is_none() {
            receiver.received_start = Some(header.seq);
        }
        if let Some((tsval, _)) = header.options.timestamps {
            receiver.ts_recent = tsval;
        }
    }

    /// The proxy sends within the window its receiver offered, and its own window's right
    /// edge does not move left by a unit or more (RFC 9293 section 3.8.6.2.2; less than a unit
    /// is the rounding `Endpoint` allows itself rather than let the edge creep right).
    fn check_windows(&mut self, leg: Leg, header: &SegmentHeader, len: usize) {
        if header.flags.intersects(TcpFlags::RST | TcpFlags::SYN) {
            return;
        }
        let receiver = &self.peers[leg.index()];
        if let (true, Some(edge), Some(start)) =
            (len > 0, receiver.window_edge, receiver.received_start)
        {
            let data_end = u64::from(header.seq.0.wrapping_sub(start.0)) + len as u64;
            // A zero-window probe is one octet beyond the window (RFC 9293 section 3.8.6.1).
            assert!(
                data_end <= edge + 1,
                "data up to {:?} sent on the {leg:?} leg, beyond the furthest window edge its \
                 receiver offered, {:?}",
                header.seq + len,
                start + edge as usize
            );
        }
        if !header.flags.contains(TcpFlags::ACK) {
            return;
        }
        let Some(shift) = self
            .proxy
            .leg(leg)
            .map(|endpoint| endpoint.negotiated().rcv_wscale)
        else {
            return;
        };
        let edge = header.ack + (usize::from(header.window) << shift);
        let receiver = &mut self.peers[leg.index()];
        if let Some((before, before_shift)) = receiver.offered_edge {
            if before_shift == shift && before > edge {
                let moved = before.0.wrapping_sub(edge.0) as usize;
                assert!(
                    moved < 1 << shift,
                    "the {leg:?} leg's window edge moved left by {moved} bytes, from {before:?} \
                     to {edge:?} (a unit is {} bytes)",
                    1 << shift
                );
            }
        }
        receiver.offered_edge = Some((edge, shift));
    }

    fn check_bounds(&self) {
        if self.is_over() {
            if !self.proxy.owes() {
                assert_eq!(self.proxy.poll_at(), None, "a finished flow wants a timer");
            }
            return;
        }
        for direction in [Direction::ClientToServer, Direction::ServerToClient] {
            let buffered = self.proxy.buffered(direction);
            assert!(
                buffered <= self.config.buffer,
                "{buffered} bytes buffered {direction:?}, over the bound of {}: {:?}",
                self.config.buffer,
                self.proxy.stats()
            );
        }
        let limits = self.config.endpoint.reassembly;
        for leg in [Leg::Client, Leg::Server] {
            if let Some(endpoint) = self.proxy.leg(leg) {
                let (segments, bytes) = endpoint
                    .held_data()
                    .fold((0, 0), |(n, b), (_, p)| (n + 1, b + p.len()));
                assert!(
                    segments <= limits.max_segments && bytes <= limits.max_bytes,
                    "the {leg:?} leg holds {segments} segments, {bytes} bytes out of order, \
                     over {limits:?}"
                );
            }
        }
    }
}

/// Every header the engine sends must survive being written and read back; only SACK blocks
/// that do not fit beside the other options may be left off.
pub(crate) fn check_header_round_trip(header: &SegmentHeader) {
    let mut bytes = [0u8; 60];
    let len = header
        .emit(&mut bytes)
        .unwrap_or_else(|e| panic!("an emitted header does not fit a TCP header: {e}"));
    let segment = tollgate_core::wire::TcpSegment::new_checked(&bytes[..len])
        .unwrap_or_else(|e| panic!("an emitted header does not parse: {e:?}: {header:?}"));
    let parsed = SegmentHeader::parse(&segment)
        .unwrap_or_else(|e| panic!("an emitted header's options do not parse: {e:?}"));
    let mut expected = *header;
    expected
        .options
        .sack
        .truncate(header.options.sack_blocks_that_fit());
    assert_eq!(parsed, expected, "an emitted header reads back differently");
}
