//! `pcap-gen`: writes capture files of valid Ethernet frames for Pktgen-DPDK's `-s P:file`
//! replay, for DPDK's `net_pcap` driver and for tests: bypass-style TCP data, UDP, cTCP flows
//! (IPsec over TCP to port 10000), a SYN flood, or a mix, over IPv4 or IPv6, with the flow
//! count, frame count, frame size, MACs and address ranges chosen on the command line.
//!
//! Every flow is a conversation between a client (the inside, `--src`) and a server (the
//! outside, `--dst`); `--direction` keeps the frames the inside port receives (the clients'),
//! the ones the outside port receives (the servers'), or both. Frames are built by tollgate's
//! own `synth` module and the cTCP datagrams by the emulator's `ipsec_over_tcp` module, so the
//! checksums are right and the shapes are the ones the rest of the project tests against.

#![forbid(unsafe_code)]

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use clap::{Parser, ValueEnum};
use tollgate_core::pcap::PcapWriter;
use tollgate_core::synth::{self, Addressing, TcpHeader};
use tollgate_core::wire::ethernet::parse_mac;
use tollgate_core::wire::tcp::flags;
use tollgate_perf::ipsec_over_tcp::{self as ipsec, IkeHeader, Mode, Outgoing};

/// Ethernet's shortest frame without its FCS; shorter frames are padded to it.
const MIN_FRAME: usize = 60;
const FCS_LEN: usize = 4;
/// The largest standard frame with its FCS.
const MAX_SIZE: u16 = 1518;
const MIN_SIZE: u16 = 64;
/// The first record's timestamp (2024-01-01T00:00:00Z); records follow 1 µs apart.
const FIRST_TIMESTAMP_SECS: u64 = 1_704_067_200;
const CTCP_PORT: u16 = 10_000;
const TCP_PORT: u16 = 443;
/// IPsec NAT traversal's port: a UDP flow an IPsec-aware middlebox sees a lot of.
const UDP_PORT: u16 = 4500;

const LONG_ABOUT: &str = "\
Writes a classic libpcap file (link type Ethernet, microsecond timestamps, records 1 us apart)
of valid frames: IPv4 header checksums and TCP/UDP checksums correct, frames shorter than 60
bytes padded to Ethernet's minimum. For Pktgen-DPDK's replay (pktgen ... -s 0:FILE), for
tollgate on DPDK's net_pcap driver (--inside net_pcap0,rx_pcap=FILE) and for tcpdump.

KIND:
  tcp   data segments (ACK+PSH, a payload filling the frame) of established TCP flows to port
        443, as a bypass rule forwards them: no handshake, picked up mid-stream.
  udp   UDP datagrams to port 4500.
  ctcp  Cisco IPsec over TCP (cTCP) flows to port 10000: each a SYN, SYN-ACK and ACK, then
        segments that each carry one datagram followed by cTCP's 16-byte trailer: the first
        datagram each way IKE (IKEv1 aggressive mode in a UDP 500->500 packet), the rest raw
        ESP (one SPI each way, sequence numbers from 1). The datagrams are the ctcp-peer
        emulator's, and tollgate's detection recognises the flows as ctcp-ike.
  syn   a SYN flood: one SYN (no options, no payload) per frame, to port 443, from a
        distinct source address and port per flow; --flows defaults to --frames, so every
        SYN has its own source.
  mix   flows of tcp, udp and ctcp in turn (flow 0 tcp, 1 udp, 2 ctcp, 3 tcp, ...).

