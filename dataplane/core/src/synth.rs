//! Synthetic frames: valid Ethernet/IPv4/IPv6 TCP and UDP frames with correct
//! checksums, for tests, benchmarks and traffic tools.

use std::net::{IpAddr, SocketAddr};

use crate::wire::checksum;

use crate::wire::emit;
use crate::wire::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN};
use crate::wire::ip::{PROTO_TCP, PROTO_UDP};

/// MAC addresses for synthetic frames: locally administered, so they can
/// never be a real NIC's.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const SERVER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

/// Addressing of one synthetic frame.
#[derive(Debug, Clone, Copy)]
pub struct Addressing {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl Addressing {
    pub fn new(src: SocketAddr, dst: SocketAddr) -> Addressing {
        Addressing {
            src_mac: CLIENT_MAC,
            dst_mac: SERVER_MAC,
            vlan: None,
            src,
            dst,
        }
    }

    /// The same flow, the other way.
    pub fn reversed(&self) -> Addressing {
        Addressing {
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
            vlan: self.vlan,
            src: self.dst,
            dst: self.src,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct TcpHeader {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

/// A frame of `a`'s addressing around `l4` (the transport header and payload, its checksum
/// field at `l4_checksum_at` filled in here).
fn frame(a: &Addressing, protocol: u8, mut l4: Vec<u8>, l4_checksum_at: usize) -> Vec<u8> {
    let tags: &[(u16, u16)] = match a.vlan {
        Some(vid) => &[(ETHERTYPE_VLAN, vid & 0x0fff)],
        None => &[],
    };
    let mut out = vec![0u8; emit::ETHERNET_LEN + emit::VLAN_TAG_LEN + emit::IPV6_LEN];
    let (l3, sum) = match (a.src.ip(), a.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let l3 = emit::ethernet(&mut out, a.dst_mac, a.src_mac, tags, ETHERTYPE_IPV4);
            let ip = emit::Ipv4Header::new(s, d, protocol, l4.len());
            let len = ip.emit(&mut out[l3..]);
            (
                l3 + len,
                checksum::transport_checksum_v4(s, d, protocol, &l4),
            )
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let l3 = emit::ethernet(&mut out, a.dst_mac, a.src_mac, tags, ETHERTYPE_IPV6);
            let ip = emit::Ipv6Header::new(s, d, protocol, l4.len());
            let len = ip.emit(&mut out[l3..]);
            (
                l3 + len,
                checksum::transport_checksum_v6(s, d, protocol, &l4),
            )
        }
        _ => panic!(
            "synthetic frame with mixed IPv4/IPv6 addresses: {} -> {}",
            a.src, a.dst
        ),
    };
    out.truncate(l3);
    l4[l4_checksum_at..l4_checksum_at + 2].copy_from_slice(&sum.to_be_bytes());
    out.extend_from_slice(&l4);
    pad(out)
}

/// A TCP segment in a frame.
pub fn tcp(a: &Addressing, h: TcpHeader, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; emit::TCP_LEN];
    let window = if h.window == 0 { 65535 } else { h.window };
    emit::tcp(
        &mut l4,
        a.src.port(),
        a.dst.port(),
        h.seq,
        h.ack,
        h.flags,
        window,
    );
    l4.extend_from_slice(payload);
    frame(a, PROTO_TCP, l4, 16)
}

/// A UDP datagram in a frame.
pub fn udp(a: &Addressing, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; emit::UDP_LEN];
    emit::udp(&mut l4, a.src.port(), a.dst.port(), payload.len());
    l4.extend_from_slice(payload);
    frame(a, PROTO_UDP, l4, 6)
}

/// An ARP request (who-has `target`), which a bump in the wire must pass.
pub fn arp_request(src_mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut out = vec![0u8; emit::ETHERNET_LEN];
    emit::ethernet(&mut out, [0xff; 6], src_mac, &[], ETHERTYPE_ARP);
    out.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    out.extend_from_slice(&src_mac);
    out.extend_from_slice(&sender);
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&target);
    pad(out)
}

/// `frame` (untagged, IPv4 or IPv6 without extension headers) cut into IP fragments of at most
/// `size` data bytes each (a multiple of 8, as every fragment but the last must be) with
/// identification `id`, as a sender on a narrower path would send it. A frame that fits in one
/// comes back as one fragment at offset 0 with no more to follow (for IPv6, an atomic fragment).
pub fn fragments(frame: &[u8], size: usize, id: u32) -> Vec<Vec<u8>> {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[14..];
    let (header, data) = if ethertype == ETHERTYPE_IPV4 {
        let header_len = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        (&ip[..header_len], &ip[header_len..total])
    } else {
        let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        (&ip[..40], &ip[40..40 + payload])
    };
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let len = size.min(data.len() - offset);
        let more = offset + len < data.len();
        let mut f = frame[..14].to_vec();
        if ethertype == ETHERTYPE_IPV4 {
            let mut h = header.to_vec();
            h[2..4].copy_from_slice(&((header.len() + len) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&(id as u16).to_be_bytes());
            let field = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
            h[6..8].copy_from_slice(&field.to_be_bytes());
            h[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&h);
        } else {
            let mut h = header.to_vec();
            h[4..6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
            h[6] = 44;
            f.extend_from_slice(&h);
            f.push(header[6]);
            f.push(0);
            let field = offset as u16 | u16::from(more);
            f.extend_from_slice(&field.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
        f.extend_from_slice(&data[offset..offset + len]);
        out.push(pad(f));
        offset += len;
        if !more {
            return out;
        }
    }
}

/// Ethernet's 60-byte minimum (without FCS), as a NIC would pad.
fn pad(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < 60 {
        frame.resize(60, 0);
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp::flags;
    use crate::wire::{parse_frame, Fragment};

    #[test]
    fn synthetic_frames_parse_back() {
        let a = Addressing::new(
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.0.2:80".parse().unwrap(),
        );
        let f = tcp(
            &a,
            TcpHeader {
                flags: flags::SYN,
                seq: 7,
                ..Default::default()
            },
            b"",
        );
        let s = parse_frame(&f).unwrap();
        let ip = s.ip.unwrap();
        assert_eq!(ip.ports, Some((40000, 80)));
        assert_eq!(ip.tcp_flags, Some(flags::SYN));
        assert_eq!(ip.fragment, Fragment::None);
        assert_eq!(f.len(), 60);

        let a6 = Addressing::new(
            "[2001:2::1]:5000".parse().unwrap(),
            "[2001:2::2]:53".parse().unwrap(),
        );
        let f = udp(&a6, b"hello");
        let ip = parse_frame(&f).unwrap().ip.unwrap();
        assert_eq!(ip.protocol, 17);
        assert_eq!(ip.ports, Some((5000, 53)));
        assert_eq!(ip.l4_payload_len, 5);

        let f = arp_request(CLIENT_MAC, [198, 18, 0, 1], [198, 18, 0, 2]);
        assert!(parse_frame(&f).unwrap().ip.is_none());
    }

    #[test]
    fn synthetic_checksums_verify() {
        let a = Addressing::new(
            "198.18.0.1:1".parse().unwrap(),
            "198.18.0.2:2".parse().unwrap(),
        );
        let f = tcp(
            &a,
            TcpHeader {
                flags: flags::ACK,
                ..Default::default()
            },
            b"payload bytes",
        );
        assert!(checksum::verify(&f[14..34]), "IPv4 header checksum");
        let src = "198.18.0.1".parse().unwrap();
        let dst = "198.18.0.2".parse().unwrap();
        assert!(checksum::verify_transport_v4(
            src,
            dst,
            6,
            &f[34..34 + 20 + 13]
        ));
    }
}
