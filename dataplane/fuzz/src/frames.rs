//! The `parse_frame` target: arbitrary bytes as a received Ethernet frame.
//!
//! Beyond never panicking, what the parsers promise and the data plane relies on:
//! - the common-shape parser the worker tries first takes exactly the frames `parse_frame` finds
//!   of that shape, with the same fields ([`common_shape_agrees`]);
//! - every offset and length [`parse_frame`] reports lies within the frame and agrees with the
//!   header views, and none depends on Ethernet padding;
//! - a TCP segment `parse_frame` accepts, once its checksum is right, is one the proxy takes
//!   ([`Inbound::read`]), and the proxy's own framing of its header ([`FlowAddressing`]) reads
//!   back the same, with valid checksums, on either leg;
//! - the pass-through rewrite ([`Translation::apply`]) changes all it should or nothing, and
//!   keeps the checksum valid.
//!
//! - IP reassembly holds a lone fragment without completing anything and lets it go whole, and
//!   a TCP segment cut into fragments comes back as the same segment, in whatever order the
//!   fragments arrive ([`check_reassembly`]).
//!
//! The rewrite's offsets come from the MAC addresses, which nothing else here reads.

use std::net::IpAddr;

use tollgate_core::proxy::{FlowAddressing, Inbound, Unusable, MAX_HEADERS_LEN};
use tollgate_core::tcp::proxy::{Leg, Translation};
use tollgate_core::tcp::segment::{fill_checksum_v4, fill_checksum_v6, Ecn, SegmentHeader};
use tollgate_core::tcp::seq::SeqNumber;
use tollgate_core::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use tollgate_core::wire::ip::{PROTO_TCP, PROTO_UDP};
use tollgate_core::wire::{
    parse_frame, EthernetFrame, Fragment, FrameSummary, IpSummary, TcpSegment, UdpDatagram,
};

use tollgate_core::ip_reassembly::{
    tcp_fragment, FragmentDrop, FragmentTable, Outcome, ReassemblyConfig,
};
use tollgate_core::synth;
use tollgate_core::wire::exercise::{common_shape_agrees, exercise_views};

use crate::engine::check_header_round_trip;

/// Runs one input; panics when a parser breaks a promise.
pub fn check(frame: &[u8]) {
    let parsed = parse_frame(frame);
    exercise_views(frame);
    common_shape_agrees(frame);
    check_fragment(frame);
    let Ok(summary) = parsed else {
        return;
    };
    check_summary(frame, &summary);
    if frame.len() + 8 <= usize::from(u16::MAX) {
        let mut padded = frame.to_vec();
        padded.extend_from_slice(&[0xff; 8]);
        assert_eq!(
            parse_frame(&padded),
            Ok(summary),
            "Ethernet padding changes the summary"
        );
    }
    if let Some(ip) = summary.ip {
        if ip.protocol == PROTO_TCP && ip.fragment == Fragment::None {
            check_tcp(frame, &summary, &ip);
            check_reassembly(frame, &summary, &ip);
        }
    }
}

/// A frame read as a fragment: one fragment never makes a datagram, the same one again is a
/// duplicate, and the timeout gives back everything held.
fn check_fragment(frame: &[u8]) {
    let Some(info) = tcp_fragment(frame) else {
        return;
    };
    assert!(info.data_offset + info.data_len <= frame.len());
    let mut table = FragmentTable::new(ReassemblyConfig::default());
    match table.insert(info, frame.to_vec(), 0) {
        Outcome::Held => {
            assert!(matches!(
                table.insert(info, frame.to_vec(), 0),
                Outcome::Dropped(FragmentDrop::Duplicate, _)
            ));
            let mut released = 0;
            table.expire(u64::MAX, |_| released += 1);
            assert_eq!(released, 1);
        }
        Outcome::Complete(_) => panic!("one fragment made a whole datagram"),
        Outcome::Dropped(_, frames) => assert_eq!(frames.len(), 1),
    }
    assert!(table.is_empty());
    assert_eq!(table.held_bytes(), 0);
}

