//! The seed corpora: a few small, valid inputs per target for the fuzzer to start from, written
//! to `corpus/<target>/` by the `seed-corpus` example.

use std::net::{Ipv4Addr, Ipv6Addr};

use tollgate_control::protocol::{
    encode, ErrorCode, ExplainReply, FlowView, FlowsListReply, HealthReply, PolicyChangeReply,
    Response, StatsReply,
};
use tollgate_core::synth::{CLIENT_MAC, SERVER_MAC};
use tollgate_core::tcp::proxy::OnStall;
use tollgate_core::tcp::segment::{
    fill_checksum_v4, fill_checksum_v6, Ecn, SegmentHeader, TcpFlags,
};
use tollgate_core::tcp::seq::SeqNumber;
use tollgate_core::wire::{checksum, emit};

use crate::engine::{Ack, Offer, Script, SegmentOp, Seq, Setup, SIGNATURE_AT};

/// `(target, file name, contents)`.
pub type Seed = (&'static str, &'static str, Vec<u8>);

pub fn all() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let frames = frames();
    seeds.extend(runs(&frames));
    seeds.extend(frames);
    seeds.extend(engine());
    seeds.extend(detect());
    seeds.extend(control());
    seeds
}

// ---- shard ----

/// Each frame seed into a shard on both ports, a millisecond apart; and every one of them, in
/// turn, through one shard.
fn runs(frames: &[Seed]) -> Vec<Seed> {
    use tollgate_core::pipeline::PortSide;

    use crate::shard::record;
    let mut seeds: Vec<Seed> = frames
        .iter()
        .map(|(_, name, frame)| {
            let mut run = record(PortSide::Inside, 0, frame);
            run.extend(record(PortSide::Outside, 1, frame));
            ("shard", *name, run)
        })
        .collect();
    let all = frames
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, frame))| {
            let ingress = if i % 2 == 0 {
                PortSide::Inside
            } else {
                PortSide::Outside
            };
            record(ingress, 1, frame)
        })
        .collect();
    seeds.push(("shard", "all-frames", all));
    seeds
}

// ---- parse_frame ----

/// RFC 2544 benchmarking addresses, as the lab uses.
const V4_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const V4_SERVER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
/// RFC 3849 documentation addresses.
const V6_CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const V6_SERVER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

use tollgate_core::wire::ethernet::{
    ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN,
};

use tollgate_core::wire::ip::{
    PROTO_HOPOPT, PROTO_ICMP, PROTO_ICMPV6, PROTO_IPV6_FRAG, PROTO_IPV6_OPTS, PROTO_IPV6_ROUTE,
    PROTO_TCP, PROTO_UDP,
};

/// Client MAC to server MAC, with `(tpid, tci)` tags outermost first.
fn ethernet(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; emit::ETHERNET_LEN + tags.len() * emit::VLAN_TAG_LEN];
    emit::ethernet(&mut frame, SERVER_MAC, CLIENT_MAC, tags, ethertype);
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 header with `options` (whole words) and the flags-and-offset word, then `payload`.
fn ipv4(protocol: u8, options: &[u8], flags_and_offset: u16, payload: &[u8]) -> Vec<u8> {
    let header = emit::Ipv4Header {
        id: 0x1234,
        flags_and_offset,
        options,
        ..emit::Ipv4Header::new(V4_CLIENT, V4_SERVER, protocol, payload.len())
    };
    let mut packet = vec![0u8; header.header_len()];
    header.emit(&mut packet);
    packet.extend_from_slice(payload);
    packet
}

fn ipv6(next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; emit::IPV6_LEN];
    emit::Ipv6Header::new(V6_CLIENT, V6_SERVER, next_header, payload.len()).emit(&mut packet);
    packet.extend_from_slice(payload);
    packet
}

/// A hop-by-hop, routing or destination options header: `body` fills it to whole 8-byte units.
fn extension(next_header: u8, body: &[u8]) -> Vec<u8> {
    let mut header = vec![next_header, ((2 + body.len()) / 8 - 1) as u8];
    header.extend_from_slice(body);
    header
}

fn fragment_header(next_header: u8, offset: u16, more: bool) -> Vec<u8> {
    let mut header = vec![next_header, 0];
    header.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
    header.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    header
}

