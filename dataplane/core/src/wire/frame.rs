//! The one call the worker makes per received frame: everything the flow table and classifier
//! need, with every header on the way checked.
//!
//! This is the fast path. It validates what a forwarding decision relies on (lengths, the
//! transport header of whole packets and first fragments) and nothing it does not (checksums,
//! which the NIC checks; TCP options, which only the proxy reads).

use std::net::IpAddr;

use super::dccp::DccpPacket;
use super::ethernet::{EthernetFrame, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use super::icmp::{Icmpv4Packet, Icmpv6Packet};
use super::ip::{
    Fragment, PROTO_DCCP, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, PROTO_UDPLITE,
};
use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::sctp::SctpPacket;
use super::tcp::TcpSegment;
use super::udp::UdpDatagram;
use super::udplite::UdpLiteDatagram;
use super::Malformed;

/// What one frame is, as far as forwarding is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSummary {
    /// Outermost VLAN id.
    pub vlan: Option<u16>,
    /// EtherType after the VLAN tags.
    pub ethertype: u16,
    pub l3_offset: u16,
    /// `None` for frames that are not IP (ARP, LLDP, ...), which are not errors.
    pub ip: Option<IpSummary>,
}

/// The IP and transport layers of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpSummary {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Upper-layer protocol, after any IPv6 extension headers.
    pub protocol: u8,
    /// Offset from the frame start of the transport header; for a non-first fragment, of the
    /// fragment data.
    pub l4_offset: u16,
    pub fragment: Fragment,
    /// IPv4 total length, or IPv6 40 + payload length: the frame may be longer (padding).
    pub ip_len: u16,
    /// (source, destination) for TCP, UDP, UDP-Lite, SCTP and DCCP. For ICMP and ICMPv6 echo
    /// request and reply, (identifier, identifier), so both directions share a flow key.
    /// `None` for anything else and for non-first fragments.
    pub ports: Option<(u16, u16)>,
    pub tcp_flags: Option<u8>,
    /// Transport payload bytes of an unfragmented TCP, UDP or UDP-Lite packet; 0 otherwise,
    /// since a fragment's share says nothing about the datagram's.
    pub l4_payload_len: u16,
}

/// Parses one Ethernet frame down to its transport header.
///
/// Always inlined: out of line, the summary goes back through memory and the caller waits on
/// those stores (measured with bench-fwd: about 25 cycles per frame once a second caller made
/// the compiler stop inlining it). Inlined, the worker keeps only the fields it reads.
#[inline(always)]
pub fn parse_frame(frame: &[u8]) -> Result<FrameSummary, Malformed> {
    // Every offset and length below then fits the summary's u16 fields.
    if frame.len() > usize::from(u16::MAX) {
        return Err(Malformed::FrameTooLong);
    }
    let ethernet = EthernetFrame::new_checked(frame)?;
    let ethertype = ethernet.ethertype();
    let l3_offset = ethernet.header_len();
    let ip = match ethertype {
        ETHERTYPE_IPV4 => Some(ipv4_summary(ethernet.payload(), l3_offset)?),
        ETHERTYPE_IPV6 => Some(ipv6_summary(ethernet.payload(), l3_offset)?),
        _ => None,
    };
    Ok(FrameSummary {
        vlan: ethernet.vlan_id(),
        ethertype,
        l3_offset: l3_offset as u16,
        ip,
    })
}

#[inline(always)]
fn ipv4_summary(l3: &[u8], l3_offset: usize) -> Result<IpSummary, Malformed> {
    let ip = Ipv4Packet::new_checked(l3)?;
    let protocol = ip.protocol();
    let fragment = ip.fragment();
    let transport = transport(protocol, ip.payload(), fragment, Family::V4)?;
    Ok(IpSummary {
        src: IpAddr::V4(ip.src()),
        dst: IpAddr::V4(ip.dst()),
        protocol,
        l4_offset: (l3_offset + ip.header_len()) as u16,
        fragment,
        ip_len: ip.total_len(),
        ports: transport.ports,
        tcp_flags: transport.tcp_flags,
        l4_payload_len: transport.payload_len,
    })
}

