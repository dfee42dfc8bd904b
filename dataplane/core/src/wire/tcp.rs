//! TCP segments (RFC 9293) and their options.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::field::{be16, be32};
use super::ip::PROTO_TCP;
use super::Malformed;

/// The fixed header, without options.
pub const HEADER_LEN: usize = 20;
/// The data offset is four bits of 32-bit words.
pub const MAX_HEADER_LEN: usize = 60;

/// Bits of the flags byte (byte 13 of the header).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

pub const OPTION_END_OF_LIST: u8 = 0;
pub const OPTION_NO_OPERATION: u8 = 1;
pub const OPTION_MSS: u8 = 2;
pub const OPTION_WINDOW_SCALE: u8 = 3;
pub const OPTION_SACK_PERMITTED: u8 = 4;
pub const OPTION_SACK: u8 = 5;
pub const OPTION_TIMESTAMPS: u8 = 8;

/// 40 bytes of option space hold at most four SACK blocks, three beside timestamps.
pub const MAX_SACK_BLOCKS: usize = 4;

/// A view of a TCP segment. The buffer must be exactly the segment (the IP payload): the
/// payload and the checksum run to its end.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Checks that the fixed header and the options the data offset announces are present.
    /// Options themselves are checked only when iterated, which the fast path does not do.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(Malformed::TcpTruncated);
        }
        let header_len = usize::from(bytes[12] >> 4) * 4;
        if header_len < HEADER_LEN || header_len > bytes.len() {
            return Err(Malformed::TcpBadDataOffset);
        }
        Ok(TcpSegment { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.bytes(), 0)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.bytes(), 2)
    }

    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(self.bytes(), 4)
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(self.bytes(), 8)
    }

    /// Header length in bytes, options included (the data offset field times four).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.bytes()[12] >> 4) * 4
    }

    /// The flag bits; test them against [`flags`].
    #[inline]
    pub fn flags(&self) -> u8 {
        self.bytes()[13]
    }

    /// True when every bit of `flags` is set.
    #[inline]
    pub fn has_flags(&self, flags: u8) -> bool {
        self.flags() & flags == flags
    }

    #[inline]
    pub fn window(&self) -> u16 {
        be16(self.bytes(), 14)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.bytes(), 16)
    }

    #[inline]
    pub fn urgent_pointer(&self) -> u16 {
        be16(self.bytes(), 18)
    }

    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        checksum::verify_transport_v4(src, dst, PROTO_TCP, self.bytes())
    }

    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        checksum::verify_transport_v6(src, dst, PROTO_TCP, self.bytes())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpSegment<&'a T> {
    /// The raw option bytes, not yet checked.
    #[inline]
    pub fn options(&self) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        &bytes[HEADER_LEN..self.header_len()]
    }

    /// The options, parsed and checked one by one.
    #[inline]
    pub fn iter_options(&self) -> TcpOptions<'a> {
        TcpOptions::new(self.options())
    }

    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        &bytes[self.header_len()..]
    }
}

/// Up to four SACK blocks, each `(left edge, right edge)` of received data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SackBlocks {
    blocks: [(u32, u32); MAX_SACK_BLOCKS],
    len: u8,
}

impl SackBlocks {
    /// `data` is the option body: a whole number of 8-byte blocks, at most four.
    fn from_option(data: &[u8]) -> SackBlocks {
        let mut blocks = [(0, 0); MAX_SACK_BLOCKS];
        let mut len = 0;
        for (slot, block) in blocks.iter_mut().zip(data.chunks_exact(8)) {
            *slot = (be32(block, 0), be32(block, 4));
            len += 1;
        }
        SackBlocks { blocks, len }
    }

    #[inline]
    pub fn as_slice(&self) -> &[(u32, u32)] {
        &self.blocks[..usize::from(self.len)]
    }

    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    EndOfList,
    NoOp,
    Mss(u16),
    WindowScale(u8),
    SackPermitted,
    Sack(SackBlocks),
    Timestamps { tsval: u32, tsecr: u32 },
    Unknown { kind: u8, data: &'a [u8] },
}

/// Iterator over TCP options. It yields `Err(Malformed::TcpBadOption)` once for a length byte
/// that is missing, below 2, past the option space or wrong for the kind, then stops; it also
/// stops after end-of-list, since what follows is padding.
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    rest: &'a [u8],
    ended: bool,
}