/// A whole TCP segment (untagged, no IPv6 extension headers) cut into fragments of a size the
/// input picks and fed in reverse comes back as the same segment, or is dropped for a reason
/// the cut explains (a first fragment shorter than the TCP header, too many fragments).
fn check_reassembly(frame: &[u8], summary: &FrameSummary, ip: &IpSummary) {
    let l3 = usize::from(summary.l3_offset);
    let simple = l3 == 14
        && match summary.ethertype {
            ETHERTYPE_IPV4 => true,
            ETHERTYPE_IPV6 => usize::from(ip.l4_offset) == l3 + 40,
            _ => false,
        };
    if !simple {
        return;
    }
    let l4 = usize::from(ip.l4_offset);
    let ip_end = l3 + usize::from(ip.ip_len);
    let data_len = ip_end - l4;
    let size =
        (8 * (1 + usize::from(frame[0] % 64))).max(data_len.div_ceil(32).next_multiple_of(8));
    let fragments = synth::fragments(&frame[..ip_end], size, 0x1234_5678);
    if fragments.len() < 2 {
        return;
    }
    let mut table = FragmentTable::new(ReassemblyConfig::default());
    for (i, f) in fragments.iter().enumerate().rev() {
        let info = tcp_fragment(f).expect("a fragment synth made");
        match table.insert(info, f.clone(), 0) {
            Outcome::Held => assert!(i > 0, "the last fragment in completed nothing"),
            Outcome::Complete(whole) => {
                assert_eq!(i, 0);
                let mut out = Vec::new();
                whole.write_frame(&mut out);
                let back = parse_frame(&out).expect("the reassembled frame parses");
                let back_ip = back.ip.expect("an IP packet");
                assert_eq!(back_ip.fragment, Fragment::None);
                assert_eq!((back_ip.src, back_ip.dst), (ip.src, ip.dst));
                let back_l4 = usize::from(back_ip.l4_offset);
                let back_end = usize::from(back.l3_offset) + usize::from(back_ip.ip_len);
                assert_eq!(
                    &out[back_l4..back_end],
                    &frame[l4..ip_end],
                    "the TCP segment"
                );
            }
            Outcome::Dropped(reason, _) => {
                assert!(
                    matches!(reason, FragmentDrop::TinyFirst | FragmentDrop::TooBig),
                    "{reason:?} at a cut of {size}"
                );
                return;
            }
        }
    }
}