fn tcp_header(flags: TcpFlags, seq: u32, options: &str) -> SegmentHeader {
    let mut header = SegmentHeader {
        src_port: 40_000,
        dst_port: 10_000,
        seq: SeqNumber(seq),
        ack: SeqNumber(if flags.contains(TcpFlags::ACK) {
            7_000
        } else {
            0
        }),
        flags,
        window: 502,
        urgent: 0,
        options: Default::default(),
        ecn: Ecn::NotEct,
    };
    let o = &mut header.options;
    for option in options.split_whitespace() {
        match option {
            "mss" => o.mss = Some(1460),
            "ws" => o.window_scale = Some(7),
            "sackok" => o.sack_permitted = true,
            "ts" => o.timestamps = Some((0x0102_0304, 0x0a0b_0c0d)),
            "sack" => {
                o.sack.push(SeqNumber(7_100), SeqNumber(7_200));
                o.sack.push(SeqNumber(7_300), SeqNumber(7_400));
            }
            other => unreachable!("no option {other}"),
        }
    }
    header
}

fn tcp_bytes(header: &SegmentHeader, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; 60];
    let len = header.emit(&mut bytes).expect("60 bytes hold any header");
    bytes.truncate(len);
    bytes.extend_from_slice(payload);
    bytes
}

fn tcp_v4(header: &SegmentHeader, payload: &[u8]) -> Vec<u8> {
    let mut bytes = tcp_bytes(header, payload);
    fill_checksum_v4(&mut bytes, V4_CLIENT, V4_SERVER).expect("a whole header");
    bytes
}

fn tcp_v6(header: &SegmentHeader, payload: &[u8]) -> Vec<u8> {
    let mut bytes = tcp_bytes(header, payload);
    fill_checksum_v6(&mut bytes, V6_CLIENT, V6_SERVER).expect("a whole header");
    bytes
}

fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = vec![0u8; emit::UDP_LEN];
    emit::udp(&mut datagram, src_port, dst_port, payload.len());
    datagram.extend_from_slice(payload);
    datagram
}

