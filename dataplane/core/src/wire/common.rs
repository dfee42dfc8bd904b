//! The shape most frames on a wire have, read in one pass: untagged Ethernet, IPv4 without
//! options and not a fragment, carrying TCP or UDP.
//!
//! [`parse_frame`](super::parse_frame) walks any frame layer by layer, each view checking its own
//! lengths, and gives a summary general enough for every protocol; for this shape that walk is
//! most of what a worker spends on a frame before its flow lookup. [`common_ipv4`] checks the
//! same things at fixed offsets and answers only for frames of this shape; for every other
//! frame (and every malformed one, which the full parser then counts by reason) it answers
//! `None` and the caller goes the general way. Whatever it accepts, `parse_frame` accepts with
//! the same fields: the unit tests and the `parse_frame` fuzz target hold it to that.

use super::ethernet::{ETHERTYPE_IPV4, HEADER_LEN as ETHERNET_LEN};
use super::field::{be16, be32};
use super::ip::{PROTO_TCP, PROTO_UDP};
use super::ipv4::{FLAG_MORE_FRAGMENTS, FRAGMENT_OFFSET_MASK, HEADER_LEN as IPV4_LEN};
use super::tcp::HEADER_LEN as TCP_LEN;
use super::udp::HEADER_LEN as UDP_LEN;

/// IPv4 version 4, header length five words: no options.
const VERSION_IHL: u8 = 0x45;
/// More-fragments and the fragment offset (the reserved bit and DF may be set).
const FRAGMENT_BITS: u16 = FLAG_MORE_FRAGMENTS | FRAGMENT_OFFSET_MASK;

/// What the flow table needs of a frame of the common shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonIpv4 {
    pub src: u32,
    pub dst: u32,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// The TCP flags byte; `None` for UDP.
    pub tcp_flags: Option<u8>,
}

