//! Header emitters: the other half of the views. Each writes one header into the front of a
//! buffer the caller sized (the proxy's frames are written in place, with no allocation) and
//! returns its length; an IPv4 header carries its checksum, a transport header gets its own
//! once the payload is known ([`super::checksum`]). The proxy's framing, the synthetic frames
//! of tests and tools, and the fuzz seeds all write headers through these.
//!
//! Each emitter panics if the buffer is shorter than the header: the caller owns the size.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;

/// The Ethernet header's length without VLAN tags.
pub const ETHERNET_LEN: usize = 14;
/// One 802.1Q / 802.1ad tag.
pub const VLAN_TAG_LEN: usize = 4;
/// An IPv4 header without options.
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const UDP_LEN: usize = 8;
/// A TCP header without options.
pub const TCP_LEN: usize = 20;

/// The IPv4 Don't Fragment flag, in the flags-and-offset word.
pub const IPV4_DONT_FRAGMENT: u16 = 0x4000;
/// The IPv4 More Fragments flag, in the flags-and-offset word.
pub const IPV4_MORE_FRAGMENTS: u16 = 0x2000;

/// Destination and source MAC, the `(tpid, tci)` tags outermost first, then the EtherType;
/// returns the length written.
pub fn ethernet(
    out: &mut [u8],
    dst: [u8; 6],
    src: [u8; 6],
    tags: &[(u16, u16)],
    ethertype: u16,
) -> usize {
    out[0..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    let mut at = 12;
    for (tpid, tci) in tags {
        out[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
        out[at + 2..at + 4].copy_from_slice(&tci.to_be_bytes());
        at += VLAN_TAG_LEN;
    }
    out[at..at + 2].copy_from_slice(&ethertype.to_be_bytes());
    at + 2
}

/// An IPv4 header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// DSCP and ECN.
    pub tos: u8,
    pub id: u16,
    /// Flags and fragment offset (in 8-byte units).
    pub flags_and_offset: u16,
    pub ttl: u8,
    /// Whole 32-bit words of options.
    pub options: &'a [u8],
    /// What follows the header.
    pub payload_len: usize,
}

impl Ipv4Header<'_> {
    /// A plain header: no options, Don't Fragment, TTL 64.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload_len: usize) -> Self {
        Ipv4Header {
            src,
            dst,
            protocol,
            tos: 0,
            id: 0,
            flags_and_offset: IPV4_DONT_FRAGMENT,
            ttl: 64,
            options: &[],
            payload_len,
        }
    }

    pub fn header_len(&self) -> usize {
        IPV4_LEN + self.options.len()
    }

    /// Writes the header with its checksum; returns its length.
    pub fn emit(&self, out: &mut [u8]) -> usize {
        let len = self.header_len();
        let ip = &mut out[..len];
        ip[0] = 0x40 | (len / 4) as u8;
        ip[1] = self.tos;
        ip[2..4].copy_from_slice(&((len + self.payload_len) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&self.id.to_be_bytes());
        ip[6..8].copy_from_slice(&self.flags_and_offset.to_be_bytes());
        ip[8] = self.ttl;
        ip[9] = self.protocol;
        ip[10..12].copy_from_slice(&[0, 0]);
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        ip[20..].copy_from_slice(self.options);
        let sum = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        len
    }
}

/// An IPv6 header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Header {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    /// DSCP and ECN.
    pub traffic_class: u8,
    pub hop_limit: u8,
    /// What follows the header, extension headers included.
    pub payload_len: usize,
}

impl Ipv6Header {
    /// A plain header: traffic class 0, hop limit 64.
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload_len: usize) -> Self {
        Ipv6Header {
            src,
            dst,
            next_header,
            traffic_class: 0,
            hop_limit: 64,
            payload_len,
        }
    }

    /// Writes the header (the flow label is 0); returns its length.
    pub fn emit(&self, out: &mut [u8]) -> usize {
        let ip = &mut out[..IPV6_LEN];
        ip[0] = 0x60 | (self.traffic_class >> 4);
        ip[1] = self.traffic_class << 4;
        ip[2..4].copy_from_slice(&[0, 0]);
        ip[4..6].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
        ip[6] = self.next_header;
        ip[7] = self.hop_limit;
        ip[8..24].copy_from_slice(&self.src.octets());
        ip[24..40].copy_from_slice(&self.dst.octets());
        IPV6_LEN
    }
}