fn icmp_echo(msg_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut message = vec![msg_type, 0, 0, 0, 0x1d, 0x1d, 0, 1];
    message.extend_from_slice(payload);
    let sum = checksum::checksum(&message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    message
}

fn frames() -> Vec<Seed> {
    let syn = tcp_header(TcpFlags::SYN, 1_000, "mss sackok ts ws");
    let data = tcp_header(TcpFlags::ACK | TcpFlags::PSH, 1_001, "ts");
    let sack = tcp_header(TcpFlags::ACK, 1_101, "ts sack");
    let fin = tcp_header(TcpFlags::FIN | TcpFlags::ACK, 1_101, "");
    let ctcp = b"IKETCP\x00\x1c";
    let mut first_fragment = udp(4500, 4500, &[0x77; 64]);
    first_fragment.truncate(40);
    vec![
        (
            "parse_frame",
            "ipv4-tcp-syn",
            ethernet(
                &[],
                ETHERTYPE_IPV4,
                &ipv4(PROTO_TCP, &[], 0x4000, &tcp_v4(&syn, b"")),
            ),
        ),
        (
            "parse_frame",
            "ipv4-tcp-data",
            ethernet(
                &[],
                ETHERTYPE_IPV4,
                &ipv4(PROTO_TCP, &[], 0x4000, &tcp_v4(&data, ctcp)),
            ),
        ),
        (
            "parse_frame",
            "ipv4-tcp-sack",
            ethernet(
                &[],
                ETHERTYPE_IPV4,
                &ipv4(PROTO_TCP, &[], 0x4000, &tcp_v4(&sack, b"")),
            ),
        ),
        (
            "parse_frame",
            "ipv4-tcp-fin-padded",
            // A short frame, padded to Ethernet's 60 bytes.
            {
                let mut frame = ethernet(
                    &[],
                    ETHERTYPE_IPV4,
                    &ipv4(PROTO_TCP, &[], 0x4000, &tcp_v4(&fin, b"")),
                );
                frame.resize(60, 0);
                frame
            },
        ),
        (
            "parse_frame",
            "ipv4-options-udp",
            ethernet(
                &[],
                ETHERTYPE_IPV4,
                &ipv4(
                    PROTO_UDP,
                    &[1, 7, 7, 4, 0, 0, 0, 0, 0, 0, 0, 0],
                    0,
                    &udp(500, 500, b"ike"),
                ),
            ),
        ),
        (
            "parse_frame",
            "ipv4-first-fragment",
            ethernet(
                &[],
                ETHERTYPE_IPV4,
                &ipv4(PROTO_UDP, &[], 0x2000, &first_fragment),
            ),
        ),
        (
            "parse_frame",
            "ipv4-later-fragment",
            ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_UDP, &[], 5, &[0x77; 24])),
        ),
        (
            "parse_frame",
            "ipv4-icmp-echo",
            ethernet(
                &[],
                ETHERTYPE_IPV4,
                &ipv4(PROTO_ICMP, &[], 0, &icmp_echo(8, b"ping")),
            ),
        ),
        (
            "parse_frame",
            "vlan-ipv4-tcp",
            ethernet(
                &[(ETHERTYPE_VLAN, 0x2000 | 42)],
                ETHERTYPE_IPV4,
                &ipv4(PROTO_TCP, &[], 0x4000, &tcp_v4(&data, b"x")),
            ),
        ),
        (
            "parse_frame",
            "qinq-ipv6-udp",
            ethernet(
                &[(ETHERTYPE_QINQ, 100), (ETHERTYPE_VLAN, 200)],
                ETHERTYPE_IPV6,
                &ipv6(PROTO_UDP, &udp(500, 4500, b"ike")),
            ),
        ),
        (
            "parse_frame",
            "ipv6-tcp-syn",
            ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_TCP, &tcp_v6(&syn, b""))),
        ),
        ("parse_frame", "ipv6-extension-headers-tcp", {
            let mut payload = extension(PROTO_IPV6_ROUTE, &[0; 6]);
            payload.extend(extension(PROTO_IPV6_OPTS, &[1, 4, 0, 0, 0, 0]));
            payload.extend(extension(PROTO_TCP, &[1, 4, 0, 0, 0, 0]));
            payload.extend(tcp_v6(&data, b"hello"));
            ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_HOPOPT, &payload))
        }),
        ("parse_frame", "ipv6-first-fragment-tcp", {
            let mut payload = fragment_header(PROTO_TCP, 0, true);
            payload.extend(tcp_v6(&data, &[0x33; 16]));
            ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_IPV6_FRAG, &payload))
        }),
        ("parse_frame", "ipv6-later-fragment", {
            let mut payload = fragment_header(PROTO_UDP, 1_232, false);
            payload.extend_from_slice(&[0x44; 16]);
            ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_IPV6_FRAG, &payload))
        }),
        (
            "parse_frame",
            "ipv6-icmpv6-echo",
            ethernet(
                &[],
                ETHERTYPE_IPV6,
                &ipv6(PROTO_ICMPV6, &icmp_echo(128, b"ping")),
            ),
        ),
        (
            "parse_frame",
            "arp",
            ethernet(&[], ETHERTYPE_ARP, &[0, 1, 8, 0, 6, 4, 0, 1]),
        ),
    ]
}

// ---- tcp_engine ----

/// Client payloads are sent 512 bytes at a time.
const CHUNK: usize = 512;

fn handshake(script: Script) -> Script {
    script.server(SegmentOp::syn_ack()).client(SegmentOp::ack())
}

