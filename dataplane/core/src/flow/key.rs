//! The canonical 5-tuple: both directions of a flow make the same key.

use core::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

pub(crate) const TCP: u8 = 6;
pub(crate) const UDP: u8 = 17;

/// Which way a packet went relative to the key's canonical order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Orientation {
    /// From the lower (address, port) endpoint to the higher one.
    LowToHigh,
    HighToLow,
}

impl Orientation {
    pub fn reverse(self) -> Orientation {
        match self {
            Orientation::LowToHigh => Orientation::HighToLow,
            Orientation::HighToLow => Orientation::LowToHigh,
        }
    }
}

/// A flow's 5-tuple with the lower (address, port) endpoint first, so both
/// directions of a flow make the same key.
///
/// IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`) so one layout
/// serves both families, and the family is kept beside them: an IPv6 packet
/// that carries mapped addresses on the wire (a known evasion trick) is not
/// the IPv4 flow it imitates, and must not share that flow's policy.
///
/// 38 bytes, 2-aligned: it is the first thing in a flow entry's first cache
/// line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    low_addr: [u8; 16],
    high_addr: [u8; 16],
    low_port: u16,
    high_port: u16,
    protocol: u8,
    ipv6: bool,
}

/// Digits of pi: constants with no structure that addresses could line up
/// with. Fixed, so the hash is the same on every worker (software steering
/// relies on that) and in every run (so tests and tools can reproduce it).
const MIX: [u64; 6] = [
    0x243F_6A88_85A3_08D3,
    0x1319_8A2E_0370_7344,
    0xA409_3822_299F_31D0,
    0x082E_FA98_EC4E_6C89,
    0x4528_21E6_38D0_1377,
    0xBE54_66CF_34E9_0C6C,
];

/// The full 128-bit product folded to 64 bits: every input bit reaches both
/// the low bits (the flow index's bucket) and the high half (its tag), which
/// a plain 64-bit multiply would not give the low bits. One `mul` on x86-64.
#[inline]
fn folded_multiply(x: u64, y: u64) -> u64 {
    let product = u128::from(x) * u128::from(y);
    (product as u64) ^ ((product >> 64) as u64)
}

#[inline]
fn words(addr: &[u8; 16]) -> (u64, u64) {
    let value = u128::from_le_bytes(*addr);
    (value as u64, (value >> 64) as u64)
}

/// An IPv4 address's ordinal: its IPv4-mapped IPv6 address.
#[inline(always)]
fn ipv4_ordinal(addr: u32) -> u128 {
    (0xffff_u128 << 32) | u128::from(addr)
}