fn check_summary(frame: &[u8], summary: &FrameSummary) {
    let ethernet = EthernetFrame::new_checked(frame).expect("parse_frame took the Ethernet header");
    let l3 = usize::from(summary.l3_offset);
    assert_eq!(l3, ethernet.header_len());
    assert_eq!(summary.ethertype, ethernet.ethertype());
    assert_eq!(summary.vlan, ethernet.vlan_id());
    assert!(l3 <= frame.len());
    let Some(ip) = summary.ip else {
        assert!(!matches!(
            summary.ethertype,
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6
        ));
        return;
    };
    let min_header = match (summary.ethertype, ip.src, ip.dst) {
        (ETHERTYPE_IPV4, IpAddr::V4(_), IpAddr::V4(_)) => 20,
        (ETHERTYPE_IPV6, IpAddr::V6(_), IpAddr::V6(_)) => 40,
        other => panic!("addresses of the wrong family for the EtherType: {other:?}"),
    };
    let l4 = usize::from(ip.l4_offset);
    let ip_end = l3 + usize::from(ip.ip_len);
    assert!(
        l3 + min_header <= l4 && l4 <= ip_end && ip_end <= frame.len(),
        "offsets out of order: l3 {l3}, l4 {l4}, IP end {ip_end}, frame {}",
        frame.len()
    );
    let l4_len = ip_end - l4;
    assert!(usize::from(ip.l4_payload_len) <= l4_len);
    match ip.fragment {
        Fragment::NonFirst => {
            assert_eq!(ip.ports, None);
            assert_eq!(ip.tcp_flags, None);
            assert_eq!(ip.l4_payload_len, 0);
        }
        Fragment::First => assert_eq!(ip.l4_payload_len, 0),
        Fragment::None => {}
    }
    let transport = &frame[l4..ip_end];
    if ip.protocol == PROTO_TCP && ip.fragment != Fragment::NonFirst {
        let tcp = TcpSegment::new_checked(transport).expect("parse_frame took the TCP header");
        assert_eq!(ip.ports, Some((tcp.src_port(), tcp.dst_port())));
        assert_eq!(ip.tcp_flags, Some(tcp.flags()));
        if ip.fragment == Fragment::None {
            assert_eq!(
                tcp.header_len() + usize::from(ip.l4_payload_len),
                l4_len,
                "the TCP payload is not what the IP length leaves"
            );
        }
    }
    if ip.protocol == PROTO_UDP && ip.fragment == Fragment::None {
        let udp = UdpDatagram::new_checked(transport).expect("parse_frame took the UDP header");
        assert_eq!(ip.ports, Some((udp.src_port(), udp.dst_port())));
        assert_eq!(usize::from(ip.l4_payload_len), udp.payload().len());
        assert!(usize::from(udp.length()) <= l4_len);
    }
    if ip.protocol != PROTO_TCP {
        assert_eq!(ip.tcp_flags, None);
    }
}

