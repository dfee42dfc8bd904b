//! The NIC's receive-side scaling, computed in software: the Toeplitz hash a port gives a
//! packet and the queue its redirection table sends it to.
//!
//! A NIC hashes an IP fragment on its addresses alone (it carries no ports), so the fragments
//! of a datagram meet on one queue, but not the queue of the flow they belong to. Once the
//! datagram is whole, its flow's queue is what the NIC would have picked had it come in one
//! piece: the same hash over the same input (DPDK's `rte_softrss`), then the same table.

use std::net::IpAddr;

/// What a port's RSS hashes for TCP over one IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashInput {
    /// Source and destination addresses.
    Addresses,
    /// Source and destination addresses, then source and destination ports.
    AddressesAndPorts,
}

/// A port's RSS as programmed: key, what it hashes, and the redirection table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RssSteering {
    key: Vec<u8>,
    /// For TCP over IPv4 and over IPv6; None where the port does not hash it.
    tcp4: Option<HashInput>,
    tcp6: Option<HashInput>,
    reta: Vec<u16>,
}

impl RssSteering {
    /// Key bytes the longest input uses: IPv6 addresses and ports (36 bytes), and a 32-bit
    /// window past its last bit.
    pub const KEY_USED: usize = 40;

    /// None for an empty redirection table, which sends nothing anywhere.
    pub fn new(
        key: Vec<u8>,
        tcp4: Option<HashInput>,
        tcp6: Option<HashInput>,
        reta: Vec<u16>,
    ) -> Option<RssSteering> {
        (!reta.is_empty()).then_some(RssSteering {
            key,
            tcp4,
            tcp6,
            reta,
        })
    }

    /// Whether the port hashes TCP over this address's IP version, so that a datagram's queue
    /// can be told.
    pub fn hashes(&self, addr: IpAddr) -> bool {
        self.input(addr).is_some()
    }

    fn input(&self, addr: IpAddr) -> Option<HashInput> {
        match addr {
            IpAddr::V4(_) => self.tcp4,
            IpAddr::V6(_) => self.tcp6,
        }
    }

    /// The hash the port gives an unfragmented TCP segment of this flow, in this direction.
    pub fn tcp_hash(&self, src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> Option<u32> {
        let input = self.input(src)?;
        let mut bytes = [0u8; 36];
        let mut len = 0;
        let mut put = |b: &[u8]| {
            bytes[len..len + b.len()].copy_from_slice(b);
            len += b.len();
        };
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                put(&s.octets());
                put(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                put(&s.octets());
                put(&d.octets());
            }
            _ => return None,
        }
        if input == HashInput::AddressesAndPorts {
            put(&src_port.to_be_bytes());
            put(&dst_port.to_be_bytes());
        }
        Some(toeplitz(&self.key, &bytes[..len]))
    }

    /// The queue the redirection table names for `hash`.
    pub fn queue(&self, hash: u32) -> u16 {
        self.reta[hash as usize % self.reta.len()]
    }
}