/// The address as one number whose order is the byte-wise order of its
/// (IPv4-mapped) octets: comparing integers is two instructions, comparing
/// byte arrays is a byte-swapping loop.
#[inline]
fn ordinal(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => ipv4_ordinal(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl FlowKey {
    /// The key of a packet from `src:src_port` to `dst:dst_port`, and which
    /// way that packet went relative to the key.
    #[inline]
    pub fn from_packet(
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        src_port: u16,
        dst_port: u16,
    ) -> (FlowKey, Orientation) {
        // A real packet has one family; deciding on either address keeps the
        // key symmetric even for a nonsensical mix.
        let ipv6 = src.is_ipv6() || dst.is_ipv6();
        Self::from_ordinals(
            (ordinal(src), src_port),
            (ordinal(dst), dst_port),
            protocol,
            ipv6,
        )
    }

    /// [`FlowKey::from_packet`] for IPv4 addresses as integers, as the worker
    /// reads them from frames of the common shape.
    #[inline]
    pub fn from_ipv4(
        src: u32,
        dst: u32,
        protocol: u8,
        src_port: u16,
        dst_port: u16,
    ) -> (FlowKey, Orientation) {
        Self::from_ordinals(
            (ipv4_ordinal(src), src_port),
            (ipv4_ordinal(dst), dst_port),
            protocol,
            false,
        )
    }

    #[inline(always)]
    fn from_ordinals(
        src: (u128, u16),
        dst: (u128, u16),
        protocol: u8,
        ipv6: bool,
    ) -> (FlowKey, Orientation) {
        let (low, high, orientation) = if src <= dst {
            (src, dst, Orientation::LowToHigh)
        } else {
            (dst, src, Orientation::HighToLow)
        };
        let key = FlowKey {
            low_addr: low.0.to_be_bytes(),
            high_addr: high.0.to_be_bytes(),
            low_port: low.1,
            high_port: high.1,
            protocol,
            ipv6,
        };
        (key, orientation)
    }

    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    pub fn is_ipv6(&self) -> bool {
        self.ipv6
    }

    /// The lower endpoint.
    pub fn low(&self) -> SocketAddr {
        self.socket_addr(&self.low_addr, self.low_port)
    }

    /// The higher endpoint.
    pub fn high(&self) -> SocketAddr {
        self.socket_addr(&self.high_addr, self.high_port)
    }

    /// `(source, destination)` of a packet that went this way.
    pub fn endpoints(&self, orientation: Orientation) -> (SocketAddr, SocketAddr) {
        match orientation {
            Orientation::LowToHigh => (self.low(), self.high()),
            Orientation::HighToLow => (self.high(), self.low()),
        }
    }

    fn socket_addr(&self, addr: &[u8; 16], port: u16) -> SocketAddr {
        let v6 = Ipv6Addr::from(*addr);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) if !self.ipv6 => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        };
        SocketAddr::new(ip, port)
    }

    /// Tollgate's own hash of the key, for ports without a symmetric NIC hash
    /// and for software steering across workers. Symmetric by construction:
    /// it hashes the canonical key, which both directions share.
    ///
    /// Two independent folded multiplies over the two endpoints, joined by a
    /// third: a short dependency chain (about three multiply latencies).
    /// Deterministic and unkeyed, so it is no defence against crafted
    /// collisions; neither is a NIC's Toeplitz hash with its published key.
    #[inline]
    pub fn software_hash(&self) -> u64 {
        let (a0, a1) = words(&self.low_addr);
        let (b0, b1) = words(&self.high_addr);
        let rest = u64::from(self.low_port)
            | u64::from(self.high_port) << 16
            | u64::from(self.protocol) << 32
            | u64::from(self.ipv6) << 40;
        let low = folded_multiply(a0 ^ MIX[0], a1 ^ MIX[1]);
        let high = folded_multiply(b0 ^ MIX[2], b1 ^ MIX[3]);
        folded_multiply(low ^ rest ^ MIX[4], high ^ MIX[5])
    }
}

fn protocol_name(protocol: u8) -> Option<&'static str> {
    Some(match protocol {
        1 => "icmp",
        TCP => "tcp",
        UDP => "udp",
        47 => "gre",
        50 => "esp",
        58 => "icmpv6",
        132 => "sctp",
        _ => return None,
    })
}