Flows: flow i goes from client address i mod S of --src (S: the range's usable addresses:
not the network or broadcast address of an IPv4 prefix shorter than /31, not the subnet
anycast address of an IPv6 prefix shorter than /127) and port --src-port + i div S, to
server address i mod D of --dst on the kind's port (--dst-port overrides it). The frames
go round-robin over the flows: frame j belongs to flow j mod --flows, and each flow's frames
follow its conversation in order (for ctcp: all the flows' SYNs first, then their ACKs, ...).

Direction: inside keeps the frames the inside port receives (client to server: source MAC
--client-mac, destination MAC --server-mac), outside the ones the outside port receives
(server to client: SYN-ACKs and the servers' data), both the whole conversation. Sequence
and acknowledgement numbers follow the whole conversation either way. A SYN flood goes one
way only (inside).

Size: --size is the frame's size on the wire with its 4-byte FCS, as RFC 2544 and Pktgen
count it (64..1518); the records in the file are 4 bytes shorter (the NIC adds the FCS).
Data frames (tcp, udp, cTCP datagrams) are filled to it. Frames never get shorter than
their headers: an IPv6 TCP frame is at least 78 bytes with its FCS, a cTCP IKE segment 110
(IPv4) or 130 (IPv6), a cTCP ESP segment 90 or 110; SYNs, SYN-ACKs and ACKs are always the
smallest they can be. The summary line gives the sizes written.

Examples:
  pcap-gen ctcp --flows 1000 --frames 100000 --size 512 --out ctcp-512.pcap
  pcap-gen mix --ipv6 --flows 65536 --frames 1000000 --out mix6.pcap
  pcap-gen syn --frames 100000 --src 198.18.0.0/15 --dst 198.19.255.1/32 --out syn.pcap
  pcap-gen tcp --direction outside --size 1518 --out tcp-from-servers.pcap";

#[derive(Parser, Debug)]
#[command(name = "pcap-gen", version, about = "Writes pcap files of valid frames for Pktgen-DPDK replay and tests", long_about = LONG_ABOUT)]
struct Cli {
    /// What to generate.
    #[arg(value_enum)]
    kind: Kind,
    /// The capture file to write (replaced if it exists).
    #[arg(short, long, value_name = "FILE")]
    out: PathBuf,
    /// IPv6 (default IPv4): changes the default address ranges.
    #[arg(short = '6', long)]
    ipv6: bool,
    /// Distinct flows (5-tuples). [default: 16; for syn, --frames]
    #[arg(short, long, value_name = "N")]
    flows: Option<u32>,
    /// Frames to write in all.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1024)]
    frames: u64,
    /// Frame size on the wire, FCS included (64..1518); data frames are filled to it. Not for
    /// syn. [default: 64]
    #[arg(short, long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(i64::from(MIN_SIZE)..=i64::from(MAX_SIZE)))]
    size: Option<u16>,
    /// Client addresses (inside), a prefix or one address. [default: 198.18.0.0/16; IPv6:
    /// 2001:2:0:1::/64]
    #[arg(long, value_name = "PREFIX")]
    src: Option<Prefix>,
    /// Server addresses (outside). [default: 198.19.0.0/16; IPv6: 2001:2:0:2::/64]
    #[arg(long, value_name = "PREFIX")]
    dst: Option<Prefix>,
    /// The first client port; flows past the --src range's size count up from it.
    #[arg(long, value_name = "PORT", default_value_t = 1024)]
    src_port: u16,
    /// The server port of every flow. [default: tcp 443, udp 4500, ctcp 10000, syn 443]
    #[arg(long, value_name = "PORT")]
    dst_port: Option<u16>,
    /// The clients' MAC address.
    #[arg(long, value_name = "MAC", default_value = "02:00:00:00:00:01")]
    client_mac: Mac,
    /// The servers' MAC address.
    #[arg(long, value_name = "MAC", default_value = "02:00:00:00:00:02")]
    server_mac: Mac,
    /// An 802.1Q tag with this VLAN id on every frame (none by default).
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u16).range(1..=4094))]
    vlan: Option<u16>,
    /// Which frames of each conversation to keep, as the port that receives them.
    #[arg(short, long, value_enum, default_value_t = Direction::Inside)]
    direction: Direction,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    Tcp,
    Udp,
    Ctcp,
    Syn,
    Mix,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Direction {
    /// Client to server: what tollgate's inside port receives.
    Inside,
    /// Server to client: what its outside port receives.
    Outside,
    /// Both, in conversation order.
    Both,
}

impl Direction {
    fn keeps(self, side: Side) -> bool {
        match self {
            Direction::Inside => side == Side::Client,
            Direction::Outside => side == Side::Server,
            Direction::Both => true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mac([u8; 6]);

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Mac, String> {
        parse_mac(s).map(Mac)
    }
}

/// An address range: a prefix, whose usable host addresses flows take in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Prefix {
    network: IpAddr,
    len: u8,
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Prefix, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not an address or prefix like 198.18.0.0/16"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("'{s}': the prefix length must be 0..{max}"))?,
        };
        let network = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(Prefix { network, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

impl Prefix {
    /// Whether the first address is left out: an IPv4 subnet's network address (its
    /// broadcast address goes too), an IPv6 subnet's subnet-router anycast address (RFC 4291
    /// section 2.6.1). Point-to-point prefixes (/31, /127) and single addresses keep all.
    fn skips_first(&self) -> bool {
        match self.network {
            IpAddr::V4(_) => self.len < 31,
            IpAddr::V6(_) => self.len < 127,
        }
    }

    /// How many addresses flows take from the prefix (at most 2^32).
    fn hosts(&self) -> u64 {
        match self.network {
            IpAddr::V4(_) => {
                let all = 1u64 << (32 - u32::from(self.len));
                if self.skips_first() {
                    all - 2
                } else {
                    all
                }
            }
            IpAddr::V6(_) => match 128 - u32::from(self.len) {
                bits if bits >= 32 => 1 << 32,
                bits => (1u64 << bits) - u64::from(self.skips_first()),
            },
        }
    }

    /// Address `k` (below [`Prefix::hosts`]).
    fn host(&self, k: u64) -> IpAddr {
        let offset = u64::from(self.skips_first()) + k;
        match self.network {
            IpAddr::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n) + offset as u32)),
            IpAddr::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n) + u128::from(offset))),
        }
    }
}

/// Which end of a flow sends a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// What one flow carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlowKind {
    Tcp,
    Udp,
    Ctcp,
    Syn,
}

