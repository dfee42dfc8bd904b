//! The frames of a proxied flow: reading a received TCP frame into what the engine takes, and
//! writing the headers of a segment the engine sends.
//!
//! Transparency (issue 4, point 1) lives here. Every frame tollgate emits for a flow carries the
//! link-layer header of the real endpoints' own frames, VLAN tags included, copied from the
//! client's first frame (with the MAC addresses swapped toward the client), and the real
//! endpoints' addresses; the TTL (hop limit) and the DSCP of the TOS (traffic class) are those
//! the sending endpoint used, since a bump in the wire routes nothing. The ECN field is not
//! relayed: each leg is a congestion loop of its own, so it is the leg's endpoint's to set
//! (RFC 3168), and what a frame arrived with goes to the endpoint that receives it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::tcp::proxy::Leg;
use crate::tcp::segment::{checksum_v4, checksum_v6, Ecn, SegmentHeader};
use crate::wire::emit::{Ipv4Header, Ipv6Header, ETHERNET_LEN, IPV6_LEN, VLAN_TAG_LEN};
use crate::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::ip::PROTO_TCP;
use crate::wire::{parse_frame, Fragment, Malformed, TcpSegment};

/// Destination and source MAC, two tags, the EtherType.
const MAX_LINK_LEN: usize = ETHERNET_LEN + 2 * VLAN_TAG_LEN;
const MAX_TCP_HEADER: usize = 60;
/// The longest run of headers [`FlowAddressing::write_headers`] writes. Its IPv4 headers carry
/// Don't Fragment: tollgate never fragments, and the endpoints' path MTU discovery sees what
/// they would without it.
pub const MAX_HEADERS_LEN: usize = MAX_LINK_LEN + IPV6_LEN + MAX_TCP_HEADER;
const DEFAULT_TTL: u8 = 64;

/// Why a frame of a proxied flow cannot be given to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("the frame does not parse: {0}")]
    Malformed(Malformed),
    #[error("the TCP checksum is wrong")]
    BadChecksum,
    #[error("an IP fragment: the proxy takes whole segments only")]
    Fragment,
    #[error("more than two VLAN tags")]
    DeepEncapsulation,
    #[error("not TCP")]
    NotTcp,
}

