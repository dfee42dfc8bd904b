//! Every header view at every plausible position, every accessor called, with the promises
//! that hold whatever the bytes, and the common-shape parser held to the general one: shared by
//! the parsers' garbage test and the `parse_frame` fuzz target (crate feature `fuzzing`), so
//! both exercise the same surface.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ethernet::ETHERTYPE_IPV4;
use super::ip::{Fragment, PROTO_TCP, PROTO_UDP};
use super::tcp::flags;
use super::{
    common_ipv4, parse_frame, CommonIpv4, DccpPacket, EthernetFrame, Icmpv4Packet, Icmpv6Packet,
    Ipv4Packet, Ipv6Packet, SctpPacket, TcpOption, TcpOptions, TcpSegment, UdpDatagram,
    UdpLiteDatagram,
};

/// [`common_ipv4`] takes exactly the frames [`parse_frame`] finds to be of the common shape
/// (untagged IPv4 without options or fragmentation, carrying TCP or UDP), and reads the same
/// fields from them. Returns whether it took this one, so callers can show they reached it.
pub fn common_shape_agrees(bytes: &[u8]) -> bool {
    let common = common_ipv4(bytes);
    let expected = parse_frame(bytes).ok().and_then(|summary| {
        let ip = summary.ip?;
        let shape = summary.vlan.is_none()
            && summary.ethertype == ETHERTYPE_IPV4
            && summary.l3_offset == 14
            && ip.l4_offset == 34
            && ip.fragment == Fragment::None
            && matches!(ip.protocol, PROTO_TCP | PROTO_UDP);
        let (IpAddr::V4(src), IpAddr::V4(dst), Some((src_port, dst_port))) =
            (ip.src, ip.dst, ip.ports)
        else {
            return None;
        };
        shape.then_some(CommonIpv4 {
            src: src.into(),
            dst: dst.into(),
            protocol: ip.protocol,
            src_port,
            dst_port,
            tcp_flags: ip.tcp_flags,
        })
    });
    assert_eq!(
        common, expected,
        "the common-shape parser and parse_frame disagree"
    );
    common.is_some()
}

/// Every view at every plausible header position, every accessor called: none may panic, and
/// each view's lengths agree with the bytes it was given.
pub fn exercise_views(bytes: &[u8]) {
    if let Ok(frame) = EthernetFrame::new_checked(bytes) {
        black_box((
            frame.dst(),
            frame.src(),
            frame.ethertype(),
            frame.header_len(),
        ));
        black_box((frame.outer_vlan(), frame.inner_vlan(), frame.vlan_id()));
        black_box((frame.vlan_tag_count(), frame.payload()));
    }
    let (any_v4, any_v6) = (Ipv4Addr::new(198, 18, 0, 1), Ipv6Addr::LOCALHOST);
    for start in [0, 14, 18, 22, 34, 38, 42, 54, 58, 62] {
        let Some(b) = bytes.get(start..) else {
            break;
        };
        if let Ok(ip) = Ipv4Packet::new_checked(b) {
            black_box((ip.version(), ip.header_len(), ip.dscp(), ip.ecn()));
            black_box((ip.total_len(), ip.identification(), ip.dont_fragment()));
            black_box((ip.more_fragments(), ip.fragment_offset(), ip.fragment()));
            black_box((ip.ttl(), ip.protocol(), ip.checksum(), ip.src(), ip.dst()));
            black_box((
                ip.verify_checksum(),
                ip.header(),
                ip.options(),
                ip.payload(),
            ));
        }
        if let Ok(ip) = Ipv6Packet::new_checked(b) {
            black_box((ip.version(), ip.traffic_class(), ip.flow_label()));
            black_box((ip.payload_len(), ip.total_len(), ip.next_header()));
            black_box((ip.hop_limit(), ip.src(), ip.dst(), ip.payload()));
            let walked = ip.extension_headers().take(1_000).count();
            assert!(walked < 1_000, "the extension header walk does not end");
            if let Ok(upper) = ip.upper_layer() {
                let l4 = ip.upper_layer_bytes(&upper);
                assert!(l4.len() <= ip.payload().len());
            }
        }
        if let Ok(tcp) = TcpSegment::new_checked(b) {
            black_box((tcp.src_port(), tcp.dst_port(), tcp.seq_number()));
            black_box((
                tcp.ack_number(),
                tcp.header_len(),
                tcp.flags(),
                tcp.window(),
            ));
            black_box((tcp.checksum(), tcp.urgent_pointer(), tcp.options()));
            black_box(tcp.has_flags(flags::SYN));
            assert!(tcp.header_len() + tcp.payload().len() == b.len());
            let options = tcp.iter_options().take(100).count();
            assert!(options <= 40, "{options} options in 40 bytes");
            for option in tcp.iter_options() {
                if let Ok(TcpOption::Sack(blocks)) = option {
                    assert!(!blocks.is_empty() && blocks.len() <= 4);
                    black_box(blocks.as_slice());
                }
            }
            black_box(TcpOptions::new(b).take(100).count());
            black_box(tcp.verify_checksum_v4(any_v4, any_v4));
            black_box(tcp.verify_checksum_v6(any_v6, any_v6));
        }
        for udp in [
            UdpDatagram::new_checked(b),
            UdpDatagram::new_first_fragment(b),
        ]
        .into_iter()
        .flatten()
        {
            black_box((udp.src_port(), udp.dst_port(), udp.length(), udp.checksum()));
            black_box((udp.payload(), udp.verify_checksum_v4(any_v4, any_v4)));
            black_box(udp.verify_checksum_v6(any_v6, any_v6));
        }
        for udplite in [
            UdpLiteDatagram::new_checked(b),
            UdpLiteDatagram::new_first_fragment(b),
        ]
        .into_iter()
        .flatten()
        {
            black_box((udplite.src_port(), udplite.dst_port(), udplite.payload()));
            black_box((udplite.checksum(), udplite.checksum_coverage()));
        }
        if let Ok(sctp) = SctpPacket::new_checked(b) {
            black_box((sctp.src_port(), sctp.dst_port(), sctp.verification_tag()));
            black_box((sctp.checksum(), sctp.chunks()));
        }
        if let Ok(dccp) = DccpPacket::new_checked(b) {
            black_box((dccp.src_port(), dccp.dst_port(), dccp.header_len()));
            black_box((dccp.ccval(), dccp.checksum_coverage(), dccp.checksum()));
            black_box((dccp.packet_type(), dccp.sequence_number(), dccp.payload()));
        }
        if let Ok(icmp) = Icmpv4Packet::new_checked(b) {
            black_box((
                icmp.msg_type(),
                icmp.code(),
                icmp.checksum(),
                icmp.payload(),
            ));
            black_box((icmp.echo_identifier(), icmp.echo_sequence()));
            black_box(icmp.verify_checksum());
        }
        if let Ok(icmp) = Icmpv6Packet::new_checked(b) {
            black_box((icmp.msg_type(), icmp.code(), icmp.checksum(), icmp.body()));
            black_box((icmp.echo_identifier(), icmp.echo_sequence()));
            black_box(icmp.verify_checksum(any_v6, any_v6));
        }
    }
}
