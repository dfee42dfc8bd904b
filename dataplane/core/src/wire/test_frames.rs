//! Frames built by hand for the parser's tests. Each function lays a header out the way its RFC
//! draws it, so a test reads as the packet it sends.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use super::ip::{PROTO_TCP, PROTO_UDP};
use super::tcp::flags;

pub(crate) const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub(crate) const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
/// RFC 2544 benchmarking addresses.
pub(crate) const V4_A: [u8; 4] = [198, 18, 0, 1];
pub(crate) const V4_B: [u8; 4] = [198, 19, 0, 2];
/// RFC 3849 documentation addresses.
pub(crate) const V6_A: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub(crate) const V6_B: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// MAC_A to MAC_B, with `(tpid, tci)` tags, outermost first.
pub(crate) fn ethernet(vlan_tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&MAC_B);
    frame.extend_from_slice(&MAC_A);
    for (tpid, tci) in vlan_tags {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&tci.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

pub(crate) fn ipv4(protocol: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(protocol, &[], 0, payload)
}

/// V4_A to V4_B with `options` (a multiple of 4 bytes) and the flags-and-fragment-offset word
/// as it goes on the wire; the header checksum is filled in.
pub(crate) fn ipv4_with(
    protocol: u8,
    options: &[u8],
    flags_and_offset: u16,
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0, "options must fill whole words");
    let header_len = 20 + options.len();
    let total_len = (header_len + payload.len()) as u16;
    let mut packet = vec![0x40 | (header_len / 4) as u8, 0];
    packet.extend_from_slice(&total_len.to_be_bytes());
    packet.extend_from_slice(&0x1234u16.to_be_bytes());
    packet.extend_from_slice(&flags_and_offset.to_be_bytes());
    packet.extend_from_slice(&[64, protocol, 0, 0]);
    packet.extend_from_slice(&V4_A);
    packet.extend_from_slice(&V4_B);
    packet.extend_from_slice(options);
    let sum = checksum::checksum(&packet);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// V6_A to V6_B; `payload` includes any extension headers.
pub(crate) fn ipv6(next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[next_header, 64]);
    packet.extend_from_slice(&V6_A);
    packet.extend_from_slice(&V6_B);
    packet.extend_from_slice(payload);
    packet
}

/// An extension header in the common format (hop-by-hop, routing, destination options): next
/// header, length in 8-byte units beyond the first, then `body`.
pub(crate) fn extension(next_header: u8, body: &[u8]) -> Vec<u8> {
    let len = 2 + body.len();
    assert_eq!(len % 8, 0, "extension headers fill whole 8-byte units");
    let mut header = vec![next_header, (len / 8 - 1) as u8];
    header.extend_from_slice(body);
    header
}

pub(crate) fn fragment_header(
    next_header: u8,
    offset: u16,
    more_fragments: bool,
    identification: u32,
) -> Vec<u8> {
    assert_eq!(offset % 8, 0);
    let mut header = vec![next_header, 0];
    header.extend_from_slice(&(offset | u16::from(more_fragments)).to_be_bytes());
    header.extend_from_slice(&identification.to_be_bytes());
    header
}

/// An authentication header with an `icv_len`-byte integrity check value (a multiple of 4).
pub(crate) fn ah(next_header: u8, icv_len: usize) -> Vec<u8> {
    let len = 12 + icv_len;
    assert_eq!(len % 4, 0);
    let mut header = vec![next_header, (len / 4 - 2) as u8, 0, 0];
    header.extend_from_slice(&0x0000_1000u32.to_be_bytes()); // SPI
    header.extend_from_slice(&1u32.to_be_bytes()); // sequence number
    header.resize(len, 0xa5);
    header
}

/// A TCP segment with `options` (a multiple of 4 bytes), window 65535 and a zero checksum.
pub(crate) fn tcp(
    src_port: u16,
    dst_port: u16,
    flags: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0, "options must fill whole words");
    let header_len = 20 + options.len();
    let mut segment = Vec::new();
    segment.extend_from_slice(&src_port.to_be_bytes());
    segment.extend_from_slice(&dst_port.to_be_bytes());
    segment.extend_from_slice(&1000u32.to_be_bytes());
    segment.extend_from_slice(&2000u32.to_be_bytes());
    segment.extend_from_slice(&[((header_len / 4) as u8) << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    segment.extend_from_slice(options);
    segment.extend_from_slice(payload);
    segment
}

pub(crate) fn tcp_checksum_v4(segment: &mut [u8], src: [u8; 4], dst: [u8; 4]) {
    segment[16..18].copy_from_slice(&[0, 0]);
    let value = checksum::transport_checksum_v4(
        Ipv4Addr::from(src),
        Ipv4Addr::from(dst),
        PROTO_TCP,
        segment,
    );
    segment[16..18].copy_from_slice(&value.to_be_bytes());
}

/// A UDP datagram with a zero (absent) checksum.
pub(crate) fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::new();
    datagram.extend_from_slice(&src_port.to_be_bytes());
    datagram.extend_from_slice(&dst_port.to_be_bytes());
    datagram.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    datagram
}

/// An ICMP echo-shaped message with its ICMPv4 checksum filled in.
pub(crate) fn icmp_echo(msg_type: u8, identifier: u16, sequence: u16, data: &[u8]) -> Vec<u8> {
    let mut message = vec![msg_type, 0, 0, 0];
    message.extend_from_slice(&identifier.to_be_bytes());
    message.extend_from_slice(&sequence.to_be_bytes());
    message.extend_from_slice(data);
    let sum = checksum::checksum(&message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    message
}

/// cTCP-looking traffic: port 40000 to 10000, timestamps, five bytes of data, checksums right.
pub(crate) fn ipv4_tcp_frame() -> Vec<u8> {
    let options = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let mut segment = tcp(40000, 10000, flags::PSH | flags::ACK, &options, b"ctcp!");
    tcp_checksum_v4(&mut segment, V4_A, V4_B);
    ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_TCP, &segment))
}

pub(crate) fn ipv6_udp_frame() -> Vec<u8> {
    let mut datagram = udp(500, 4500, b"ike");
    let value = checksum::transport_checksum_v6(
        Ipv6Addr::from(V6_A),
        Ipv6Addr::from(V6_B),
        PROTO_UDP,
        &datagram,
    );
    datagram[6..8].copy_from_slice(&value.to_be_bytes());
    ethernet(&[], ETHERTYPE_IPV6, &ipv6(PROTO_UDP, &datagram))
}