/// A received TCP frame, read for the proxy. The payload stays where it is: `payload_offset` and
/// `payload_len` locate it in the frame, for the driver to keep it without a copy.
#[derive(Debug, Clone, Copy)]
pub struct Inbound {
    pub header: SegmentHeader,
    pub payload_offset: usize,
    pub payload_len: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL or hop limit, and TOS or traffic class, as the sender set them (the ECN field is
    /// also in `header.ecn`).
    pub ttl: u8,
    pub tos: u8,
    link: [u8; MAX_LINK_LEN],
    link_len: u8,
}

impl Inbound {
    /// Reads a frame, checking the TCP checksum: the proxy acknowledges what it accepts, so it
    /// must never accept a corrupted segment.
    pub fn read(frame: &[u8]) -> Result<Inbound, Unusable> {
        let summary = parse_frame(frame).map_err(Unusable::Malformed)?;
        let ip = summary.ip.ok_or(Unusable::NotTcp)?;
        if ip.protocol != PROTO_TCP {
            return Err(Unusable::NotTcp);
        }
        if ip.fragment != Fragment::None {
            return Err(Unusable::Fragment);
        }
        let l3 = usize::from(summary.l3_offset);
        if l3 > MAX_LINK_LEN {
            return Err(Unusable::DeepEncapsulation);
        }
        let l4 = usize::from(ip.l4_offset);
        // The IP length, not the frame's: Ethernet pads short frames.
        let end = (l3 + usize::from(ip.ip_len)).min(frame.len());
        let tcp_bytes = frame
            .get(l4..end)
            .ok_or(Unusable::Malformed(Malformed::TcpTruncated))?;
        let segment = TcpSegment::new_checked(tcp_bytes).map_err(Unusable::Malformed)?;
        let valid = match (ip.src, ip.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => segment.verify_checksum_v4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => segment.verify_checksum_v6(s, d),
            _ => false,
        };
        if !valid {
            return Err(Unusable::BadChecksum);
        }
        let mut header = SegmentHeader::parse(&segment).map_err(Unusable::Malformed)?;
        let payload_offset = l4 + segment.header_len();
        let (ttl, tos) = match ip.src {
            IpAddr::V4(_) => (frame[l3 + 8], frame[l3 + 1]),
            IpAddr::V6(_) => (frame[l3 + 7], (frame[l3] << 4) | (frame[l3 + 1] >> 4)),
        };
        header.ecn = Ecn::from_tos(tos);
        let mut link = [0u8; MAX_LINK_LEN];
        link[..l3].copy_from_slice(&frame[..l3]);
        Ok(Inbound {
            header,
            payload_offset,
            payload_len: end - payload_offset,
            src: ip.src,
            dst: ip.dst,
            ttl,
            tos,
            link,
            link_len: l3 as u8,
        })
    }
}

/// The client's and the server's address, of one family by construction.
#[derive(Debug, Clone, Copy)]
enum Addresses {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

/// Per flow: how to frame a segment for either leg.
#[derive(Debug, Clone)]
pub struct FlowAddressing {
    /// The client's link-layer header as received (toward the server); the MACs are swapped
    /// for frames toward the client.
    link: [u8; MAX_LINK_LEN],
    link_len: u8,
    addresses: Addresses,
    /// Indexed by the leg the frame goes out on: [toward the client, toward the server].
    ttl: [u8; 2],
    tos: [u8; 2],
    ipv4_id: [u16; 2],
}

impl FlowAddressing {
    /// From the client's first frame (its SYN, or the ACK completing a cookie handshake).
    pub fn from_client(frame: &Inbound) -> Option<FlowAddressing> {
        let addresses = match (frame.src, frame.dst) {
            (IpAddr::V4(c), IpAddr::V4(s)) => Addresses::V4(c, s),
            (IpAddr::V6(c), IpAddr::V6(s)) => Addresses::V6(c, s),
            _ => return None,
        };
        Some(FlowAddressing {
            link: frame.link,
            link_len: frame.link_len,
            addresses,
            ttl: [DEFAULT_TTL, frame.ttl],
            tos: [0, frame.tos],
            ipv4_id: [0, 0],
        })
    }

    /// Keeps the TTL and TOS of what each endpoint sends, for what is sent on its behalf.
    pub fn observe(&mut self, from: Leg, frame: &Inbound) {
        // Segments from the server go out (re-headered) toward the client.
        let i = from.other().index();
        self.ttl[i] = frame.ttl;
        self.tos[i] = frame.tos;
    }

    pub fn client(&self) -> IpAddr {
        match self.addresses {
            Addresses::V4(c, _) => IpAddr::V4(c),
            Addresses::V6(c, _) => IpAddr::V6(c),
        }
    }

    pub fn server(&self) -> IpAddr {
        match self.addresses {
            Addresses::V4(_, s) => IpAddr::V4(s),
            Addresses::V6(_, s) => IpAddr::V6(s),
        }
    }