impl FlowKind {
    fn default_port(self) -> u16 {
        match self {
            FlowKind::Tcp | FlowKind::Syn => TCP_PORT,
            FlowKind::Udp => UDP_PORT,
            FlowKind::Ctcp => CTCP_PORT,
        }
    }
}

/// Everything a run needs, checked.
#[derive(Clone, Debug)]
struct Plan {
    kind: Kind,
    flows: u32,
    frames: u64,
    /// Frame length without the FCS that data frames are filled to.
    frame_len: usize,
    src: Prefix,
    dst: Prefix,
    src_port: u16,
    dst_port: Option<u16>,
    client_mac: [u8; 6],
    server_mac: [u8; 6],
    vlan: Option<u16>,
    direction: Direction,
}

impl Plan {
    fn from_cli(cli: &Cli) -> anyhow::Result<Plan> {
        let (default_src, default_dst) = if cli.ipv6 {
            ("2001:2:0:1::/64", "2001:2:0:2::/64")
        } else {
            ("198.18.0.0/16", "198.19.0.0/16")
        };
        let src = cli
            .src
            .unwrap_or_else(|| default_src.parse().expect("a valid prefix"));
        let dst = cli
            .dst
            .unwrap_or_else(|| default_dst.parse().expect("a valid prefix"));
        for (name, p) in [("--src", src), ("--dst", dst)] {
            ensure!(
                p.network.is_ipv6() == cli.ipv6,
                "{name} {p} is {}, the frames {}",
                if p.network.is_ipv6() { "IPv6" } else { "IPv4" },
                if cli.ipv6 {
                    "IPv6 (--ipv6): give an IPv6 prefix"
                } else {
                    "IPv4: add --ipv6 for IPv6 frames"
                }
            );
        }
        if cli.kind == Kind::Syn {
            ensure!(
                cli.size.is_none(),
                "--size does not apply to syn: a SYN frame is always the smallest it can be"
            );
            ensure!(
                cli.direction == Direction::Inside,
                "a SYN flood goes one way (--direction inside); replay the file on the port it should arrive on"
            );
        }
        ensure!(cli.frames > 0, "--frames must be at least 1");
        let flows = match (cli.flows, cli.kind) {
            (Some(f), _) => f,
            (None, Kind::Syn) => u32::try_from(cli.frames).map_err(|_| {
                anyhow::anyhow!(
                    "--frames {} is more SYNs than flows can be told apart; give --flows",
                    cli.frames
                )
            })?,
            (None, _) => 16,
        };
        ensure!(flows > 0, "--flows must be at least 1");
        let ports = u64::from(u16::MAX - cli.src_port) + 1;
        let max_flows = src.hosts().saturating_mul(ports);
        ensure!(
            u64::from(flows) <= max_flows,
            "--flows {flows} is more than --src {src} ({} addresses) and client ports {}..65535 can tell apart ({max_flows}): widen --src or lower --src-port",
            src.hosts(),
            cli.src_port
        );
        let size = usize::from(cli.size.unwrap_or(MIN_SIZE));
        Ok(Plan {
            kind: cli.kind,
            flows,
            frames: cli.frames,
            frame_len: (size - FCS_LEN).max(MIN_FRAME),
            src,
            dst,
            src_port: cli.src_port,
            dst_port: cli.dst_port,
            client_mac: cli.client_mac.0,
            server_mac: cli.server_mac.0,
            vlan: cli.vlan,
            direction: cli.direction,
        })
    }

    fn flow_kind(&self, i: u32) -> FlowKind {
        match self.kind {
            Kind::Tcp => FlowKind::Tcp,
            Kind::Udp => FlowKind::Udp,
            Kind::Ctcp => FlowKind::Ctcp,
            Kind::Syn => FlowKind::Syn,
            Kind::Mix => [FlowKind::Tcp, FlowKind::Udp, FlowKind::Ctcp][(i % 3) as usize],
        }
    }

    /// Flow `i`, client to server.
    fn addressing(&self, i: u32, kind: FlowKind) -> Addressing {
        let i = u64::from(i);
        let client = self.src.host(i % self.src.hosts());
        let client_port = u64::from(self.src_port) + i / self.src.hosts();
        let server = self.dst.host(i % self.dst.hosts());
        let server_port = self.dst_port.unwrap_or(kind.default_port());
        Addressing {
            src_mac: self.client_mac,
            dst_mac: self.server_mac,
            vlan: self.vlan,
            src: SocketAddr::new(client, client_port as u16),
            dst: SocketAddr::new(server, server_port),
        }
    }

    /// Bytes of headers before a transport payload (Ethernet, VLAN tag, IP, transport).
    fn headers_len(&self, transport: usize) -> usize {
        let ip = if self.src.network.is_ipv6() { 40 } else { 20 };
        14 + if self.vlan.is_some() { 4 } else { 0 } + ip + transport
    }
}