fn engine() -> Vec<Seed> {
    let setup = Setup::seed();
    let normal = handshake(Script::new(&setup))
        .client(SegmentOp::data(CHUNK))
        .server(SegmentOp::ack())
        .server(SegmentOp::data(100))
        .client(SegmentOp::ack())
        .client(SegmentOp::ack().with_flags(TcpFlags::FIN | TcpFlags::ACK))
        .server(SegmentOp::ack().with_flags(TcpFlags::FIN | TcpFlags::ACK))
        .client(SegmentOp::ack())
        .server(SegmentOp::ack())
        .advance(60_000)
        .timers(4);

    // The client's second segment arrives first; it fills the hole after duplicate ACKs.
    let reordered = handshake(Script::new(&setup))
        .client(SegmentOp::data(CHUNK).with_seq(Seq::Ahead(CHUNK as u16)))
        .client(SegmentOp::ack().with_seq(Seq::Ahead(CHUNK as u16)))
        .client(SegmentOp::ack().with_seq(Seq::Ahead(CHUNK as u16)))
        .client(SegmentOp::data(CHUNK).with_seq(Seq::Back(2 * CHUNK as u16)))
        .server(SegmentOp::ack().with_sack(&[(CHUNK as u16, CHUNK as u16)]))
        .server(SegmentOp::ack())
        .advance(200);

    // cTCP: the hole is never filled; the stall hands the flow over to pass-through.
    let stall = Setup {
        on_stall: OnStall::Bypass,
        ..Setup::seed()
    };
    let mut stalled = handshake(Script::new(&stall))
        .client(SegmentOp::data(CHUNK))
        .server(SegmentOp::ack());
    for _ in 0..4 {
        stalled = stalled.client(SegmentOp::data(CHUNK).with_seq(Seq::Ahead(CHUNK as u16)));
    }
    let stalled = stalled.advance(1_000).timers(8).advance(5_000);

    let refused = Script::new(&setup)
        .server(
            SegmentOp::ack()
                .with_flags(TcpFlags::RST | TcpFlags::ACK)
                .with_seq(Seq::Raw(0)),
        )
        .advance(10);

    let converted = handshake(Script::new(&setup))
        .client(SegmentOp::data(CHUNK))
        .server(SegmentOp::data(100).with_ack(Ack::Back(200)))
        .pass_through()
        .client(SegmentOp::data(CHUNK));

    // A server that stops reading: a closed window, probes, then reading again.
    let zero_window = Setup {
        buffer: 2,
        ..Setup::seed()
    };
    let mut probed = handshake(Script::new(&zero_window));
    for _ in 0..6 {
        probed = probed.client(SegmentOp::data(CHUNK));
    }
    let probed = probed
        .server(SegmentOp::ack().with_window(1))
        .timers(3)
        .server(SegmentOp::ack())
        .ack_all()
        .timers(2);

    // No options at all, delayed ACKs, an inspector whose signature the data runs into.
    let bare = Setup {
        window_scaling: false,
        sack: false,
        timestamps: false,
        delayed_acks: true,
        inspect: true,
        client: Offer {
            mss: None,
            window_scale: None,
            sack_permitted: false,
            timestamps: false,
        },
        server: Offer {
            mss: Some(536),
            window_scale: None,
            sack_permitted: false,
            timestamps: false,
        },
        ..Setup::seed()
    };
    let inspected = handshake(Script::new(&bare))
        .client(SegmentOp::data(SIGNATURE_AT))
        .timers(1)
        .server(SegmentOp::ack())
        .client(SegmentOp::data(64))
        .timers(2);

    // Under a SYN flood: a cookie answers the client; the stall hands over with translations.
    let cookie = Setup {
        cookie: true,
        on_stall: OnStall::Bypass,
        ..Setup::seed()
    };
    let mut cookied = Script::new(&cookie)
        .client(SegmentOp::data(CHUNK))
        .server(SegmentOp::syn_ack())
        .server(SegmentOp::data(100))
        .client(SegmentOp::ack());
    for _ in 0..3 {
        cookied = cookied.server(SegmentOp::data(100).with_seq(Seq::Ahead(100)));
    }
    let cookied = cookied.timers(8).advance(3_000);

    let lost_syn_ack = Script::new(&setup)
        .timers(2)
        .server(SegmentOp::syn_ack())
        .timers(1)
        .client(SegmentOp::ack())
        .client(
            SegmentOp::ack()
                .with_flags(TcpFlags::RST)
                .with_seq(Seq::Ahead(10)),
        )
        .client(SegmentOp::ack().with_flags(TcpFlags::RST));

    vec![
        ("tcp_engine", "handshake-data-fin", normal.into_bytes()),
        (
            "tcp_engine",
            "reordered-then-filled",
            reordered.into_bytes(),
        ),
        ("tcp_engine", "stall-bypass", stalled.into_bytes()),
        ("tcp_engine", "refused", refused.into_bytes()),
        ("tcp_engine", "converted", converted.into_bytes()),
        ("tcp_engine", "zero-window", probed.into_bytes()),
        ("tcp_engine", "no-options-inspected", inspected.into_bytes()),
        (
            "tcp_engine",
            "syn-retransmit-reset",
            lost_syn_ack.into_bytes(),
        ),
        ("tcp_engine", "cookie-stall-bypass", cookied.into_bytes()),
    ]
}

// ---- detect ----