/// The Toeplitz hash of `input` under `key`: for each bit set in the input, the 32 bits of the
/// key starting at that bit's position, XORed together. Key bits past its end count as zero.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let byte = |i: usize| u64::from(key.get(i).copied().unwrap_or(0));
    let mut hash = 0u32;
    for (i, &b) in input.iter().enumerate() {
        // The 40 key bits from this input byte's first bit on: enough for a 32-bit window at
        // each of its eight bits.
        let window =
            byte(i) << 32 | byte(i + 1) << 24 | byte(i + 2) << 16 | byte(i + 3) << 8 | byte(i + 4);
        for bit in 0..8 {
            if b & (0x80 >> bit) != 0 {
                hash ^= (window >> (8 - bit)) as u32;
            }
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of Microsoft's RSS verification suite (also the 82599 datasheet's, 7.1.2.8.3).
    const MICROSOFT_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    fn steering(key: &[u8], reta: Vec<u16>) -> RssSteering {
        RssSteering::new(
            key.to_vec(),
            Some(HashInput::AddressesAndPorts),
            Some(HashInput::AddressesAndPorts),
            reta,
        )
        .unwrap()
    }

    /// Microsoft's "Verifying the RSS Hash Calculation": (source, destination, addresses only,
    /// with TCP ports).
    const VECTORS: [(&str, &str, u32, u32); 8] = [
        (
            "66.9.149.187:2794",
            "161.142.100.80:1766",
            0x323e_8fc2,
            0x51cc_c178,
        ),
        (
            "199.92.111.2:14230",
            "65.69.140.83:4739",
            0xd718_262a,
            0xc626_b0ea,
        ),
        (
            "24.19.198.95:12898",
            "12.22.207.184:38024",
            0xd2d0_a5de,
            0x5c2b_394a,
        ),
        (
            "38.27.205.30:48228",
            "209.142.163.6:2217",
            0x8298_9176,
            0xafc7_327f,
        ),
        (
            "153.39.163.191:44251",
            "202.188.127.2:1303",
            0x5d18_09c5,
            0x10e8_28a2,
        ),
        (
            "[3ffe:2501:200:1fff::7]:2794",
            "[3ffe:2501:200:3::1]:1766",
            0x2cc1_8cd5,
            0x4020_7d3d,
        ),
        (
            "[3ffe:501:8::260:97ff:fe40:efab]:14230",
            "[ff02::1]:4739",
            0x0f0c_461c,
            0xdde5_1bbf,
        ),
        (
            "[3ffe:1900:4545:3:200:f8ff:fe21:67cf]:44251",
            "[fe80::200:f8ff:fe21:67cf]:38024",
            0x4b61_e985,
            0x02d1_feef,
        ),
    ];

    #[test]
    fn the_hash_matches_microsofts_verification_suite() {
        let with_ports = steering(&MICROSOFT_KEY, vec![0]);
        let addresses = RssSteering::new(
            MICROSOFT_KEY.to_vec(),
            Some(HashInput::Addresses),
            Some(HashInput::Addresses),
            vec![0],
        )
        .unwrap();
        for (src, dst, l3, l4) in VECTORS {
            let src: std::net::SocketAddr = src.parse().unwrap();
            let dst: std::net::SocketAddr = dst.parse().unwrap();
            let hash = |s: &RssSteering| s.tcp_hash(src.ip(), dst.ip(), src.port(), dst.port());
            assert_eq!(hash(&with_ports), Some(l4), "{src} -> {dst}");
            assert_eq!(hash(&addresses), Some(l3), "{src} -> {dst}, addresses");
        }
    }

    #[test]
    fn under_the_symmetric_key_both_directions_hash_alike() {
        let s = steering(&hw::SYMMETRIC_RSS_KEY, vec![0]);
        let mut rng = crate::test_rng::TestRng::new(7);
        for _ in 0..1000 {
            let (a, b) = if rng.below(2) == 0 {
                (
                    IpAddr::from((rng.next_u64() as u32).to_be_bytes()),
                    IpAddr::from((rng.next_u64() as u32).to_be_bytes()),
                )
            } else {
                let v6 = |rng: &mut crate::test_rng::TestRng| {
                    let mut o = [0u8; 16];
                    o[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
                    o[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
                    IpAddr::from(o)
                };
                (v6(&mut rng), v6(&mut rng))
            };
            let (p, q) = (rng.next_u64() as u16, rng.next_u64() as u16);
            assert_eq!(
                s.tcp_hash(a, b, p, q),
                s.tcp_hash(b, a, q, p),
                "{a}:{p} {b}:{q}"
            );
        }
        // And the Microsoft key is not symmetric: the test would see it.
        let m = steering(&MICROSOFT_KEY, vec![0]);
        let (a, b): (IpAddr, IpAddr) = (
            "66.9.149.187".parse().unwrap(),
            "161.142.100.80".parse().unwrap(),
        );
        assert_ne!(m.tcp_hash(a, b, 2794, 1766), m.tcp_hash(b, a, 1766, 2794));
    }

    #[test]
    fn the_redirection_table_names_the_queue_by_the_hashs_low_bits() {
        let s = steering(&hw::SYMMETRIC_RSS_KEY, (0..128).map(|i| i % 3).collect());
        assert_eq!(s.queue(0), 0);
        assert_eq!(s.queue(5), 2);
        assert_eq!(s.queue(128 + 4), 1);
        assert_eq!(s.queue(u32::MAX), 127 % 3);
        assert!(RssSteering::new(vec![], None, None, vec![]).is_none());
    }

    #[test]
    fn a_port_that_hashes_one_ip_version_tells_only_its_queues() {
        let s = RssSteering::new(vec![1; 40], Some(HashInput::Addresses), None, vec![0]).unwrap();
        assert!(s.hashes("198.18.0.1".parse().unwrap()));
        assert!(!s.hashes("2001:db8::1".parse().unwrap()));
    }
}