fn check_tcp(frame: &[u8], summary: &FrameSummary, ip: &IpSummary) {
    let l4 = usize::from(ip.l4_offset);
    let ip_end = usize::from(summary.l3_offset) + usize::from(ip.ip_len);
    let wire_header = TcpSegment::new_checked(&frame[l4..ip_end])
        .ok()
        .map(|tcp| SegmentHeader::parse(&tcp));
    let header = match wire_header {
        Some(Ok(header)) => {
            check_header_round_trip(&header);
            Some(header)
        }
        Some(Err(_)) => None,
        None => panic!("parse_frame took a TCP header TcpSegment refuses"),
    };

    // The same frame with the checksum right: what a sender would have sent.
    let mut fixed = frame[..ip_end].to_vec();
    let filled = match (ip.src, ip.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => fill_checksum_v4(&mut fixed[l4..], s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => fill_checksum_v6(&mut fixed[l4..], s, d),
        _ => unreachable!("check_summary checked the families"),
    };
    filled.expect("a TCP header parse_frame took has room for a checksum");
    let inbound = match (Inbound::read(&fixed), header) {
        (Ok(inbound), Some(mut header)) => {
            // The TCP bytes alone cannot say it: the ECN field is the IP header's.
            let l3 = usize::from(summary.l3_offset);
            let tos = match ip.src {
                IpAddr::V4(_) => fixed[l3 + 1],
                IpAddr::V6(_) => (fixed[l3] << 4) | (fixed[l3 + 1] >> 4),
            };
            header.ecn = Ecn::from_tos(tos);
            assert_eq!(inbound.header, header);
            inbound
        }
        (Err(Unusable::Malformed(_)), None) => return,
        (result, header) => panic!(
            "the proxy reads a frame parse_frame takes, checksum right, as {result:?}; \
             its header parses as {header:?}"
        ),
    };
    assert_eq!((inbound.src, inbound.dst), (ip.src, ip.dst));
    assert_eq!(inbound.payload_offset + inbound.payload_len, fixed.len());
    let payload = &fixed[inbound.payload_offset..];
    check_framing(&inbound, payload, summary.vlan);
    check_translation(&frame[..12], &fixed[l4..], ip.src, ip.dst);
}

/// The proxy's headers for this segment, on either leg, read back as what was written.
fn check_framing(inbound: &Inbound, payload: &[u8], vlan: Option<u16>) {
    let Some(mut flow) = FlowAddressing::from_client(inbound) else {
        panic!("no addressing from a frame of one family");
    };
    let mut expected = inbound.header;
    expected
        .options
        .sack
        .truncate(inbound.header.options.sack_blocks_that_fit());
    for leg in [Leg::Server, Leg::Client] {
        let mut out = [0u8; MAX_HEADERS_LEN];
        let len = flow.write_headers(leg, &inbound.header, payload, &mut out);
        let mut written = out[..len].to_vec();
        written.extend_from_slice(payload);
        let back = Inbound::read(&written).unwrap_or_else(|e| {
            panic!("the proxy's own frame for the {leg:?} leg does not read back: {e}")
        });
        assert_eq!(back.header, expected, "{leg:?} leg");
        assert_eq!(&written[back.payload_offset..], payload);
        let addresses = match leg {
            Leg::Server => (inbound.src, inbound.dst),
            Leg::Client => (inbound.dst, inbound.src),
        };
        assert_eq!((back.src, back.dst), addresses);
        assert_eq!(parse_frame(&written).map(|s| s.vlan), Ok(vlan));
    }
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// A translation made of the MAC addresses, applied to a segment whose checksum is right.
fn check_translation(macs: &[u8], tcp_bytes: &[u8], src: IpAddr, dst: IpAddr) {
    let translation = Translation {
        seq_delta: be32(macs, 0),
        ack_delta: be32(macs, 4),
        tsval_delta: be32(macs, 8),
        tsecr_delta: be32(macs, 2),
        window_scale: (macs[11] & 1 != 0).then_some((macs[10] & 15, macs[11] >> 4)),
    };
    let mut rewritten = tcp_bytes.to_vec();
    if translation.apply(&mut rewritten).is_err() {
        assert_eq!(rewritten, tcp_bytes, "a failed rewrite changed the segment");
        return;
    }
    let valid = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            TcpSegment::new_checked(&rewritten[..]).is_ok_and(|t| t.verify_checksum_v4(s, d))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            TcpSegment::new_checked(&rewritten[..]).is_ok_and(|t| t.verify_checksum_v6(s, d))
        }
        _ => false,
    };
    assert!(valid, "the checksum is wrong after {translation:?}");
    let before = TcpSegment::new_checked(tcp_bytes).expect("checked by the caller");
    let after = TcpSegment::new_checked(&rewritten[..]).expect("checked above");
    assert_eq!(before.payload(), after.payload());
    assert_eq!(
        after.seq_number(),
        before.seq_number().wrapping_add(translation.seq_delta)
    );
    let ack = if before.flags() & tollgate_core::wire::tcp::flags::ACK != 0 {
        before.ack_number().wrapping_add(translation.ack_delta)
    } else {
        before.ack_number()
    };
    assert_eq!(after.ack_number(), ack);
    if let (Ok(old), Ok(new)) = (SegmentHeader::parse(&before), SegmentHeader::parse(&after)) {
        let shifted: Vec<_> = old
            .options
            .sack
            .iter()
            .map(|(l, r)| {
                (
                    SeqNumber(l.0.wrapping_add(translation.ack_delta)),
                    SeqNumber(r.0.wrapping_add(translation.ack_delta)),
                )
            })
            .collect();
        assert_eq!(new.options.sack.as_slice(), &shifted[..]);
        let timestamps = old.options.timestamps.map(|(tsval, tsecr)| {
            (
                tsval.wrapping_add(translation.tsval_delta),
                tsecr.wrapping_add(translation.tsecr_delta),
            )
        });
        assert_eq!(new.options.timestamps, timestamps);
        let window = match translation.window_scale {
            Some((from, to)) if before.flags() & tollgate_core::wire::tcp::flags::SYN == 0 => {
                let bytes = u64::from(old.window) << from.min(14);
                (bytes >> to.min(14)).min(u64::from(u16::MAX)) as u16
            }
            _ => old.window,
        };
        assert_eq!(new.window, window);
    }
}