/// An ISAKMP header of `len` bytes.
fn ike(version: u8, exchange: u8, flags: u8, next_payload: u8, len: usize) -> Vec<u8> {
    let mut m = vec![0u8; len];
    m[..8].copy_from_slice(&[0x5a, 0x11, 0x9c, 0x03, 0x77, 0x21, 0x40, 0x0e]);
    m[16] = next_payload;
    m[17] = version;
    m[18] = exchange;
    m[19] = flags;
    m[24..28].copy_from_slice(&(len as u32).to_be_bytes());
    m
}

fn ctcp_trailer() -> [u8; 16] {
    let mut trailer = [0u8; 16];
    trailer[0] = 0xc7;
    trailer
}

fn esp(spi: u32, seq: u32, body: usize) -> Vec<u8> {
    let mut p = spi.to_be_bytes().to_vec();
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend((0..body).map(|i| (i as u8).wrapping_mul(29)));
    p
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut p = ((message.len() + 2) as u16).to_be_bytes().to_vec();
    p.extend_from_slice(message);
    p
}

fn detect() -> Vec<Seed> {
    let ikev1 = ike(0x10, 4, 0, 1, 64);
    let ikev2 = ike(0x20, 34, 0x08, 33, 48);
    let mut ctcp_ike = udp(500, 500, &ikev1);
    ctcp_ike.extend_from_slice(&ctcp_trailer());
    let mut framed_ike = vec![0u8; 4];
    framed_ike.extend_from_slice(&ikev2);
    let ctcp_esp = |seq| {
        let mut p = esp(0x1000, seq, 24);
        p.extend_from_slice(&ctcp_trailer());
        p
    };
    let tls = {
        let mut p = vec![
            0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03,
        ];
        p.extend((0..58).map(|i| (i * 13) as u8));
        p
    };
    let http: &[u8] = b"GET /file/1 HTTP/1.1\r\nHost: 198.18.0.2:10000\r\n\r\n";
    vec![
        (
            "detect",
            "ctcp-ike",
            crate::detect::encode(&[(true, &ctcp_ike)]),
        ),
        (
            "detect",
            "rfc8229-split-prefix",
            crate::detect::encode(&[(true, b"IKE"), (true, b"TCP"), (true, &framed(&framed_ike))]),
        ),
        (
            "detect",
            "framed-ike",
            crate::detect::encode(&[(false, &framed(&framed_ike))]),
        ),
        (
            "detect",
            "ctcp-esp",
            crate::detect::encode(&[(true, &ctcp_esp(1)), (false, b""), (true, &ctcp_esp(2))]),
        ),
        (
            "detect",
            "framed-esp",
            crate::detect::encode(&[
                (false, &framed(&esp(0x2000, 7, 16))),
                (false, &framed(&esp(0x2000, 8, 16))),
            ]),
        ),
        ("detect", "tls", crate::detect::encode(&[(true, &tls)])),
        (
            "detect",
            "http",
            crate::detect::encode(&[(true, http), (false, b"HTTP/1.1 200 OK\r\n")]),
        ),
    ]
}

// ---- control_codec ----