#[inline(always)]
fn ipv6_summary(l3: &[u8], l3_offset: usize) -> Result<IpSummary, Malformed> {
    let ip = Ipv6Packet::new_checked(l3)?;
    let upper = ip.upper_layer()?;
    let l4 = ip.upper_layer_bytes(&upper);
    let transport = transport(upper.protocol, l4, upper.fragment, Family::V6)?;
    Ok(IpSummary {
        src: IpAddr::V6(ip.src()),
        dst: IpAddr::V6(ip.dst()),
        protocol: upper.protocol,
        l4_offset: (l3_offset + upper.offset) as u16,
        fragment: upper.fragment,
        ip_len: ip.total_len() as u16,
        ports: transport.ports,
        tcp_flags: transport.tcp_flags,
        l4_payload_len: transport.payload_len,
    })
}

/// ICMP and ICMPv6 are different protocols with different numbers; each counts only under its
/// own IP version.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

struct Transport {
    ports: Option<(u16, u16)>,
    tcp_flags: Option<u8>,
    payload_len: u16,
}

/// What a packet without a parsed transport header reports.
const OPAQUE: Transport = Transport {
    ports: None,
    tcp_flags: None,
    payload_len: 0,
};

/// Validates the transport header in `l4` (the IP payload, or the first fragment's share of
/// it) and pulls out the flow-key fields.
// Always: once per frame on the worker's path, and a call there costs more
// than the copy in each of the two IP summaries.
#[inline(always)]
fn transport(
    protocol: u8,
    l4: &[u8],
    fragment: Fragment,
    family: Family,
) -> Result<Transport, Malformed> {
    let whole = match fragment {
        Fragment::NonFirst => return Ok(OPAQUE),
        Fragment::First => false,
        Fragment::None => true,
    };
    let payload_len = |len: usize| if whole { len as u16 } else { 0 };
    let transport = match protocol {
        PROTO_TCP => {
            let tcp = TcpSegment::new_checked(l4)?;
            Transport {
                ports: Some((tcp.src_port(), tcp.dst_port())),
                tcp_flags: Some(tcp.flags()),
                payload_len: payload_len(tcp.payload().len()),
            }
        }
        PROTO_UDP => {
            let udp = if whole {
                UdpDatagram::new_checked(l4)?
            } else {
                UdpDatagram::new_first_fragment(l4)?
            };
            Transport {
                ports: Some((udp.src_port(), udp.dst_port())),
                tcp_flags: None,
                payload_len: payload_len(udp.payload().len()),
            }
        }
        PROTO_UDPLITE => {
            let udplite = if whole {
                UdpLiteDatagram::new_checked(l4)?
            } else {
                UdpLiteDatagram::new_first_fragment(l4)?
            };
            Transport {
                ports: Some((udplite.src_port(), udplite.dst_port())),
                tcp_flags: None,
                payload_len: payload_len(udplite.payload().len()),
            }
        }
        PROTO_SCTP => {
            let sctp = SctpPacket::new_checked(l4)?;
            Transport {
                ports: Some((sctp.src_port(), sctp.dst_port())),
                ..OPAQUE
            }
        }
        PROTO_DCCP => {
            let dccp = DccpPacket::new_checked(l4)?;
            Transport {
                ports: Some((dccp.src_port(), dccp.dst_port())),
                ..OPAQUE
            }
        }
        PROTO_ICMP if family == Family::V4 => {
            let icmp = Icmpv4Packet::new_checked(l4)?;
            Transport {
                ports: icmp.echo_identifier().map(|id| (id, id)),
                ..OPAQUE
            }
        }
        PROTO_ICMPV6 if family == Family::V6 => {
            let icmp = Icmpv6Packet::new_checked(l4)?;
            Transport {
                ports: icmp.echo_identifier().map(|id| (id, id)),
                ..OPAQUE
            }
        }
        _ => OPAQUE,
    };
    Ok(transport)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::wire::dccp::DccpPacket;
    use crate::wire::ethernet::{ETHERTYPE_ARP, ETHERTYPE_QINQ, ETHERTYPE_VLAN};
    use crate::wire::icmp::{
        ICMPV4_ECHO_REPLY, ICMPV4_ECHO_REQUEST, ICMPV4_TIME_EXCEEDED, ICMPV6_ECHO_REPLY,
        ICMPV6_ECHO_REQUEST,
    };
    use crate::wire::ip::{
        PROTO_AH, PROTO_ESP, PROTO_GRE, PROTO_HOPOPT, PROTO_IPV6_FRAG, PROTO_IPV6_OPTS,
        PROTO_IPV6_ROUTE,
    };
    use crate::wire::tcp::flags;
    use crate::wire::test_frames::*;

    fn summary(frame: &[u8]) -> IpSummary {
        parse_frame(frame).unwrap().ip.unwrap()
    }

    fn tcp_payload() -> Vec<u8> {
        tcp(
            40000,
            10000,
            flags::PSH | flags::ACK,
            &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            b"ctcp!",
        )
    }

    #[test]
    fn ipv4_tcp() {
        let frame = ipv4_tcp_frame();
        let parsed = parse_frame(&frame).unwrap();
        assert_eq!(parsed.vlan, None);
        assert_eq!(parsed.ethertype, ETHERTYPE_IPV4);
        assert_eq!(parsed.l3_offset, 14);
        let ip = parsed.ip.unwrap();
        assert_eq!(ip.src, IpAddr::V4(Ipv4Addr::from(V4_A)));
        assert_eq!(ip.dst, IpAddr::V4(Ipv4Addr::from(V4_B)));
        assert_eq!(ip.protocol, PROTO_TCP);
        assert_eq!(ip.l4_offset, 34);
        assert_eq!(ip.fragment, Fragment::None);
        assert_eq!(ip.ip_len, 20 + 32 + 5);
        assert_eq!(ip.ports, Some((40000, 10000)));
        assert_eq!(ip.tcp_flags, Some(flags::PSH | flags::ACK));
        assert_eq!(ip.l4_payload_len, 5);
        assert_eq!(frame.len(), 14 + 57);
    }

    #[test]
    fn ipv4_udp() {
        let frame = ethernet(
            &[],
            ETHERTYPE_IPV4,
            &ipv4(PROTO_UDP, &udp(5353, 53, b"query")),
        );
        let ip = summary(&frame);
        assert_eq!(ip.protocol, PROTO_UDP);
        assert_eq!(ip.ports, Some((5353, 53)));
        assert_eq!(ip.tcp_flags, None);
        assert_eq!(ip.l4_payload_len, 5);
        assert_eq!(ip.ip_len, 33);
    }

    #[test]
    fn ipv4_options() {
        let options = [1, 7, 7, 4, 0, 0, 0, 0, 0, 0, 0, 0];
        let packet = ipv4_with(PROTO_TCP, &options, 0, &tcp_payload());
        let frame = ethernet(&[], ETHERTYPE_IPV4, &packet);
        let ip = summary(&frame);
        assert_eq!(ip.l4_offset, 14 + 32);
        assert_eq!(ip.ports, Some((40000, 10000)));

        let options = [1, 7, 12, 4];
        let packet = ipv4_with(PROTO_TCP, &options, 0, &tcp_payload());
        let frame = ethernet(&[], ETHERTYPE_IPV4, &packet);
        assert_eq!(parse_frame(&frame).unwrap_err(), Malformed::Ipv4BadOption);
    }

    #[test]
    fn ipv4_fragments() {
        // First fragment: 8-byte-aligned share of a big UDP datagram whose length counts it all.
        let mut datagram = udp(4500, 4500, &[0x77; 2000]);
        datagram.truncate(1480);
        let frame = ethernet(
            &[],
            ETHERTYPE_IPV4,
            &ipv4_with(PROTO_UDP, &[], 0x2000, &datagram),
        );
        let ip = summary(&frame);
        assert_eq!(ip.fragment, Fragment::First);
        assert_eq!(ip.ports, Some((4500, 4500)));
        assert_eq!(ip.l4_payload_len, 0);

        // Non-first fragment: no transport header, and none needed.
        let frame = ethernet(
            &[],
            ETHERTYPE_IPV4,
            &ipv4_with(PROTO_UDP, &[], 185, &[0x77; 3]),
        );
        let ip = summary(&frame);
        assert_eq!(ip.fragment, Fragment::NonFirst);
        assert_eq!(ip.protocol, PROTO_UDP);
        assert_eq!(ip.l4_offset, 34);
        assert_eq!(ip.ports, None);
        assert_eq!(ip.tcp_flags, None);
        assert_eq!(ip.l4_payload_len, 0);

        // A first fragment too short for the TCP header it must carry.
        let frame = ethernet(
            &[],
            ETHERTYPE_IPV4,
            &ipv4_with(PROTO_TCP, &[], 0x2000, &tcp_payload()[..16]),
        );
        assert_eq!(parse_frame(&frame).unwrap_err(), Malformed::TcpTruncated);

        let mut first = tcp_payload();
        first.truncate(24);
        let frame = ethernet(
            &[],
            ETHERTYPE_IPV4,
            &ipv4_with(PROTO_TCP, &[], 0x2000, &first),
        );
        assert_eq!(
            parse_frame(&frame).unwrap_err(),
            Malformed::TcpBadDataOffset
        );
    }

    #[test]
    fn ipv6_tcp() {
        let frame = ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_TCP, &tcp_payload()));
        let parsed = parse_frame(&frame).unwrap();
        assert_eq!(parsed.ethertype, ETHERTYPE_IPV6);
        let ip = parsed.ip.unwrap();
        assert_eq!(ip.src, IpAddr::V6(Ipv6Addr::from(V6_A)));
        assert_eq!(ip.dst, IpAddr::V6(Ipv6Addr::from(V6_B)));
        assert_eq!(ip.protocol, PROTO_TCP);
        assert_eq!(ip.l4_offset, 54);
        assert_eq!(ip.ip_len, 40 + 37);
        assert_eq!(ip.ports, Some((40000, 10000)));
        assert_eq!(ip.tcp_flags, Some(flags::PSH | flags::ACK));
        assert_eq!(ip.l4_payload_len, 5);
    }

    #[test]
    fn ipv6_extension_headers() {
        let mut payload = extension(PROTO_IPV6_ROUTE, &[1, 4, 0, 0, 0, 0]);
        payload.extend(extension(PROTO_IPV6_OPTS, &[0; 14]));
        payload.extend(extension(PROTO_UDP, &[1, 4, 0, 0, 0, 0]));
        payload.extend(udp(1000, 2000, b"x"));
        let frame = ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_HOPOPT, &payload));
        let ip = summary(&frame);
        assert_eq!(ip.protocol, PROTO_UDP);
        assert_eq!(ip.l4_offset, 14 + 40 + 32);
        assert_eq!(ip.ports, Some((1000, 2000)));
        assert_eq!(ip.l4_payload_len, 1);
        assert_eq!(usize::from(ip.ip_len), frame.len() - 14);
    }

    #[test]
    fn ipv6_fragments() {
        let mut first = fragment_header(PROTO_TCP, 0, true, 0xabcd);
        first.extend(tcp_payload());
        let frame = ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_IPV6_FRAG, &first));
        let ip = summary(&frame);
        assert_eq!(ip.fragment, Fragment::First);
        assert_eq!(ip.protocol, PROTO_TCP);
        assert_eq!(ip.l4_offset, 14 + 48);
        assert_eq!(ip.ports, Some((40000, 10000)));
        assert_eq!(ip.tcp_flags, Some(flags::PSH | flags::ACK));
        assert_eq!(ip.l4_payload_len, 0);

        let mut later = fragment_header(PROTO_TCP, 1232, false, 0xabcd);
        later.extend_from_slice(&[0x55; 3]);
        let frame = ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_IPV6_FRAG, &later));
        let ip = summary(&frame);
        assert_eq!(ip.fragment, Fragment::NonFirst);
        assert_eq!(ip.protocol, PROTO_TCP);
        assert_eq!(ip.l4_offset, 14 + 48);
        assert_eq!(ip.ports, None);
        assert_eq!(ip.tcp_flags, None);

        let mut short = fragment_header(PROTO_TCP, 0, true, 0xabcd);
        short.extend_from_slice(&tcp_payload()[..8]);
        let frame = ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_IPV6_FRAG, &short));
        assert_eq!(parse_frame(&frame).unwrap_err(), Malformed::TcpTruncated);
    }

    #[test]
    fn ipv6_authentication_header() {
        let mut payload = ah(PROTO_TCP, 12);
        payload.extend(tcp_payload());
        let frame = ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_AH, &payload));
        let ip = summary(&frame);
        assert_eq!(ip.protocol, PROTO_TCP);
        assert_eq!(ip.l4_offset, 14 + 40 + 24);
        assert_eq!(ip.ports, Some((40000, 10000)));
    }

    #[test]
    fn ipv6_too_many_extension_headers() {
        let mut payload = Vec::new();
        for _ in 0..9 {
            payload.extend(extension(PROTO_IPV6_OPTS, &[0; 6]));
        }
        payload.extend(udp(1, 2, b""));
        let frame = ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_IPV6_OPTS, &payload));
        assert_eq!(
            parse_frame(&frame).unwrap_err(),
            Malformed::Ipv6TooManyExtensionHeaders
        );
    }

    #[test]
    fn esp() {
        let esp = [0, 0, 0x10, 0, 0, 0, 0, 1, 0xde, 0xad];
        let frame = ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_ESP, &esp));
        let ip = summary(&frame);
        assert_eq!(ip.protocol, PROTO_ESP);
        assert_eq!(ip.ports, None);

        let frame = ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_ESP, &esp));
        let ip = summary(&frame);
        assert_eq!(ip.protocol, PROTO_ESP);
        assert_eq!(ip.l4_offset, 54);
        assert_eq!(ip.ports, None);
        assert_eq!(ip.l4_payload_len, 0);
    }

    #[test]
    fn icmp_echo_both_directions_share_ports() {
        let request = ethernet(
            &[],
            ETHERTYPE_IPV4,
            &ipv4(
                PROTO_ICMP,
                &icmp_echo(ICMPV4_ECHO_REQUEST, 0x1d1d, 1, b"ping"),
            ),
        );
        let reply = ethernet(
            &[],
            ETHERTYPE_IPV4,
            &ipv4(
                PROTO_ICMP,
                &icmp_echo(ICMPV4_ECHO_REPLY, 0x1d1d, 1, b"ping"),
            ),
        );
        assert_eq!(summary(&request).ports, Some((0x1d1d, 0x1d1d)));
        assert_eq!(summary(&reply).ports, Some((0x1d1d, 0x1d1d)));

        let error = ethernet(
            &[],
            ETHERTYPE_IPV4,
            &ipv4(
                PROTO_ICMP,
                &icmp_echo(ICMPV4_TIME_EXCEEDED, 0, 0, &[0x45; 28]),
            ),
        );
        assert_eq!(summary(&error).ports, None);

        let short = ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_ICMP, &[8, 0, 0, 0]));
        assert_eq!(parse_frame(&short).unwrap_err(), Malformed::IcmpTruncated);
    }

    #[test]
    fn icmpv6_echo_both_directions_share_ports() {
        for msg_type in [ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY] {
            let frame = ethernet(
                &[],
                ETHERTYPE_IPV6,
                &ipv6(PROTO_ICMPV6, &icmp_echo(msg_type, 77, 3, b"")),
            );
            let ip = summary(&frame);
            assert_eq!(ip.protocol, PROTO_ICMPV6);
            assert_eq!(ip.ports, Some((77, 77)));
        }
        let short = ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_ICMPV6, &[128, 0, 0, 0]));
        assert_eq!(parse_frame(&short).unwrap_err(), Malformed::Icmpv6Truncated);
        // ICMPv4's number under IPv6 is not ICMP: unknown protocol, no key.
        let frame = ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_ICMP, &[8, 0]));
        assert_eq!(summary(&frame).ports, None);
    }

    #[test]
    fn other_transports() {
        let sctp = [0x0b, 0x59, 0x0b, 0x5a, 0, 0, 0, 1, 0, 0, 0, 0];
        let frame = ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_SCTP, &sctp));
        assert_eq!(summary(&frame).ports, Some((2905, 2906)));
        let frame = ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_SCTP, &sctp[..8]));
        assert_eq!(parse_frame(&frame).unwrap_err(), Malformed::SctpTruncated);

        let dccp = [0x13, 0x88, 0x00, 0x50, 3, 0, 0, 0, 2 << 1, 0, 0, 1];
        assert!(DccpPacket::new_checked(&dccp[..]).is_ok());
        let frame = ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_DCCP, &dccp));
        assert_eq!(summary(&frame).ports, Some((5000, 80)));

        let udplite = [0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0, 1, 2, 3];
        let frame = ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_UDPLITE, &udplite));
        let ip = summary(&frame);
        assert_eq!(ip.ports, Some((12345, 53)));
        assert_eq!(ip.l4_payload_len, 3);

        let frame = ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_GRE, &[0; 4]));
        let ip = summary(&frame);
        assert_eq!(ip.protocol, PROTO_GRE);
        assert_eq!(ip.ports, None);
    }

    #[test]
    fn non_ip_frames() {
        let frame = ethernet(&[], ETHERTYPE_ARP, &[0, 1, 8, 0, 6, 4, 0, 1]);
        let parsed = parse_frame(&frame).unwrap();
        assert_eq!(parsed.ethertype, ETHERTYPE_ARP);
        assert_eq!(parsed.ip, None);
        assert_eq!(parsed.l3_offset, 14);
    }

    #[test]
    fn vlan_tags() {
        let packet = ipv4(PROTO_TCP, &tcp_payload());
        let frame = ethernet(&[(ETHERTYPE_VLAN, 0x2000 | 42)], ETHERTYPE_IPV4, &packet);
        let parsed = parse_frame(&frame).unwrap();
        assert_eq!(parsed.vlan, Some(42));
        assert_eq!(parsed.l3_offset, 18);
        assert_eq!(parsed.ip.unwrap().l4_offset, 38);
        assert_eq!(parsed.ip.unwrap().ports, Some((40000, 10000)));

        let tags = [(ETHERTYPE_QINQ, 100), (ETHERTYPE_VLAN, 200)];
        let frame = ethernet(&tags, ETHERTYPE_IPV4, &packet);
        let parsed = parse_frame(&frame).unwrap();
        assert_eq!(parsed.vlan, Some(100));
        assert_eq!(parsed.ethertype, ETHERTYPE_IPV4);
        assert_eq!(parsed.l3_offset, 22);
        assert_eq!(parsed.ip.unwrap().l4_offset, 42);

        let tags = [
            (ETHERTYPE_QINQ, 100),
            (ETHERTYPE_VLAN, 200),
            (ETHERTYPE_VLAN, 300),
        ];
        let frame = ethernet(&tags, ETHERTYPE_IPV4, &packet);
        assert_eq!(parse_frame(&frame).unwrap_err(), Malformed::VlanTooManyTags);
    }

    /// Every prefix of a valid frame is rejected with a reason, never a panic; only the whole
    /// frame parses.
    fn check_every_truncation(frame: &[u8]) {
        let full = parse_frame(frame).unwrap();
        for len in 0..frame.len() {
            match parse_frame(&frame[..len]) {
                Ok(parsed) => panic!("prefix of {len} bytes parsed: {parsed:?}"),
                Err(malformed) => assert!(Malformed::ALL.contains(&malformed)),
            }
        }
        assert_eq!(parse_frame(frame), Ok(full));
    }

    #[test]
    fn truncations_ipv4_tcp() {
        check_every_truncation(&ipv4_tcp_frame());
    }

    #[test]
    fn truncations_ipv6_udp() {
        check_every_truncation(&ipv6_udp_frame());
    }

    #[test]
    fn truncations_vlan_ipv6_extension_headers() {
        let mut payload = extension(PROTO_IPV6_FRAG, &[0; 6]);
        payload.extend(fragment_header(PROTO_TCP, 0, true, 9));
        payload.extend(tcp_payload());
        let frame = ethernet(
            &[(ETHERTYPE_QINQ, 1), (ETHERTYPE_VLAN, 2)],
            ETHERTYPE_IPV6,
            &ipv6(PROTO_HOPOPT, &payload),
        );
        check_every_truncation(&frame);
    }

    #[test]
    fn ethernet_padding() {
        let mut frame = ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_UDP, &udp(1, 2, b"hi")));
        let exact = summary(&frame);
        frame.resize(60, 0);
        let padded = summary(&frame);
        assert_eq!(padded, exact);
        assert_eq!(padded.ip_len, 30);
        assert_eq!(padded.l4_payload_len, 2);

        let mut frame = ethernet(
            &[],
            ETHERTYPE_IPV6,
            &ipv6(PROTO_TCP, &tcp(1, 2, 0, &[], &[])),
        );
        frame.resize(100, 0xff);
        assert_eq!(summary(&frame).l4_payload_len, 0);
    }

    #[test]
    fn tcp_bad_data_offset() {
        let mut segment = tcp_payload();
        segment[12] = 4 << 4;
        let frame = ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_TCP, &segment));
        assert_eq!(
            parse_frame(&frame).unwrap_err(),
            Malformed::TcpBadDataOffset
        );
        segment[12] = 15 << 4;
        segment.truncate(40);
        let frame = ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_TCP, &segment));
        assert_eq!(
            parse_frame(&frame).unwrap_err(),
            Malformed::TcpBadDataOffset
        );
    }

    #[test]
    fn udp_bad_length() {
        let mut datagram = udp(1, 2, b"abcd");
        datagram[5] = 13;
        let frame = ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_UDP, &datagram));
        assert_eq!(parse_frame(&frame).unwrap_err(), Malformed::UdpBadLength);
        datagram[5] = 4;
        let frame = ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_UDP, &datagram));
        assert_eq!(parse_frame(&frame).unwrap_err(), Malformed::UdpBadLength);
        // UDP length beyond the IP payload, though not beyond the padded frame.
        datagram[5] = 13;
        let mut frame = ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_UDP, &datagram));
        frame.resize(60, 0);
        assert_eq!(parse_frame(&frame).unwrap_err(), Malformed::UdpBadLength);
    }

    #[test]
    fn frame_too_long() {
        let mut frame = ipv4_tcp_frame();
        frame.resize(65535, 0);
        assert!(parse_frame(&frame).is_ok());
        frame.push(0);
        assert_eq!(parse_frame(&frame).unwrap_err(), Malformed::FrameTooLong);
    }

    /// Small, fast, deterministic; good enough to spray bytes.
    struct XorShift(u64);

    impl XorShift {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next_u64() % bound as u64) as usize
        }
    }

    #[test]
    fn garbage_never_panics() {
        let seeds = [
            ipv4_tcp_frame(),
            ipv6_udp_frame(),
            ethernet(
                &[],
                ETHERTYPE_IPV4,
                &ipv4(PROTO_UDP, &udp(500, 4500, b"ike")),
            ),
            ethernet(
                &[(ETHERTYPE_VLAN, 5)],
                ETHERTYPE_IPV6,
                &ipv6(PROTO_HOPOPT, &extension(PROTO_IPV6_FRAG, &[0; 6])),
            ),
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let (mut parsed, mut common) = (0, 0);
        for round in 0..100_000 {
            let len = rng.below(200);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            match round % 4 {
                // A valid Ethernet + IP header in front, random bytes behind.
                0 | 1 => {
                    let seed = &seeds[round % 2];
                    let keep = len.min(34 + rng.below(30)).min(seed.len());
                    bytes[..keep].copy_from_slice(&seed[..keep]);
                }
                // A whole valid frame with a few bytes flipped.
                2 => {
                    bytes = seeds[rng.below(seeds.len())].clone();
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(bytes.len());
                        bytes[at] ^= 1 << rng.below(8);
                    }
                    bytes.truncate(rng.below(bytes.len() + 1));
                }
                _ => {}
            }
            if parse_frame(&bytes).is_ok() {
                parsed += 1;
            }
            crate::wire::exercise::exercise_views(&bytes);
            if crate::wire::exercise::common_shape_agrees(&bytes) {
                common += 1;
            }
        }
        // The seeded rounds must reach past the Ethernet header, or the test proves little.
        assert!(parsed > 1_000, "{parsed}");
        assert!(common > 1_000, "{common}");
    }
}