/// The fields of an untagged IPv4 frame without options or fragmentation carrying a whole TCP
/// segment or UDP datagram, checked as [`parse_frame`](super::parse_frame) checks them; `None`
/// for any other frame.
#[inline(always)]
pub fn common_ipv4(frame: &[u8]) -> Option<CommonIpv4> {
    // Ethernet, IPv4 and the first eight bytes of the transport header, which is where both
    // ports and UDP's length are; TCP's data offset and flags follow.
    let head: &[u8; ETHERNET_LEN + IPV4_LEN + UDP_LEN] = frame.first_chunk()?;
    let ip = ETHERNET_LEN;
    let l4 = ETHERNET_LEN + IPV4_LEN;
    if frame.len() > usize::from(u16::MAX)
        || be16(head, 12) != ETHERTYPE_IPV4
        || head[ip] != VERSION_IHL
        || be16(head, ip + 6) & FRAGMENT_BITS != 0
    {
        return None;
    }
    let total_len = usize::from(be16(head, ip + 2));
    if total_len > frame.len() - ETHERNET_LEN {
        return None;
    }
    let l4_len = total_len.checked_sub(IPV4_LEN)?;
    let protocol = head[ip + 9];
    let tcp_flags = match protocol {
        PROTO_TCP => {
            let tcp: &[u8; TCP_LEN] = frame.get(l4..)?.first_chunk()?;
            let header_len = usize::from(tcp[12] >> 4) * 4;
            if l4_len < TCP_LEN || header_len < TCP_LEN || header_len > l4_len {
                return None;
            }
            Some(tcp[13])
        }
        PROTO_UDP => {
            let length = usize::from(be16(head, l4 + 4));
            if l4_len < UDP_LEN || length < UDP_LEN || length > l4_len {
                return None;
            }
            None
        }
        _ => return None,
    };
    Some(CommonIpv4 {
        src: be32(head, ip + 12),
        dst: be32(head, ip + 16),
        protocol,
        src_port: be16(head, l4),
        dst_port: be16(head, l4 + 2),
        tcp_flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::{ETHERTYPE_IPV6, ETHERTYPE_VLAN};
    use crate::wire::exercise::common_shape_agrees;
    use crate::wire::ip::PROTO_SCTP;
    use crate::wire::tcp::flags;
    use crate::wire::test_frames::*;

    fn v4(addr: [u8; 4]) -> u32 {
        u32::from_be_bytes(addr)
    }

    #[test]
    fn reads_tcp_and_udp_of_the_common_shape() {
        let segment = tcp(40000, 10000, flags::SYN, &[2, 4, 5, 0xb4], b"");
        let frame = ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_TCP, &segment));
        assert_eq!(
            common_ipv4(&frame),
            Some(CommonIpv4 {
                src: v4(V4_A),
                dst: v4(V4_B),
                protocol: PROTO_TCP,
                src_port: 40000,
                dst_port: 10000,
                tcp_flags: Some(flags::SYN),
            })
        );
        let frame = ethernet(
            &[],
            ETHERTYPE_IPV4,
            &ipv4(PROTO_UDP, &udp(500, 4500, b"ike")),
        );
        assert_eq!(
            common_ipv4(&frame),
            Some(CommonIpv4 {
                src: v4(V4_A),
                dst: v4(V4_B),
                protocol: PROTO_UDP,
                src_port: 500,
                dst_port: 4500,
                tcp_flags: None,
            })
        );
        // Ethernet padding after the datagram, as on a minimum-size frame.
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0; 17]);
        assert_eq!(common_ipv4(&padded), common_ipv4(&frame));
        // DF (and the reserved bit) do not make a fragment.
        let frame = ethernet(
            &[],
            ETHERTYPE_IPV4,
            &ipv4_with(PROTO_UDP, &[], 0xc000, &udp(1, 2, b"")),
        );
        assert!(common_ipv4(&frame).is_some());
    }

    #[test]
    fn leaves_every_other_shape_to_the_general_parser() {
        let segment = tcp(40000, 10000, flags::ACK, &[], b"data");
        let datagram = udp(500, 4500, b"ike");
        let others = [
            (
                "802.1Q tag",
                ethernet(
                    &[(ETHERTYPE_VLAN, 7)],
                    ETHERTYPE_IPV4,
                    &ipv4(PROTO_TCP, &segment),
                ),
            ),
            (
                "IPv4 options",
                ethernet(
                    &[],
                    ETHERTYPE_IPV4,
                    &ipv4_with(PROTO_TCP, &[1, 1, 1, 0], 0, &segment),
                ),
            ),
            (
                "first fragment",
                ethernet(
                    &[],
                    ETHERTYPE_IPV4,
                    &ipv4_with(PROTO_UDP, &[], 0x2000, &datagram),
                ),
            ),
            (
                "later fragment",
                ethernet(
                    &[],
                    ETHERTYPE_IPV4,
                    &ipv4_with(PROTO_UDP, &[], 0x0001, &datagram),
                ),
            ),
            (
                "SCTP",
                ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_SCTP, &[0; 16])),
            ),
            ("IPv6", ipv6_udp_frame()),
            (
                "IPv6 EtherType over an IPv4 header",
                ethernet(&[], ETHERTYPE_IPV6, &ipv4(PROTO_UDP, &datagram)),
            ),
        ];
        for (name, frame) in &others {
            assert_eq!(common_ipv4(frame), None, "{name}");
            assert!(!common_shape_agrees(frame), "{name}");
        }
    }

    #[test]
    fn declines_what_parse_frame_rejects() {
        let good = ethernet(
            &[],
            ETHERTYPE_IPV4,
            &ipv4(PROTO_TCP, &tcp(1, 2, flags::ACK, &[], b"abc")),
        );
        let udp_frame = ethernet(&[], ETHERTYPE_IPV4, &ipv4(PROTO_UDP, &udp(1, 2, b"abc")));
        let mut bad = Vec::new();
        // Truncated anywhere: inside the IPv4 header, inside the TCP header, short of the
        // total length.
        for len in [20, 33, 40, 53, good.len() - 1] {
            bad.push(good[..len].to_vec());
        }
        // Total length shorter than the headers, or longer than the frame.
        for total_len in [19u16, 39, 100] {
            let mut f = good.clone();
            f[16..18].copy_from_slice(&total_len.to_be_bytes());
            bad.push(f);
        }
        // TCP data offset below 5 words, or past the segment.
        for offset in [0x40u8, 0xf0] {
            let mut f = good.clone();
            f[46] = offset;
            bad.push(f);
        }
        // UDP length below the header, or past the IP payload.
        for length in [7u16, 12] {
            let mut f = udp_frame.clone();
            f[38..40].copy_from_slice(&length.to_be_bytes());
            bad.push(f);
        }
        // A frame longer than any length field can describe.
        let mut huge = good.clone();
        huge.resize(usize::from(u16::MAX) + 1, 0);
        bad.push(huge);
        for frame in &bad {
            assert_eq!(common_ipv4(frame), None, "{} bytes", frame.len());
            assert!(!common_shape_agrees(frame));
        }
        assert!(common_shape_agrees(&good) && common_shape_agrees(&udp_frame));
    }
}