    /// Writes the link, IP and TCP headers of `header` sent on `leg` with `payload` after them,
    /// checksums included, into `out`; returns their length. The payload itself is not
    /// written: the driver chains it (or copies it) after the headers.
    pub fn write_headers(
        &mut self,
        leg: Leg,
        header: &SegmentHeader,
        payload: &[u8],
        out: &mut [u8; MAX_HEADERS_LEN],
    ) -> usize {
        let i = leg.index();
        let link_len = usize::from(self.link_len);
        out[..link_len].copy_from_slice(&self.link[..link_len]);
        if leg == Leg::Client {
            // Toward the client the frame comes from the server's side.
            let (dst, src) = out[..12].split_at_mut(6);
            dst.swap_with_slice(src);
        }
        let tcp_len = header.header_len();
        let l4 = match self.addresses {
            Addresses::V4(client, server) => {
                let (s, d) = match leg {
                    Leg::Server => (client, server),
                    Leg::Client => (server, client),
                };
                out[link_len - 2..link_len].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
                let id = self.ipv4_id[i];
                self.ipv4_id[i] = id.wrapping_add(1);
                let ip = Ipv4Header {
                    tos: header.ecn.into_tos(self.tos[i]),
                    id,
                    ttl: self.ttl[i],
                    ..Ipv4Header::new(s, d, PROTO_TCP, tcp_len + payload.len())
                };
                let l4 = link_len + ip.emit(&mut out[link_len..]);
                let tcp = &mut out[l4..l4 + tcp_len];
                // `out` is long enough for any header `emit` writes.
                let _ = header.emit(tcp);
                let sum = checksum_v4(tcp, payload, s, d);
                tcp[16..18].copy_from_slice(&sum.to_be_bytes());
                l4
            }
            Addresses::V6(client, server) => {
                let (s, d) = match leg {
                    Leg::Server => (client, server),
                    Leg::Client => (server, client),
                };
                out[link_len - 2..link_len].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
                let ip = Ipv6Header {
                    traffic_class: header.ecn.into_tos(self.tos[i]),
                    hop_limit: self.ttl[i],
                    ..Ipv6Header::new(s, d, PROTO_TCP, tcp_len + payload.len())
                };
                let l4 = link_len + ip.emit(&mut out[link_len..]);
                let tcp = &mut out[l4..l4 + tcp_len];
                let _ = header.emit(tcp);
                let sum = checksum_v6(tcp, payload, s, d);
                tcp[16..18].copy_from_slice(&sum.to_be_bytes());
                l4
            }
        };
        l4 + tcp_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{self, Addressing, TcpHeader};
    use crate::tcp::segment::TcpFlags;
    use crate::tcp::seq::SeqNumber;
    use crate::wire::checksum;
    use crate::wire::emit::IPV4_LEN;
    use crate::wire::tcp::flags;

    fn v4() -> Addressing {
        Addressing::new(
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.0.2:80".parse().unwrap(),
        )
    }

    #[test]
    fn a_segment_written_for_either_leg_reads_back_with_valid_checksums() {
        for addressing in [
            v4(),
            Addressing::new(
                "[2001:2::1]:40000".parse().unwrap(),
                "[2001:2::2]:80".parse().unwrap(),
            ),
            Addressing {
                vlan: Some(42),
                ..v4()
            },
        ] {
            let syn = synth::tcp(
                &addressing,
                TcpHeader {
                    flags: flags::SYN,
                    seq: 7,
                    ..Default::default()
                },
                b"",
            );
            let inbound = Inbound::read(&syn).unwrap();
            let mut flow = FlowAddressing::from_client(&inbound).unwrap();
            for leg in [Leg::Client, Leg::Server] {
                let header = SegmentHeader {
                    src_port: 1,
                    dst_port: 2,
                    seq: SeqNumber(100),
                    ack: SeqNumber(200),
                    flags: TcpFlags::ACK | TcpFlags::PSH,
                    window: 1000,
                    urgent: 0,
                    options: Default::default(),
                    ecn: Ecn::NotEct,
                };
                let payload = b"hello, proxy";
                let mut out = [0u8; MAX_HEADERS_LEN];
                let len = flow.write_headers(leg, &header, payload, &mut out);
                let mut frame = out[..len].to_vec();
                frame.extend_from_slice(payload);
                let back = Inbound::read(&frame).unwrap();
                assert_eq!(back.header.seq, SeqNumber(100));
                assert_eq!(&frame[back.payload_offset..], payload);
                let (src, dst) = match leg {
                    Leg::Server => (inbound.src, inbound.dst),
                    Leg::Client => (inbound.dst, inbound.src),
                };
                assert_eq!((back.src, back.dst), (src, dst));
                // The MACs of the endpoint the frame claims to come from.
                let (src_mac, dst_mac) = (&syn[6..12], &syn[0..6]);
                match leg {
                    Leg::Server => assert_eq!((&frame[6..12], &frame[0..6]), (src_mac, dst_mac)),
                    Leg::Client => assert_eq!((&frame[6..12], &frame[0..6]), (dst_mac, src_mac)),
                }
                assert_eq!(
                    parse_frame(&frame).unwrap().vlan,
                    parse_frame(&syn).unwrap().vlan
                );
            }
        }
    }

    #[test]
    fn the_ecn_field_is_read_and_written_per_segment_and_the_dscp_kept() {
        const EF: u8 = 0xb8; // DSCP 46
        for addressing in [
            v4(),
            Addressing::new(
                "[2001:2::1]:40000".parse().unwrap(),
                "[2001:2::2]:80".parse().unwrap(),
            ),
        ] {
            let mut syn = synth::tcp(
                &addressing,
                TcpHeader {
                    flags: flags::SYN,
                    seq: 7,
                    ..Default::default()
                },
                b"",
            );
            let l3 = ETHERNET_LEN;
            // The client marks its traffic EF, and a router on the way marked this one CE.
            let v4 = syn[12..14] == ETHERTYPE_IPV4.to_be_bytes();
            if v4 {
                syn[l3 + 1] = EF | 0b11;
                syn[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
                let sum = checksum::checksum(&syn[l3..l3 + IPV4_LEN]);
                syn[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
            } else {
                let tc = EF | 0b11;
                syn[l3] = 0x60 | (tc >> 4);
                syn[l3 + 1] = (syn[l3 + 1] & 0x0f) | (tc << 4);
            }
            let inbound = Inbound::read(&syn).unwrap();
            assert_eq!(inbound.header.ecn, Ecn::Ce);
            assert_eq!(inbound.tos, EF | 0b11);
            let mut flow = FlowAddressing::from_client(&inbound).unwrap();
            for ecn in [Ecn::NotEct, Ecn::Ect0, Ecn::Ce] {
                let header = SegmentHeader {
                    src_port: 40000,
                    dst_port: 80,
                    seq: SeqNumber(100),
                    ack: SeqNumber(200),
                    flags: TcpFlags::ACK,
                    window: 1000,
                    urgent: 0,
                    options: Default::default(),
                    ecn,
                };
                let payload = b"data";
                let mut out = [0u8; MAX_HEADERS_LEN];
                let len = flow.write_headers(Leg::Server, &header, payload, &mut out);
                let mut frame = out[..len].to_vec();
                frame.extend_from_slice(payload);
                // The TCP checksum is checked by the read, the IPv4 header's here.
                let back = Inbound::read(&frame).unwrap();
                assert_eq!(back.header.ecn, ecn, "{addressing:?}");
                assert_eq!(
                    back.tos,
                    ecn.into_tos(EF),
                    "the client's DSCP, our ECN field"
                );
                if v4 {
                    assert_eq!(checksum::checksum(&frame[l3..l3 + IPV4_LEN]), 0);
                } else {
                    assert_eq!(frame[l3] & 0xf0, 0x60);
                }
            }
        }
    }

    #[test]
    fn corrupted_segments_and_fragments_are_refused() {
        let mut frame = synth::tcp(
            &v4(),
            TcpHeader {
                flags: flags::ACK,
                ..Default::default()
            },
            b"data",
        );
        // Within the segment: a short frame ends in Ethernet padding the checksum does not cover.
        let at = Inbound::read(&frame).unwrap().payload_offset;
        frame[at] ^= 1;
        assert_eq!(Inbound::read(&frame).unwrap_err(), Unusable::BadChecksum);
        let udp = synth::udp(&v4(), b"x");
        assert_eq!(Inbound::read(&udp).unwrap_err(), Unusable::NotTcp);
    }
}