/// A UDP header for `payload_len` bytes of payload, its checksum 0 (to be filled in over the
/// payload); returns its length.
pub fn udp(out: &mut [u8], src_port: u16, dst_port: u16, payload_len: usize) -> usize {
    out[0..2].copy_from_slice(&src_port.to_be_bytes());
    out[2..4].copy_from_slice(&dst_port.to_be_bytes());
    out[4..6].copy_from_slice(&((UDP_LEN + payload_len) as u16).to_be_bytes());
    out[6..8].copy_from_slice(&[0, 0]);
    UDP_LEN
}

/// A TCP header without options (data offset 5), its checksum and urgent pointer 0; returns
/// its length. Headers with options are `tcp::segment::SegmentHeader::emit`'s.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    out: &mut [u8],
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
) -> usize {
    out[0..2].copy_from_slice(&src_port.to_be_bytes());
    out[2..4].copy_from_slice(&dst_port.to_be_bytes());
    out[4..8].copy_from_slice(&seq.to_be_bytes());
    out[8..12].copy_from_slice(&ack.to_be_bytes());
    out[12] = 5 << 4;
    out[13] = flags;
    out[14..16].copy_from_slice(&window.to_be_bytes());
    out[16..20].copy_from_slice(&[0, 0, 0, 0]);
    TCP_LEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN};
    use crate::wire::ip::{PROTO_TCP, PROTO_UDP};
    use crate::wire::tcp::flags;
    use crate::wire::{parse_frame, EthernetFrame, Ipv4Packet, Ipv6Packet, TcpSegment};

    const V4: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 2));

    #[test]
    fn emitted_headers_read_back_through_the_views() {
        // IPv4 in QinQ, with an option word, TCP after it.
        let mut frame = [0u8; 80];
        let tags = [(ETHERTYPE_QINQ, 10), (ETHERTYPE_VLAN, 20)];
        let l3 = ethernet(&mut frame, [2; 6], [4; 6], &tags, ETHERTYPE_IPV4);
        assert_eq!(l3, ETHERNET_LEN + 2 * VLAN_TAG_LEN);
        let ip = Ipv4Header {
            tos: 0x02,
            id: 7,
            options: &[1, 1, 1, 0],
            ..Ipv4Header::new(V4.0, V4.1, PROTO_TCP, TCP_LEN)
        };
        let l4 = l3 + ip.emit(&mut frame[l3..]);
        let end = l4 + tcp(&mut frame[l4..], 40_000, 443, 1, 2, flags::SYN, 1024);
        let sum = checksum::transport_checksum_v4(V4.0, V4.1, PROTO_TCP, &frame[l4..end]);
        frame[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());

        let eth = EthernetFrame::new_checked(&frame[..end]).unwrap();
        assert_eq!(eth.ethertype(), ETHERTYPE_IPV4);
        let v4 = Ipv4Packet::new_checked(&frame[l3..end]).unwrap();
        assert_eq!((v4.src(), v4.dst(), v4.protocol()), (V4.0, V4.1, PROTO_TCP));
        assert_eq!(v4.header_len(), 24);
        assert!(checksum::verify(&frame[l3..l4]));
        let seg = TcpSegment::new_checked(&frame[l4..end]).unwrap();
        assert_eq!(
            (seg.src_port(), seg.dst_port(), seg.flags()),
            (40_000, 443, flags::SYN)
        );
        assert!(checksum::verify_transport_v4(
            V4.0,
            V4.1,
            PROTO_TCP,
            &frame[l4..end]
        ));
        let summary = parse_frame(&frame[..end]).unwrap();
        assert_eq!(summary.ip.unwrap().ports, Some((40_000, 443)));
    }

    #[test]
    fn an_ipv6_udp_frame_reads_back() {
        let (src, dst) = ("2001:2::1".parse().unwrap(), "2001:2::2".parse().unwrap());
        let mut frame = [0u8; 70];
        let l3 = ethernet(&mut frame, [2; 6], [4; 6], &[], ETHERTYPE_IPV6);
        let ip = Ipv6Header {
            traffic_class: 0xb8,
            ..Ipv6Header::new(src, dst, PROTO_UDP, UDP_LEN + 4)
        };
        let l4 = l3 + ip.emit(&mut frame[l3..]);
        let end = l4 + udp(&mut frame[l4..], 5000, 53, 4) + 4;
        let v6 = Ipv6Packet::new_checked(&frame[l3..end]).unwrap();
        assert_eq!(
            (v6.src(), v6.dst(), v6.next_header()),
            (src, dst, PROTO_UDP)
        );
        assert_eq!(v6.traffic_class(), 0xb8);
        let summary = parse_frame(&frame[..end]).unwrap();
        let ip = summary.ip.unwrap();
        assert_eq!((ip.ports, ip.l4_payload_len), (Some((5000, 53)), 4));
    }
}