impl<'a> TcpOptions<'a> {
    pub fn new(options: &'a [u8]) -> TcpOptions<'a> {
        TcpOptions {
            rest: options,
            ended: false,
        }
    }

    /// Parses the option with a length byte at the start of `bytes`; returns it and its length.
    fn parse(kind: u8, bytes: &'a [u8]) -> Result<(TcpOption<'a>, usize), Malformed> {
        let len = usize::from(*bytes.get(1).ok_or(Malformed::TcpBadOption)?);
        if len < 2 || len > bytes.len() {
            return Err(Malformed::TcpBadOption);
        }
        let data = &bytes[2..len];
        let option = match (kind, data.len()) {
            (OPTION_MSS, 2) => TcpOption::Mss(be16(data, 0)),
            (OPTION_WINDOW_SCALE, 1) => TcpOption::WindowScale(data[0]),
            (OPTION_SACK_PERMITTED, 0) => TcpOption::SackPermitted,
            (OPTION_SACK, n) if n % 8 == 0 && (8..=8 * MAX_SACK_BLOCKS).contains(&n) => {
                TcpOption::Sack(SackBlocks::from_option(data))
            }
            (OPTION_TIMESTAMPS, 8) => TcpOption::Timestamps {
                tsval: be32(data, 0),
                tsecr: be32(data, 4),
            },
            (
                OPTION_MSS
                | OPTION_WINDOW_SCALE
                | OPTION_SACK_PERMITTED
                | OPTION_SACK
                | OPTION_TIMESTAMPS,
                _,
            ) => return Err(Malformed::TcpBadOption),
            _ => TcpOption::Unknown { kind, data },
        };
        Ok((option, len))
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let (&kind, after_kind) = self.rest.split_first()?;
        match kind {
            OPTION_END_OF_LIST => {
                self.ended = true;
                Some(Ok(TcpOption::EndOfList))
            }
            OPTION_NO_OPERATION => {
                self.rest = after_kind;
                Some(Ok(TcpOption::NoOp))
            }
            _ => match Self::parse(kind, self.rest) {
                Ok((option, len)) => {
                    self.rest = &self.rest[len..];
                    Some(Ok(option))
                }
                Err(malformed) => {
                    self.ended = true;
                    Some(Err(malformed))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_frames::{tcp, tcp_checksum_v4, V4_A, V4_B, V6_A, V6_B};

    fn options(bytes: &[u8]) -> Vec<Result<TcpOption<'_>, Malformed>> {
        TcpOptions::new(bytes).collect()
    }

    #[test]
    fn fields() {
        let mut bytes = tcp(40000, 443, flags::SYN | flags::ACK, &[], b"hello");
        bytes[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
        bytes[8..12].copy_from_slice(&0xa0b0_c0d0u32.to_be_bytes());
        bytes[18..20].copy_from_slice(&7u16.to_be_bytes());
        let segment = TcpSegment::new_checked(&bytes[..]).unwrap();
        assert_eq!(segment.src_port(), 40000);
        assert_eq!(segment.dst_port(), 443);
        assert_eq!(segment.seq_number(), 0x0102_0304);
        assert_eq!(segment.ack_number(), 0xa0b0_c0d0);
        assert_eq!(segment.header_len(), 20);
        assert_eq!(segment.flags(), flags::SYN | flags::ACK);
        assert!(segment.has_flags(flags::SYN));
        assert!(!segment.has_flags(flags::SYN | flags::FIN));
        assert_eq!(segment.window(), 65535);
        assert_eq!(segment.urgent_pointer(), 7);
        assert!(segment.options().is_empty());
        assert_eq!(segment.payload(), b"hello");
    }

    #[test]
    fn every_flag_is_a_distinct_bit() {
        let all = [
            flags::FIN,
            flags::SYN,
            flags::RST,
            flags::PSH,
            flags::ACK,
            flags::URG,
            flags::ECE,
            flags::CWR,
        ];
        assert_eq!(all.iter().fold(0, |acc, f| acc | f), 0xff);
    }

    #[test]
    fn checksums() {
        let mut bytes = tcp(1, 2, flags::ACK, &[1, 1, 1, 1], b"odd");
        tcp_checksum_v4(&mut bytes, V4_A, V4_B);
        let segment = TcpSegment::new_checked(&bytes[..]).unwrap();
        assert!(segment.verify_checksum_v4(V4_A.into(), V4_B.into()));
        assert!(!segment.verify_checksum_v4(V4_B.into(), V4_B.into()));

        let (src, dst) = (Ipv6Addr::from(V6_A), Ipv6Addr::from(V6_B));
        let mut bytes = tcp(1, 2, flags::ACK, &[], b"data");
        let value = checksum::transport_checksum_v6(src, dst, PROTO_TCP, &bytes);
        bytes[16..18].copy_from_slice(&value.to_be_bytes());
        let segment = TcpSegment::new_checked(&bytes[..]).unwrap();
        assert!(segment.verify_checksum_v6(src, dst));
        assert!(!segment.verify_checksum_v6(dst, dst));
        bytes[21] ^= 0x40;
        let segment = TcpSegment::new_checked(&bytes[..]).unwrap();
        assert!(!segment.verify_checksum_v6(src, dst));
    }

    #[test]
    fn truncated_and_bad_data_offset() {
        let bytes = tcp(1, 2, 0, &[2, 4, 5, 180], &[]);
        for len in 0..20 {
            assert_eq!(
                TcpSegment::new_checked(&bytes[..len]).unwrap_err(),
                Malformed::TcpTruncated
            );
        }
        assert_eq!(
            TcpSegment::new_checked(&bytes[..22]).unwrap_err(),
            Malformed::TcpBadDataOffset
        );
        let mut bytes = tcp(1, 2, 0, &[], &[0; 40]);
        for offset in 0..5u8 {
            bytes[12] = offset << 4;
            assert_eq!(
                TcpSegment::new_checked(&bytes[..]).unwrap_err(),
                Malformed::TcpBadDataOffset
            );
        }
        bytes[12] = 15 << 4;
        let segment = TcpSegment::new_checked(&bytes[..]).unwrap();
        assert_eq!(segment.header_len(), 60);
        assert_eq!(segment.options().len(), 40);
        assert!(segment.payload().is_empty());
    }

    #[test]
    fn syn_options() {
        // What Linux sends on a SYN: MSS, SACK permitted, timestamps, NOP, window scale.
        let raw = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let bytes = tcp(1, 2, flags::SYN, &raw, &[]);
        let segment = TcpSegment::new_checked(&bytes[..]).unwrap();
        let parsed: Vec<_> = segment.iter_options().map(Result::unwrap).collect();
        assert_eq!(
            parsed,
            [
                TcpOption::Mss(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamps { tsval: 1, tsecr: 0 },
                TcpOption::NoOp,
                TcpOption::WindowScale(7),
            ]
        );
    }

    #[test]
    fn sack_blocks() {
        let mut raw = vec![1, 1, 5, 10];
        raw.extend_from_slice(&100u32.to_be_bytes());
        raw.extend_from_slice(&200u32.to_be_bytes());
        let parsed = options(&raw);
        let Some(Ok(TcpOption::Sack(blocks))) = parsed.get(2) else {
            panic!("{parsed:?}");
        };
        assert_eq!(blocks.as_slice(), &[(100, 200)]);
        assert_eq!(blocks.len(), 1);
        assert!(!blocks.is_empty());

        let mut raw = vec![1, 1, 5, 34];
        for i in 0..8u32 {
            raw.extend_from_slice(&(i * 1000).to_be_bytes());
        }
        let parsed = options(&raw);
        let Some(Ok(TcpOption::Sack(blocks))) = parsed.get(2) else {
            panic!("{parsed:?}");
        };
        assert_eq!(
            blocks.as_slice(),
            &[(0, 1000), (2000, 3000), (4000, 5000), (6000, 7000)]
        );
    }

    #[test]
    fn end_of_list_and_unknown() {
        assert_eq!(
            options(&[30, 4, 0xab, 0xcd, 0, 2, 4]),
            [
                Ok(TcpOption::Unknown {
                    kind: 30,
                    data: &[0xab, 0xcd]
                }),
                Ok(TcpOption::EndOfList),
            ]
        );
        assert!(options(&[]).is_empty());
    }

    #[test]
    fn bad_lengths() {
        let cases: [&[u8]; 10] = [
            &[2, 3, 0, 0],                       // MSS of length 3
            &[3, 4, 0, 0],                       // window scale of length 4
            &[4, 3, 0, 0],                       // SACK permitted with a body
            &[8, 8, 0, 0, 0, 0, 0, 0],           // timestamps of length 8
            &[5, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0], // SACK length 11 is not 2 + 8n
            &[5, 2],                             // SACK with no blocks
            &[30, 1, 0, 0],                      // length below 2
            &[30, 0, 0, 0],                      // length 0
            &[1, 1, 1, 30],                      // no length byte
            &[30, 8, 0, 0],                      // past the option space
        ];
        for raw in cases {
            let parsed = options(raw);
            assert_eq!(
                parsed.last(),
                Some(&Err(Malformed::TcpBadOption)),
                "{raw:?}"
            );
        }
        // The iterator stops after the error.
        let mut iter = TcpOptions::new(&[2, 3, 0, 0, 1, 1]);
        assert!(iter.next().unwrap().is_err());
        assert!(iter.next().is_none());
    }
}