impl fmt::Display for FlowKey {
    /// `tcp 198.18.0.1:40000 <-> 198.18.0.2:80`, lower endpoint first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match protocol_name(self.protocol) {
            Some(name) => f.write_str(name)?,
            None => write!(f, "proto {}", self.protocol)?,
        }
        write!(f, " {} <-> {}", self.low(), self.high())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    #[test]
    fn both_directions_make_one_key() {
        for (a, b) in [
            (v4("198.18.0.1"), v4("198.18.0.2")),
            (v6("2001:db8::1"), v6("2001:db8::2")),
        ] {
            let (forward, fo) = FlowKey::from_packet(a, b, TCP, 40000, 80);
            let (backward, bo) = FlowKey::from_packet(b, a, TCP, 80, 40000);
            assert_eq!(forward, backward);
            assert_eq!(fo, Orientation::LowToHigh);
            assert_eq!(bo, Orientation::HighToLow);
            assert_eq!(fo.reverse(), bo);
            assert_eq!(forward.software_hash(), backward.software_hash());
        }
    }

    #[test]
    fn an_ipv4_key_from_integers_is_the_key_from_addresses() {
        let addrs = [0u32, 1, 0xC612_0001, 0xC612_0002, 0xC613_0001, u32::MAX];
        let ports = [(53, 40000), (40000, 53), (0, 0), (443, 443), (u16::MAX, 1)];
        for &src in &addrs {
            for &dst in &addrs {
                for (sp, dp) in ports {
                    for protocol in [TCP, UDP] {
                        let by_addr = FlowKey::from_packet(
                            IpAddr::V4(src.into()),
                            IpAddr::V4(dst.into()),
                            protocol,
                            sp,
                            dp,
                        );
                        let by_int = FlowKey::from_ipv4(src, dst, protocol, sp, dp);
                        assert_eq!(by_int, by_addr, "{src:#x}:{sp} -> {dst:#x}:{dp}");
                        assert_eq!(by_int.0.software_hash(), by_addr.0.software_hash());
                    }
                }
            }
        }
    }

    #[test]
    fn orientation_follows_the_port_when_addresses_tie() {
        let a = v4("198.18.0.1");
        let (key, orientation) = FlowKey::from_packet(a, a, UDP, 9000, 53);
        assert_eq!(orientation, Orientation::HighToLow);
        assert_eq!(key.low().port(), 53);
        assert_eq!(key.endpoints(orientation).0.port(), 9000);
    }

    #[test]
    fn distinct_flows_are_distinct_keys() {
        let (a, b) = (v4("198.18.0.1"), v4("198.18.0.2"));
        let (base, _) = FlowKey::from_packet(a, b, TCP, 1000, 2000);
        let (swapped_ports, _) = FlowKey::from_packet(a, b, TCP, 2000, 1000);
        let (udp, _) = FlowKey::from_packet(a, b, UDP, 1000, 2000);
        let mapped = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            other => other,
        };
        let (v6_mapped, _) = FlowKey::from_packet(mapped(a), mapped(b), TCP, 1000, 2000);
        let keys = [base, swapped_ports, udp, v6_mapped];
        for (i, x) in keys.iter().enumerate() {
            for y in &keys[i + 1..] {
                assert_ne!(x, y);
                assert_ne!(x.software_hash(), y.software_hash(), "{x} / {y}");
            }
        }
    }

    #[test]
    fn endpoints_and_display_use_the_packet_family() {
        let (key, orientation) =
            FlowKey::from_packet(v4("198.18.0.2"), v4("198.18.0.1"), TCP, 80, 40000);
        assert_eq!(key.to_string(), "tcp 198.18.0.1:40000 <-> 198.18.0.2:80");
        let (src, dst) = key.endpoints(orientation);
        assert_eq!(src, "198.18.0.2:80".parse().unwrap());
        assert_eq!(dst, "198.18.0.1:40000".parse().unwrap());
        assert!(!key.is_ipv6());
        assert_eq!(key.protocol(), TCP);

        let (key, _) = FlowKey::from_packet(v6("::ffff:198.18.0.1"), v6("2001:db8::9"), 99, 0, 0);
        assert_eq!(
            key.to_string(),
            "proto 99 [::ffff:198.18.0.1]:0 <-> [2001:db8::9]:0"
        );
        assert!(key.is_ipv6());
    }

    /// The flow index takes the bucket from the low bits and a 16-bit tag
    /// from bits 32..48; both must spread even when the keys differ only a
    /// little.
    #[test]
    fn software_hash_spreads_low_and_high_bits() {
        let mut keys = Vec::new();
        for port in 0..32_768u16 {
            keys.push(FlowKey::from_packet(v4("198.18.0.1"), v4("198.18.0.2"), TCP, port, 80).0);
        }
        for host in 0..32_768u32 {
            let src = IpAddr::V4(Ipv4Addr::from(0xC612_0000 | host));
            keys.push(FlowKey::from_packet(src, v4("198.19.0.1"), UDP, 5000, 53).0);
        }
        let hashes: Vec<u64> = keys.iter().map(FlowKey::software_hash).collect();
        assert_spread(&hashes);
    }

    /// Each of 128 buckets (by the top seven bits, by bits 32..39, then by
    /// the low seven) within five standard deviations of the mean that a uniform hash
    /// would give: loose enough for honest noise, tight enough that a hash
    /// leaving bits unused fails at once. The inputs are fixed, so a pass
    /// stays a pass.
    pub(crate) fn assert_spread(hashes: &[u64]) {
        for (name, bucket) in [
            (
                "top 7 bits",
                (|h: u64| (h >> 57) as usize) as fn(u64) -> usize,
            ),
            ("bits 32..39", |h: u64| (h >> 32 & 127) as usize),
            ("low 7 bits", |h: u64| (h & 127) as usize),
        ] {
            let mut counts = [0usize; 128];
            for &h in hashes {
                counts[bucket(h)] += 1;
            }
            let mean = hashes.len() as f64 / 128.0;
            let tolerance = 5.0 * mean.sqrt();
            for (i, &n) in counts.iter().enumerate() {
                assert!(
                    (n as f64 - mean).abs() <= tolerance,
                    "{name}: bucket {i} has {n}, mean {mean}"
                );
            }
        }
    }
}