/// splitmix64: deterministic per-flow numbers (initial sequence numbers), so the same options
/// always write the same file.
fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One flow's conversation, produced a frame at a time.
struct Flow {
    kind: FlowKind,
    index: u32,
    /// Client to server.
    to_server: Addressing,
    /// The next sequence number each side sends.
    client_seq: u32,
    server_seq: u32,
    /// Frames of the conversation produced so far (kept or not).
    step: u64,
    /// Datagrams (or payloads) each side has sent.
    client_sent: u32,
    server_sent: u32,
    /// Payload bytes of a tcp or udp frame; what a cTCP datagram segment's payload aims at.
    payload_len: usize,
}

impl Flow {
    fn new(plan: &Plan, index: u32) -> Flow {
        let kind = plan.flow_kind(index);
        let transport = if kind == FlowKind::Udp { 8 } else { 20 };
        let seed = mix64(u64::from(index));
        Flow {
            kind,
            index,
            to_server: plan.addressing(index, kind),
            client_seq: seed as u32,
            server_seq: (seed >> 32) as u32,
            step: 0,
            client_sent: 0,
            server_sent: 0,
            payload_len: plan.frame_len.saturating_sub(plan.headers_len(transport)),
        }
    }

    /// The next frame of the conversation that `direction` keeps.
    fn next_kept(&mut self, direction: Direction) -> Vec<u8> {
        loop {
            let (side, frame) = self.next();
            if direction.keeps(side) {
                return frame;
            }
        }
    }

    /// The conversation's next frame, whoever sends it.
    fn next(&mut self) -> (Side, Vec<u8>) {
        let step = self.step;
        self.step += 1;
        // Client first, then they take turns.
        let alternate = |s: u64| match s % 2 {
            0 => Side::Client,
            _ => Side::Server,
        };
        match self.kind {
            FlowKind::Syn => (Side::Client, self.syn()),
            FlowKind::Tcp => {
                let side = alternate(step);
                let payload = self.payload(side);
                (side, self.segment(side, flags::ACK | flags::PSH, &payload))
            }
            FlowKind::Udp => {
                let side = alternate(step);
                let payload = self.payload(side);
                let a = self.addressing(side);
                (side, synth::udp(&a, &payload))
            }
            FlowKind::Ctcp => match step {
                0 => (Side::Client, self.syn()),
                1 => {
                    let f = self.tcp(
                        Side::Server,
                        TcpHeader {
                            seq: self.server_seq,
                            ack: self.client_seq,
                            flags: flags::SYN | flags::ACK,
                            window: 0,
                        },
                        b"",
                    );
                    self.server_seq = self.server_seq.wrapping_add(1);
                    (Side::Server, f)
                }
                2 => (Side::Client, self.segment(Side::Client, flags::ACK, b"")),
                _ => {
                    let side = alternate(step - 3);
                    let payload = self.ctcp_datagram(side);
                    (side, self.segment(side, flags::ACK | flags::PSH, &payload))
                }
            },
        }
    }

    fn addressing(&self, side: Side) -> Addressing {
        match side {
            Side::Client => self.to_server,
            Side::Server => self.to_server.reversed(),
        }
    }

    /// The client's SYN. A flood's flow sends it again with the same sequence number (a
    /// retransmission); a cTCP flow moves on past it.
    fn syn(&mut self) -> Vec<u8> {
        let h = TcpHeader {
            seq: self.client_seq,
            ack: 0,
            flags: flags::SYN,
            window: 0,
        };
        if self.kind != FlowKind::Syn {
            self.client_seq = self.client_seq.wrapping_add(1);
        }
        self.tcp(Side::Client, h, b"")
    }

    fn tcp(&self, side: Side, h: TcpHeader, payload: &[u8]) -> Vec<u8> {
        synth::tcp(&self.addressing(side), h, payload)
    }

    /// A segment of the established connection from `side`, its numbers moved on.
    fn segment(&mut self, side: Side, flags: u8, payload: &[u8]) -> Vec<u8> {
        let (seq, ack) = match side {
            Side::Client => (self.client_seq, self.server_seq),
            Side::Server => (self.server_seq, self.client_seq),
        };
        let f = self.tcp(
            side,
            TcpHeader {
                seq,
                ack,
                flags,
                window: 0,
            },
            payload,
        );
        let next = seq.wrapping_add(payload.len() as u32);
        match side {
            Side::Client => self.client_seq = next,
            Side::Server => self.server_seq = next,
        }
        f
    }

    /// A tcp or udp payload: the emulator's test pattern, different for every payload.
    fn payload(&mut self, side: Side) -> Vec<u8> {
        let n = self.count(side);
        let mut p = vec![0u8; self.payload_len];
        ipsec::fill_pattern(self.index.wrapping_mul(0x9e37).wrapping_add(n), &mut p);
        p
    }

    /// Counts one more datagram from `side`; returns how many it had sent before.
    fn count(&mut self, side: Side) -> u32 {
        let sent = match side {
            Side::Client => &mut self.client_sent,
            Side::Server => &mut self.server_sent,
        };
        let n = *sent;
        *sent = sent.wrapping_add(1);
        n
    }