fn lines(lines: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

fn control() -> Vec<Seed> {
    let flow: FlowView = serde_json::from_str(
        r#"{"worker":0,"proto":"tcp","src":"198.18.0.1:40000","dst":"198.19.0.2:10000",
            "ingress":"inside","mode":"bypass","reason":"rule 1 (ctcp)","rule":1,
            "packets_original":10,"packets_reply":9,"bytes_original":1500,"bytes_reply":900,
            "age_ms":2000,"idle_ms":5,"tcp_state":"established","handed_over":"stall",
            "detected":"ctcp-ike"}"#,
    )
    .expect("a flow view");
    let replies = [
        Response::ok(
            Some(1),
            PolicyChangeReply {
                id: Some(1),
                generation: 2,
                in_force_us: 140,
                flows_switched: None,
            },
        ),
        Response::ok(
            Some(2),
            FlowsListReply {
                total: 1,
                page: 0,
                page_size: 1000,
                flows: vec![flow],
            },
        ),
        Response::ok(
            None,
            HealthReply {
                status: tollgate_control::protocol::HealthStatus::Ok,
                workers: 2,
                workers_responding: 2,
                links_up: vec![("inside".into(), true), ("outside".into(), true)],
                uptime_secs: 3600,
            },
        ),
        Response::ok(Some(4), StatsReply::default()),
        Response::ok(
            Some(6),
            serde_json::from_str::<ExplainReply>(
                r#"{"action":"proxy","rule":{"id":4,"match":{"proto":"tcp","dst_port":443},
                    "action":"proxy","conn_max":3,"on_limit":"reset"},
                    "explanation":"rule 4 matches: proxy; conn-max 3 reached: a new flow would be reset",
                    "limits":[{"limit":"conn-max","max":3,"current":3,"reached":true}]}"#,
            )
            .expect("an explain reply"),
        ),
        Response::error(Some(5), ErrorCode::NotFound, "no rule with id 9"),
    ];
    let mut reply_lines = Vec::new();
    for reply in &replies {
        reply_lines.extend(encode(reply));
    }
    vec![
        (
            "control_codec",
            "policy-changes",
            lines(&[
                r#"{"version":1,"seq":1,"op":"policy.add","rule":{"match":{"proto":"tcp","dst_port":10000},"action":"bypass","name":"ctcp"}}"#,
                r#"{"version":1,"seq":2,"op":"policy.add","position":0,"rule":{"match":{"proto":"udp","src":"198.18.0.0/15","dst_port":"4500-4501","ingress":"inside"},"action":"drop","idle_timeout_secs":30}}"#,
                r#"{"version":1,"seq":3,"op":"policy.add","rule":{"match":{"proto":"tcp","dst":"2001:db8::/32","vlan":42},"action":"proxy","on_stall":"bypass","detect":"ipsec-over-tcp","comment":"v6"}}"#,
                r#"{"version":1,"seq":4,"op":"explain","proto":"tcp","src":"198.18.0.1:40000","dst":"198.19.0.2:10000"}"#,
                r#"{"version":1,"seq":5,"op":"explain","proto":"udp","src":"198.18.7.7:500","dst":"203.0.113.9:4500","ingress":"inside"}"#,
                r#"{"version":1,"seq":6,"op":"policy.delete","id":1}"#,
                r#"{"version":1,"seq":7,"op":"policy.list"}"#,
                r#"{"version":1,"seq":8,"op":"policy.add","rule":{"match":{"proto":"tcp","dst_port":443},"action":"proxy","conn_max":3,"embryonic_max":2,"per_client_max":1,"on_limit":"bypass","name":"web"}}"#,
                r#"{"version":1,"seq":9,"op":"explain","proto":"tcp","src":"198.18.0.1:40000","dst":"198.19.0.2:443"}"#,
            ]),
        ),
        (
            "control_codec",
            "policy-replace",
            lines(&[
                r#"{"version":1,"op":"policy.replace","apply_existing":true,"rules":[{"match":{"proto":"esp"},"action":"bypass"},{"match":{"proto":6,"src_port":"1024-65535","dst":"198.19.0.0/16"},"action":"proxy"},{"action":"drop"}]}"#,
                r#"{"version":1,"op":"policy.check","rules":[{"match":{"proto":"sctp","dst_port":2905},"action":"bypass"}]}"#,
                r#"{"version":1,"op":"explain","proto":"icmp","src":"198.18.0.1:0","dst":"198.19.0.2:0","ingress":"outside","vlan":7}"#,
            ]),
        ),
        (
            "control_codec",
            "flows-and-counters",
            lines(&[
                r#"{"version":1,"seq":9,"op":"flows.list","filter":{"prefix":"198.18.0.0/15","port":10000,"proto":"tcp","mode":"bypass","rule":1},"page":1,"page_size":50}"#,
                r#"{"version":1,"op":"flows.clear","filter":{"port":10000}}"#,
                r#"{"version":1,"op":"stats"}"#,
                r#"{"version":1,"op":"health"}"#,
                r#"{"version":1,"op":"version"}"#,
            ]),
        ),
        (
            "control_codec",
            "refused",
            lines(&[
                r#"{"version":2,"seq":3,"op":"stats"}"#,
                r#"{"version":1,"op":"reboot"}"#,
                r#"{"version":1,"op":"policy.add","rule":{"match":{"dst_port":80},"action":"bypass"}}"#,
                r#"{not json"#,
            ]),
        ),
        ("control_codec", "replies", reply_lines),
    ]
}