    /// The TCP payload of `side`'s next cTCP datagram: IKE first, ESP after, each followed by
    /// the trailer; as long as the frame size allows, never shorter than the datagram needs.
    fn ctcp_datagram(&mut self, side: Side) -> Vec<u8> {
        let n = self.count(side);
        let index = u64::from(self.index);
        if n == 0 {
            // IKEv1 aggressive mode, as Cisco's VPN Client opens a cTCP tunnel: the client's
            // first message has no responder SPI yet.
            let header = IkeHeader {
                initiator_spi: 0x5a11_9c03_0000_0000 | index,
                responder_spi: match side {
                    Side::Client => 0,
                    Side::Server => 0x77d1_40e0_0000_0000 | index,
                },
                next_payload: 1, // SA
                version: 0x10,
                exchange: 4, // aggressive
                flags: 0,
                message_id: 0,
                length: 0, // ike_message sets it
            };
            let overhead =
                ipsec::encapsulated_len(Mode::Ctcp, ipsec::Kind::Ike, ipsec::IKE_HEADER_LEN);
            let mut body = vec![0u8; self.payload_len.saturating_sub(overhead)];
            ipsec::fill_pattern(n, &mut body);
            let message = ipsec::ike_message(&header, &body);
            ipsec::encapsulate(Mode::Ctcp, Outgoing::Ike(&message), false)
        } else {
            let spi = match side {
                Side::Client => 0x1000_0000 | self.index,
                Side::Server => 0x2000_0000 | self.index,
            };
            let overhead =
                ipsec::encapsulated_len(Mode::Ctcp, ipsec::Kind::Esp, ipsec::ESP_HEADER_LEN);
            let mut body = vec![0u8; self.payload_len.saturating_sub(overhead).max(MIN_ESP_BODY)];
            ipsec::fill_pattern(n, &mut body);
            let packet = ipsec::esp_packet(spi, n, &body);
            ipsec::encapsulate(Mode::Ctcp, Outgoing::Esp(&packet), false)
        }
    }
}

/// An ESP packet's least payload after its SPI and sequence number: an IV-less ICV's worth,
/// which is also what tollgate's detection wants to see before it calls a segment ESP.
const MIN_ESP_BODY: usize = 8;

/// What a run wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    frames: u64,
    bytes: u64,
    shortest: usize,
    longest: usize,
}

/// Writes the plan's frames, flow after flow round-robin, into `out`.
fn generate<W: Write>(plan: &Plan, out: &mut PcapWriter<W>) -> anyhow::Result<Written> {
    let mut flows: Vec<Flow> = (0..plan.flows).map(|i| Flow::new(plan, i)).collect();
    let mut written = Written {
        frames: 0,
        bytes: 0,
        shortest: usize::MAX,
        longest: 0,
    };
    for j in 0..plan.frames {
        let flow = &mut flows[(j % u64::from(plan.flows)) as usize];
        let frame = flow.next_kept(plan.direction);
        let at = Duration::from_secs(FIRST_TIMESTAMP_SECS) + Duration::from_micros(j);
        out.write(at, &frame).context("writing a frame")?;
        written.frames += 1;
        written.bytes += frame.len() as u64;
        written.shortest = written.shortest.min(frame.len());
        written.longest = written.longest.max(frame.len());
    }
    Ok(written)
}

/// An option value as it is written on the command line.
fn value_name<T: ValueEnum>(v: T) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_owned())
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let plan = Plan::from_cli(cli)?;
    let file =
        File::create(&cli.out).with_context(|| format!("cannot create {}", cli.out.display()))?;
    let mut out = PcapWriter::new(BufWriter::with_capacity(1 << 20, file))
        .with_context(|| format!("writing {}", cli.out.display()))?;
    let written =
        generate(&plan, &mut out).with_context(|| format!("writing {}", cli.out.display()))?;
    out.finish()
        .with_context(|| format!("writing {}", cli.out.display()))?;
    if written.frames == 0 {
        bail!("no frames written");
    }
    println!(
        "pcap-gen: {}: {} frames of {} {} flows ({}, direction {}), {}..{} bytes each ({}..{} with FCS), {} bytes of frames",
        cli.out.display(),
        written.frames,
        plan.flows,
        value_name(plan.kind),
        if cli.ipv6 { "IPv6" } else { "IPv4" },
        value_name(plan.direction),
        written.shortest,
        written.longest,
        written.shortest + FCS_LEN,
        written.longest + FCS_LEN,
        written.bytes
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pcap-gen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use tollgate_core::detect::{Detection, IpsecDetector, IpsecFraming};
    use tollgate_core::pcap;
    use tollgate_core::pipeline::Pipeline;
    use tollgate_core::wire::{checksum, parse_frame, Ipv4Packet};

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(
            ["pcap-gen"]
                .iter()
                .chain(args)
                .chain(&["--out", "/dev/null"]),
        )
        .unwrap()
    }

    fn plan(args: &[&str]) -> Plan {
        Plan::from_cli(&cli(args)).unwrap()
    }

    /// The file's bytes and what `generate` said it wrote.
    fn file(args: &[&str]) -> (Vec<u8>, Written) {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let written = generate(&plan(args), &mut w).unwrap();
        (w.finish().unwrap(), written)
    }

    /// A frame as tollgate's parser sees it, with both checksums verified by its checksum
    /// module: (protocol, ports, TCP flags, transport payload).
    fn checked(frame: &[u8]) -> (u8, (u16, u16), Option<u8>, Vec<u8>) {
        let summary = parse_frame(frame).expect("tollgate parses the frame");
        let ip = summary.ip.expect("an IP frame");
        let l3 = usize::from(summary.l3_offset);
        let l4 = usize::from(ip.l4_offset);
        let end = l3 + usize::from(ip.ip_len);
        assert!(end <= frame.len(), "the IP packet fits in the frame");
        let segment = &frame[l4..end];
        let ok = match (ip.src, ip.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let header = Ipv4Packet::new_checked(&frame[l3..]).unwrap();
                assert!(header.verify_checksum(), "IPv4 header checksum");
                assert!(checksum::verify(&frame[l3..l4]));
                checksum::verify_transport_v4(s, d, ip.protocol, segment)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                checksum::verify_transport_v6(s, d, ip.protocol, segment)
            }
            _ => unreachable!(),
        };
        assert!(ok, "transport checksum of {:?}", ip);
        let payload = frame[end - usize::from(ip.l4_payload_len)..end].to_vec();
        (ip.protocol, ip.ports.unwrap(), ip.tcp_flags, payload)
    }

    const KINDS: [&str; 5] = ["tcp", "udp", "ctcp", "syn", "mix"];

    #[test]
    fn every_kind_and_family_writes_valid_frames() {
        for kind in KINDS {
            for v6 in [false, true] {
                for direction in ["inside", "outside", "both"] {
                    if kind == "syn" && direction != "inside" {
                        continue;
                    }
                    let mut args = vec![kind, "--flows", "7", "--frames", "100", "-d", direction];
                    if v6 {
                        args.push("--ipv6");
                    }
                    if kind != "syn" {
                        args.extend(["--size", "256"]);
                    }
                    let (bytes, written) = file(&args);
                    let records = pcap::read(&bytes).unwrap();
                    assert_eq!(records.len(), 100, "{args:?}");
                    assert_eq!(written.frames, 100);
                    let mut keys = HashSet::new();
                    for r in &records {
                        assert_eq!(r.orig_len as usize, r.data.len());
                        assert!(r.data.len() >= MIN_FRAME);
                        let (protocol, _, flags, _) = checked(r.data);
                        assert!(protocol == 6 || protocol == 17, "{args:?}");
                        assert_eq!(flags.is_some(), protocol == 6);
                        let s = parse_frame(r.data).unwrap().ip.unwrap();
                        assert_eq!(s.src.is_ipv6(), v6);
                        keys.insert(Pipeline::key_of(r.data).unwrap());
                    }
                    assert_eq!(keys.len(), 7, "{args:?}: one key per flow");
                    assert_eq!(
                        written.bytes,
                        records.iter().map(|r| r.data.len() as u64).sum::<u64>()
                    );
                }
            }
        }
    }

    #[test]
    fn data_frames_are_the_size_asked_for() {
        for size in [64u16, 128, 256, 512, 1024, 1280, 1518] {
            for kind in ["tcp", "udp", "ctcp", "mix"] {
                let s = size.to_string();
                let (bytes, _) = file(&[kind, "--size", &s, "--frames", "60", "--flows", "3"]);
                // A cTCP datagram needs more than 64 bytes (IKE at least 110 with the FCS).
                let exact = kind == "tcp" || kind == "udp" || size >= 128;
                for r in pcap::read(&bytes).unwrap() {
                    let payload = checked(r.data).3;
                    let len = r.data.len() + FCS_LEN;
                    if payload.is_empty() {
                        assert_eq!(len, 64, "{kind} {size}: a handshake segment");
                    } else if exact {
                        assert_eq!(len, usize::from(size), "{kind} {size}");
                    } else {
                        assert!(
                            len >= usize::from(size) && len <= 130,
                            "{kind} {size}: {len}"
                        );
                    }
                }
            }
        }
        // IPv4 TCP and UDP at 64 bytes: exactly the minimum, UDP with a payload.
        let (bytes, _) = file(&["udp", "--frames", "1"]);
        let r = pcap::read(&bytes).unwrap()[0];
        assert_eq!(r.data.len(), 60);
        assert_eq!(checked(r.data).3.len(), 60 - 42);
        // IPv6 TCP cannot be 64 bytes: 74 without the FCS, no payload.
        let (bytes, _) = file(&["tcp", "--ipv6", "--frames", "1"]);
        let r = pcap::read(&bytes).unwrap()[0];
        assert_eq!(r.data.len(), 74);
        assert!(checked(r.data).3.is_empty());
    }

    #[test]
    fn ctcp_flows_are_a_handshake_then_one_datagram_a_segment() {
        let (bytes, _) = file(&[
            "ctcp", "--flows", "2", "--frames", "20", "-d", "both", "--size", "300",
        ]);
        let records = pcap::read(&bytes).unwrap();
        let frames: Vec<_> = records.iter().map(|r| checked(r.data)).collect();
        // Round-robin over 2 flows: flow 0 is frames 0, 2, 4, ...
        let flow0: Vec<_> = frames.iter().step_by(2).collect();
        let flags: Vec<u8> = flow0.iter().map(|f| f.2.unwrap()).collect();
        assert_eq!(
            &flags[..3],
            &[flags::SYN, flags::SYN | flags::ACK, flags::ACK]
        );
        assert!(flags[3..].iter().all(|&f| f == flags::ACK | flags::PSH));
        assert_eq!(flow0[0].1, (1024, CTCP_PORT));
        assert_eq!(flow0[1].1, (CTCP_PORT, 1024));
        // Client and server datagrams alternate; each is one whole cTCP datagram.
        let mut detector = IpsecDetector::default();
        for (k, f) in flow0[3..].iter().enumerate() {
            let from_client = k % 2 == 0;
            assert_eq!(f.1 .1 == CTCP_PORT, from_client);
            let parsed = ipsec::parse_payload(Mode::Ctcp, &f.3);
            assert!(!parsed.malformed, "datagram {k}");
            assert_eq!(parsed.datagrams.len(), 1);
            assert!(parsed.datagrams[0].consistent, "datagram {k}");
            let kind = parsed.datagrams[0].datagram.kind();
            assert_eq!(
                kind == ipsec::Kind::Ike,
                k < 2,
                "IKE first each way, ESP after"
            );
            if k == 0 {
                assert_eq!(
                    detector.on_payload(true, &f.3),
                    Detection::IpsecOverTcp(IpsecFraming::CtcpIke),
                    "tollgate's detection recognises the client's first segment"
                );
            }
        }
        // ESP alone is recognised too (two segments of one SA, rising sequence numbers).
        let mut detector = IpsecDetector::default();
        assert_eq!(detector.on_payload(true, &flow0[5].3), Detection::Undecided);
        assert_eq!(
            detector.on_payload(true, &flow0[7].3),
            Detection::IpsecOverTcp(IpsecFraming::CtcpEsp)
        );
    }

    #[test]
    fn sequence_numbers_follow_the_conversation() {
        let seq_ack = |frame: &[u8]| {
            let l4 = usize::from(parse_frame(frame).unwrap().ip.unwrap().l4_offset);
            let word =
                |at: usize| u32::from_be_bytes(frame[l4 + at..l4 + at + 4].try_into().unwrap());
            (word(4), word(8))
        };
        let (bytes, _) = file(&["ctcp", "--flows", "1", "--frames", "8", "-d", "both"]);
        let records = pcap::read(&bytes).unwrap();
        let f: Vec<_> = records
            .iter()
            .map(|r| (seq_ack(r.data), checked(r.data).3.len() as u32))
            .collect();
        let ((syn, _), _) = f[0];
        let ((synack, synack_ack), _) = f[1];
        assert_eq!(synack_ack, syn.wrapping_add(1));
        assert_eq!(f[2].0, (syn.wrapping_add(1), synack.wrapping_add(1)));
        assert_eq!(f[3].0, f[2].0, "the first datagram follows the ACK");
        assert_eq!(
            f[4].0,
            (synack.wrapping_add(1), syn.wrapping_add(1) + f[3].1)
        );
        assert_eq!(f[5].0 .0, f[3].0 .0 + f[3].1);
        // Inside only: the same numbers as in the whole conversation.
        let (inside, _) = file(&["ctcp", "--flows", "1", "--frames", "4"]);
        let inside = pcap::read(&inside).unwrap();
        for (k, r) in inside.iter().enumerate() {
            let whole = [0, 2, 3, 5][k];
            assert_eq!(r.data, records[whole].data);
        }
    }

    #[test]
    fn a_syn_flood_has_a_source_per_frame() {
        let (bytes, _) = file(&["syn", "--frames", "5000", "--src", "198.18.0.0/24"]);
        let records = pcap::read(&bytes).unwrap();
        let mut sources = HashSet::new();
        for r in &records {
            let (protocol, ports, flags, payload) = checked(r.data);
            assert_eq!((protocol, flags, payload.len()), (6, Some(flags::SYN), 0));
            assert_eq!(r.data.len(), 60);
            let ip = parse_frame(r.data).unwrap().ip.unwrap();
            assert!(matches!(ip.src, IpAddr::V4(a) if a.octets()[..3] == [198, 18, 0]));
            sources.insert((ip.src, ports.0));
        }
        // 254 addresses in the /24, then the next client port.
        assert_eq!(sources.len(), 5000);
        let again = file(&["syn", "--frames", "10", "--flows", "5"]).0;
        let again = pcap::read(&again).unwrap();
        assert_eq!(
            again[0].data, again[5].data,
            "a flow's SYN again is a retransmission"
        );
    }

    #[test]
    fn mix_takes_turns() {
        let (bytes, _) = file(&["mix", "--flows", "3", "--frames", "3", "--ipv6"]);
        let records = pcap::read(&bytes).unwrap();
        let got: Vec<_> = records
            .iter()
            .map(|r| {
                let c = checked(r.data);
                (c.0, c.1 .1, c.2)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (6, TCP_PORT, Some(flags::ACK | flags::PSH)),
                (17, UDP_PORT, None),
                (6, CTCP_PORT, Some(flags::SYN))
            ]
        );
    }

    #[test]
    fn addresses_ports_and_macs_come_from_the_options() {
        let e = Plan::from_cli(&cli(&["udp", "--src", "10.0.0.0/31", "--ipv6"])).unwrap_err();
        assert!(e.to_string().contains("--src 10.0.0.0/31 is IPv4"), "{e}");

        let (bytes, _) = file(&[
            "udp",
            "--flows",
            "4",
            "--frames",
            "4",
            "--src",
            "10.0.0.0/31",
            "--dst",
            "192.0.2.9",
            "--src-port",
            "5000",
            "--dst-port",
            "53",
            "--client-mac",
            "02:aa:bb:cc:dd:ee",
            "--server-mac",
            "02:11:22:33:44:55",
            "--vlan",
            "100",
        ]);
        let records = pcap::read(&bytes).unwrap();
        let mut got = Vec::new();
        for r in &records {
            assert_eq!(&r.data[..6], &[0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
            assert_eq!(&r.data[6..12], &[0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
            let s = parse_frame(r.data).unwrap();
            assert_eq!(s.vlan, Some(100));
            checked(r.data);
            let ip = s.ip.unwrap();
            assert_eq!(ip.dst, "192.0.2.9".parse::<IpAddr>().unwrap());
            got.push((ip.src.to_string(), ip.ports.unwrap()));
        }
        // A /31 has two usable addresses; flows past them take the next port.
        assert_eq!(
            got,
            vec![
                ("10.0.0.0".into(), (5000, 53)),
                ("10.0.0.1".into(), (5000, 53)),
                ("10.0.0.0".into(), (5001, 53)),
                ("10.0.0.1".into(), (5001, 53)),
            ]
        );
        // Outside: the servers' frames, MACs and addresses swapped.
        let (bytes, _) = file(&["tcp", "--frames", "1", "-d", "outside"]);
        let r = pcap::read(&bytes).unwrap()[0];
        assert_eq!(&r.data[..12], &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        let ip = parse_frame(r.data).unwrap().ip.unwrap();
        assert_eq!(ip.src, "198.19.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(ip.ports, Some((TCP_PORT, 1024)));
    }

    #[test]
    fn prefixes_give_their_usable_hosts() {
        let p: Prefix = "198.18.7.9/16".parse().unwrap();
        assert_eq!(p.to_string(), "198.18.0.0/16");
        assert_eq!(p.hosts(), 65_534);
        assert_eq!(p.host(0), "198.18.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(p.host(65_533), "198.18.255.254".parse::<IpAddr>().unwrap());
        let one: Prefix = "192.0.2.9".parse().unwrap();
        assert_eq!(
            (one.hosts(), one.host(0)),
            (1, "192.0.2.9".parse().unwrap())
        );
        let v6: Prefix = "2001:2::/48".parse().unwrap();
        assert_eq!(v6.hosts(), 1 << 32);
        assert_eq!(v6.host(0), "2001:2::1".parse::<IpAddr>().unwrap());
        let v6_64: Prefix = "2001:2:0:1::/120".parse().unwrap();
        assert_eq!(v6_64.hosts(), 255);
        assert_eq!(v6_64.host(254), "2001:2:0:1::ff".parse::<IpAddr>().unwrap());
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.hosts(), (1 << 32) - 2);
        assert_eq!(all.host(0), "0.0.0.1".parse::<IpAddr>().unwrap());
        for bad in ["198.18.0.0/33", "2001:2::/129", "banana", "198.18.0.0/x"] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn impossible_requests_say_what_to_change() {
        let err = |args: &[&str]| Plan::from_cli(&cli(args)).unwrap_err().to_string();
        assert!(err(&[
            "tcp",
            "--flows",
            "200",
            "--src",
            "10.0.0.1/32",
            "--src-port",
            "65500"
        ])
        .contains("widen --src"));
        assert!(err(&["syn", "--size", "128"]).contains("--size does not apply"));
        assert!(err(&["syn", "-d", "both"]).contains("one way"));
        assert!(err(&["tcp", "--flows", "0"]).contains("--flows"));
        assert!(err(&["tcp", "--frames", "0"]).contains("--frames"));
        for bad in [
            &["tcp", "--size", "63"][..],
            &["tcp", "--size", "1519"],
            &["tcp", "--client-mac", "02:00"],
        ] {
            assert!(
                Cli::try_parse_from(["pcap-gen"].iter().chain(bad).chain(&["-o", "x"])).is_err()
            );
        }
    }

    #[test]
    fn the_same_options_write_the_same_file() {
        assert_eq!(
            file(&["mix", "--flows", "50", "--frames", "500"]).0,
            file(&["mix", "--flows", "50", "--frames", "500"]).0
        );
    }
}
