//! The TCP header and options as the engine sees them: parsed once into plain values, emitted in
//! one canonical layout, and rewritten in place when a proxied flow turns into pass-through.
//!
//! [`parse::tcp`](crate::wire::tcp) is the zero-copy view the fast path uses; this module is
//! what the proxy engine reasons with. Sequence numbers are [`SeqNumber`]s so that comparisons
//! are modular (RFC 9293 section 3.4); timestamps stay raw `u32`s because only the endpoint
//! that sent them interprets them (RFC 7323 section 3).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::{BitAnd, BitOr, BitOrAssign};

use super::seq::SeqNumber;
use crate::wire::checksum;
use crate::wire::ip::PROTO_TCP;
use crate::wire::tcp::{
    self as wire, TcpOption, TcpSegment, HEADER_LEN, MAX_HEADER_LEN, MAX_SACK_BLOCKS, OPTION_MSS,
    OPTION_NO_OPERATION, OPTION_SACK, OPTION_SACK_PERMITTED, OPTION_TIMESTAMPS,
    OPTION_WINDOW_SCALE,
};
use crate::wire::Malformed;

/// RFC 7323 section 2.3: a receiver treats a shift above 14 as 14, so that the scaled window
/// stays below 2^30 and sequence comparisons (which need windows below 2^31) keep working.
pub const MAX_WINDOW_SCALE: u8 = 14;

/// The option space is what a 4-bit data offset leaves after the fixed header.
const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - HEADER_LEN;

const CHECKSUM_AT: usize = 16;

/// The flags byte, with TCP's names for its bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(wire::flags::FIN);
    pub const SYN: TcpFlags = TcpFlags(wire::flags::SYN);
    pub const RST: TcpFlags = TcpFlags(wire::flags::RST);
    pub const PSH: TcpFlags = TcpFlags(wire::flags::PSH);
    pub const ACK: TcpFlags = TcpFlags(wire::flags::ACK);
    pub const URG: TcpFlags = TcpFlags(wire::flags::URG);
    pub const ECE: TcpFlags = TcpFlags(wire::flags::ECE);
    pub const CWR: TcpFlags = TcpFlags(wire::flags::CWR);

    const NAMES: [(TcpFlags, &'static str); 8] = [
        (TcpFlags::FIN, "FIN"),
        (TcpFlags::SYN, "SYN"),
        (TcpFlags::RST, "RST"),
        (TcpFlags::PSH, "PSH"),
        (TcpFlags::ACK, "ACK"),
        (TcpFlags::URG, "URG"),
        (TcpFlags::ECE, "ECE"),
        (TcpFlags::CWR, "CWR"),
    ];

    pub const fn empty() -> TcpFlags {
        TcpFlags(0)
    }

    pub const fn from_bits(bits: u8) -> TcpFlags {
        TcpFlags(bits)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every flag of `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when any flag of `other` is set.
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn union(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | other.0)
    }

    pub fn insert(&mut self, other: TcpFlags) {
        self.0 |= other.0;
    }

    pub fn remove(&mut self, other: TcpFlags) {
        self.0 &= !other.0;
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, other: TcpFlags) -> TcpFlags {
        self.union(other)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, other: TcpFlags) {
        self.insert(other);
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    fn bitand(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & other.0)
    }
}

/// `SYN|ACK`, as tcpdump would name them; `-` for none.
impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in TcpFlags::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Up to four SACK blocks (RFC 2018), each `(left edge, right edge)`, stored inline.
///
/// Blocks are kept as the wire carries them, unvalidated: whether a block makes sense (left
/// before right, inside the window) is the engine's judgement, not the parser's.
#[derive(Clone, Copy)]
pub struct SackList {
    blocks: [(SeqNumber, SeqNumber); MAX_SACK_BLOCKS],
    len: u8,
}

impl SackList {
    /// 40 bytes of option space hold four blocks, three beside timestamps (RFC 2018 section 3).
    pub const CAPACITY: usize = MAX_SACK_BLOCKS;

    pub const fn new() -> SackList {
        SackList {
            blocks: [(SeqNumber(0), SeqNumber(0)); MAX_SACK_BLOCKS],
            len: 0,
        }
    }

    /// Appends a block; false (and nothing changes) when four are already held.
    pub fn push(&mut self, left: SeqNumber, right: SeqNumber) -> bool {
        let Some(slot) = self.blocks.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = (left, right);
        self.len += 1;
        true
    }

    pub fn as_slice(&self) -> &[(SeqNumber, SeqNumber)] {
        &self.blocks[..usize::from(self.len)]
    }

    pub fn iter(&self) -> impl Iterator<Item = (SeqNumber, SeqNumber)> + '_ {
        self.as_slice().iter().copied()
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the first `len` blocks. RFC 2018 section 4 puts the most recent block first, so
    /// dropping from the end loses the least useful information.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.len = len as u8;
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Default for SackList {
    fn default() -> SackList {
        SackList::new()
    }
}

impl PartialEq for SackList {
    fn eq(&self, other: &SackList) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SackList {}

impl fmt::Debug for SackList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// The options the engine acts on. Others (MD5, TFO, MPTCP, experimental) are dropped by
/// [`SegmentHeader::parse`]: the proxy terminates each leg, so it only ever speaks its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpOptions {
    /// Maximum segment size (RFC 9293 section 3.7.1), raw: 0 or tiny values are the engine's
    /// to clamp or refuse.
    pub mss: Option<u16>,
    /// Window shift (RFC 7323 section 2), at most [`MAX_WINDOW_SCALE`] once parsed.
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub sack: SackList,
    /// `(TSval, TSecr)` (RFC 7323 section 3).
    pub timestamps: Option<(u32, u32)>,
}

impl TcpOptions {
    /// Bytes each option takes in [`SegmentHeader::emit`]'s layout, SACK blocks excepted.
    fn fixed_len(&self) -> usize {
        let mut len = 0;
        if self.mss.is_some() {
            len += 4;
        }
        // SACK-permitted rides in the two bytes of padding before timestamps when both are
        // present, as Linux sends it, and otherwise takes a word of its own.
        if self.timestamps.is_some() {
            len += 12;
        } else if self.sack_permitted {
            len += 4;
        }
        if self.window_scale.is_some() {
            len += 4;
        }
        len
    }

    /// How many SACK blocks `emit` writes: all of them, or as many as fit beside the other
    /// options (three beside timestamps).
    pub fn sack_blocks_that_fit(&self) -> usize {
        let room = MAX_OPTIONS_LEN.saturating_sub(self.fixed_len());
        // The SACK option is NOP NOP kind length, then 8 bytes a block.
        let fit = room.saturating_sub(4) / 8;
        self.sack.len().min(fit)
    }

    fn len(&self) -> usize {
        let blocks = self.sack_blocks_that_fit();
        self.fixed_len() + if blocks > 0 { 4 + 8 * blocks } else { 0 }
    }
}

/// A TCP header (RFC 9293 section 3.1) as values.
/// The ECN field of the IP header a segment arrives in or leaves in (RFC 3168 section 5): the
/// two low bits of the IPv4 TOS byte or the IPv6 traffic class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Ecn {
    #[default]
    NotEct,
    Ect1,
    Ect0,
    /// Congestion Experienced: a router marked the packet instead of dropping it.
    Ce,
}

impl Ecn {
    /// The codepoint of a TOS or traffic-class byte.
    pub const fn from_tos(tos: u8) -> Ecn {
        match tos & 0b11 {
            0b00 => Ecn::NotEct,
            0b01 => Ecn::Ect1,
            0b10 => Ecn::Ect0,
            _ => Ecn::Ce,
        }
    }

    /// `tos` with its ECN field set to this codepoint, the DSCP bits kept.
    pub const fn into_tos(self, tos: u8) -> u8 {
        let bits = match self {
            Ecn::NotEct => 0b00,
            Ecn::Ect1 => 0b01,
            Ecn::Ect0 => 0b10,
            Ecn::Ce => 0b11,
        };
        (tos & !0b11) | bits
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    pub flags: TcpFlags,
    /// As on the wire: scaling applies to every segment but SYNs (RFC 7323 section 2.2), which
    /// only the connection's state can tell.
    pub window: u16,
    pub urgent: u16,
    pub options: TcpOptions,
    /// Not part of the TCP header: the IP ECN field the segment came in, or goes out with.
    /// Parsing a TCP header alone leaves it `NotEct`; the frame reader fills it in.
    pub ecn: Ecn,
}

/// [`SegmentHeader::emit`] was handed a buffer shorter than the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {needed}-byte TCP header does not fit in {available} bytes")]
pub struct BufferTooShort {
    pub needed: usize,
    pub available: usize,
}

impl SegmentHeader {
    /// Reads the header and the options the engine uses.
    ///
    /// A malformed option rejects the segment (`Malformed::TcpBadOption`) rather than being
    /// skipped: a segment whose options cannot be read cannot be relayed faithfully either.
    /// A repeated option keeps its first value; unknown options are ignored.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        segment: &TcpSegment<&T>,
    ) -> Result<SegmentHeader, Malformed> {
        let mut options = TcpOptions::default();
        for option in segment.iter_options() {
            match option? {
                TcpOption::Mss(mss) => {
                    options.mss.get_or_insert(mss);
                }
                TcpOption::WindowScale(shift) => {
                    options
                        .window_scale
                        .get_or_insert(shift.min(MAX_WINDOW_SCALE));
                }
                TcpOption::SackPermitted => options.sack_permitted = true,
                TcpOption::Sack(blocks) if options.sack.is_empty() => {
                    for &(left, right) in blocks.as_slice() {
                        options.sack.push(SeqNumber(left), SeqNumber(right));
                    }
                }
                TcpOption::Timestamps { tsval, tsecr } => {
                    options.timestamps.get_or_insert((tsval, tsecr));
                }
                TcpOption::Sack(_)
                | TcpOption::EndOfList
                | TcpOption::NoOp
                | TcpOption::Unknown { .. } => {}
            }
        }
        Ok(SegmentHeader {
            src_port: segment.src_port(),
            dst_port: segment.dst_port(),
            seq: SeqNumber(segment.seq_number()),
            ack: SeqNumber(segment.ack_number()),
            flags: TcpFlags::from_bits(segment.flags()),
            window: segment.window(),
            urgent: segment.urgent_pointer(),
            options,
            ecn: Ecn::NotEct,
        })
    }

    /// Length of the emitted header: 20 bytes and the options, always a whole number of words.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options.len()
    }

    /// Writes the header into `out[..header_len()]` with the checksum field zeroed, and returns
    /// the length written. Fill the checksum in once the payload follows it.
    ///
    /// Options go in the order and padding Linux uses (`tcp_options_write`): MSS; SACK-permitted
    /// and timestamps packed as `SACK_PERM TS` (or `NOP NOP TS`, or `NOP NOP SACK_PERM`);
    /// `NOP WS`; `NOP NOP SACK`. Every option then sits on a word boundary, which is what
    /// receivers' fast paths (Linux's `tcp_fast_parse_options`) expect. SACK blocks that do not
    /// fit beside the rest are left off the end.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooShort> {
        let len = self.header_len();
        let available = out.len();
        let Some(out) = out.get_mut(..len) else {
            return Err(BufferTooShort {
                needed: len,
                available,
            });
        };
        out[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        out[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        out[4..8].copy_from_slice(&self.seq.0.to_be_bytes());
        out[8..12].copy_from_slice(&self.ack.0.to_be_bytes());
        out[12] = ((len / 4) as u8) << 4;
        out[13] = self.flags.bits();
        out[14..16].copy_from_slice(&self.window.to_be_bytes());
        out[16..18].copy_from_slice(&[0, 0]);
        out[18..20].copy_from_slice(&self.urgent.to_be_bytes());

        let options = &self.options;
        let mut at = HEADER_LEN;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        if let Some(mss) = options.mss {
            put(&[OPTION_MSS, 4]);
            put(&mss.to_be_bytes());
        }
        if let Some((tsval, tsecr)) = options.timestamps {
            if options.sack_permitted {
                put(&[OPTION_SACK_PERMITTED, 2]);
            } else {
                put(&[OPTION_NO_OPERATION, OPTION_NO_OPERATION]);
            }
            put(&[OPTION_TIMESTAMPS, 10]);
            put(&tsval.to_be_bytes());
            put(&tsecr.to_be_bytes());
        } else if options.sack_permitted {
            put(&[
                OPTION_NO_OPERATION,
                OPTION_NO_OPERATION,
                OPTION_SACK_PERMITTED,
                2,
            ]);
        }
        if let Some(shift) = options.window_scale {
            put(&[OPTION_NO_OPERATION, OPTION_WINDOW_SCALE, 3, shift]);
        }
        let blocks = options.sack_blocks_that_fit();
        if blocks > 0 {
            put(&[
                OPTION_NO_OPERATION,
                OPTION_NO_OPERATION,
                OPTION_SACK,
                (2 + 8 * blocks) as u8,
            ]);
            for &(left, right) in &options.sack.as_slice()[..blocks] {
                put(&left.0.to_be_bytes());
                put(&right.0.to_be_bytes());
            }
        }
        debug_assert_eq!(at, len);
        Ok(len)
    }
}

/// The TCP checksum over IPv4 of a header (checksum field zero, as `emit` leaves it) and the
/// payload that follows it, which may live in another buffer (a chained mbuf). The header is a
/// whole number of words, so the two sums add up without realignment.
pub fn checksum_v4(header: &[u8], payload: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
    debug_assert_eq!(header.len() % 2, 0);
    // An IPv4 datagram cannot carry more than 65535 bytes, so the length fits.
    let length = (header.len() + payload.len()) as u16;
    let pseudo = checksum::pseudo_header_v4(src, dst, PROTO_TCP, length);
    !checksum::fold(pseudo + checksum::sum(header) + checksum::sum(payload))
}

/// [`checksum_v4`] over IPv6 (RFC 8200 section 8.1).
pub fn checksum_v6(header: &[u8], payload: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> u16 {
    debug_assert_eq!(header.len() % 2, 0);
    let length = u32::try_from(header.len() + payload.len()).unwrap_or(u32::MAX);
    let pseudo = checksum::pseudo_header_v6(src, dst, PROTO_TCP, length);
    !checksum::fold(pseudo + checksum::sum(header) + checksum::sum(payload))
}

/// Computes and stores the checksum of a whole segment (header and payload) sent over IPv4.
pub fn fill_checksum_v4(
    tcp_bytes: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> Result<(), Malformed> {
    let field = checksum_field(tcp_bytes)?;
    *field = [0, 0];
    let value = checksum::transport_checksum_v4(src, dst, PROTO_TCP, tcp_bytes);
    tcp_bytes[CHECKSUM_AT..CHECKSUM_AT + 2].copy_from_slice(&value.to_be_bytes());
    Ok(())
}

/// Computes and stores the checksum of a whole segment (header and payload) sent over IPv6.
pub fn fill_checksum_v6(
    tcp_bytes: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
) -> Result<(), Malformed> {
    let field = checksum_field(tcp_bytes)?;
    *field = [0, 0];
    let value = checksum::transport_checksum_v6(src, dst, PROTO_TCP, tcp_bytes);
    tcp_bytes[CHECKSUM_AT..CHECKSUM_AT + 2].copy_from_slice(&value.to_be_bytes());
    Ok(())
}

fn checksum_field(tcp_bytes: &mut [u8]) -> Result<&mut [u8; 2], Malformed> {
    if tcp_bytes.len() < HEADER_LEN {
        return Err(Malformed::TcpTruncated);
    }
    tcp_bytes
        .get_mut(CHECKSUM_AT..CHECKSUM_AT + 2)
        .and_then(|field| <&mut [u8; 2]>::try_from(field).ok())
        .ok_or(Malformed::TcpTruncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::testkit::{
        header, parse_bytes, segment_bytes as emit_vec, segment_with_options as tcp_with_options,
        stored_checksum,
    };

    const SRC4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const DST4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

    use crate::test_rng::TestRng as Rng;

    fn random_header(rng: &mut Rng) -> SegmentHeader {
        let mut options = TcpOptions {
            mss: rng.chance(50).then(|| rng.u32() as u16),
            window_scale: rng
                .chance(50)
                .then(|| rng.below(u64::from(MAX_WINDOW_SCALE) + 1) as u8),
            sack_permitted: rng.chance(50),
            sack: SackList::new(),
            timestamps: rng.chance(50).then(|| (rng.u32(), rng.u32())),
        };
        let blocks = rng.below(5);
        for _ in 0..blocks {
            options
                .sack
                .push(SeqNumber(rng.u32()), SeqNumber(rng.u32()));
        }
        options.sack.truncate(options.sack_blocks_that_fit());
        SegmentHeader {
            src_port: rng.u32() as u16,
            dst_port: rng.u32() as u16,
            seq: SeqNumber(rng.u32()),
            ack: SeqNumber(rng.u32()),
            flags: TcpFlags::from_bits(rng.u32() as u8),
            window: rng.u32() as u16,
            urgent: rng.u32() as u16,
            options,
            ecn: Ecn::NotEct,
        }
    }

    #[test]
    fn flags_read_as_tcpdump_names_them() {
        let flags = TcpFlags::SYN | TcpFlags::ACK;
        assert!(flags.contains(TcpFlags::SYN));
        assert!(flags.contains(TcpFlags::SYN | TcpFlags::ACK));
        assert!(!flags.contains(TcpFlags::SYN | TcpFlags::FIN));
        assert!(flags.intersects(TcpFlags::FIN | TcpFlags::ACK));
        assert_eq!(format!("{flags:?}"), "SYN|ACK");
        assert_eq!(format!("{:?}", TcpFlags::empty()), "-");
        let mut flags = flags;
        flags.remove(TcpFlags::SYN);
        flags |= TcpFlags::FIN;
        assert_eq!(flags, TcpFlags::FIN | TcpFlags::ACK);
        assert_eq!(flags & TcpFlags::ACK, TcpFlags::ACK);
        assert_eq!(TcpFlags::from_bits(0xff).bits(), 0xff);
    }

    #[test]
    fn sack_list_holds_four() {
        let mut list = SackList::new();
        for i in 0..4 {
            assert!(list.push(SeqNumber(i), SeqNumber(i + 1)));
        }
        assert!(!list.push(SeqNumber(9), SeqNumber(10)));
        assert_eq!(list.len(), 4);
        list.truncate(2);
        assert_eq!(
            list.as_slice(),
            &[(SeqNumber(0), SeqNumber(1)), (SeqNumber(1), SeqNumber(2))]
        );
        // Equality looks at the held blocks only, not at stale slots.
        let mut other = SackList::new();
        other.push(SeqNumber(0), SeqNumber(1));
        other.push(SeqNumber(1), SeqNumber(2));
        assert_eq!(list, other);
        list.clear();
        assert!(list.is_empty());
    }

    #[test]
    fn parse_of_emit_is_identity() {
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5000 {
            let header = random_header(&mut rng);
            let payload_len = rng.below(4) as usize;
            let bytes = emit_vec(&header, &vec![0xa5; payload_len]);
            assert_eq!(header.header_len() % 4, 0);
            assert!(header.header_len() <= MAX_HEADER_LEN);
            let segment = TcpSegment::new_checked(&bytes[..]).unwrap();
            assert_eq!(segment.header_len(), header.header_len());
            assert_eq!(segment.payload().len(), payload_len);
            assert_eq!(SegmentHeader::parse(&segment).unwrap(), header);
        }
    }

    #[test]
    fn linux_syn_layout() {
        // A Linux 6.x SYN: MSS 1460, SACK_PERM + timestamps, NOP + window scale 7.
        let mut syn = header();
        syn.options = TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            sack: SackList::new(),
            timestamps: Some((0x1122_3344, 0)),
        };
        let bytes = emit_vec(&syn, &[]);
        #[rustfmt::skip]
        let expected: [u8; 40] = [
            0x9c, 0x40, 0x01, 0xbb,             // ports 40000 -> 443
            0x01, 0x02, 0x03, 0x04,             // seq
            0x00, 0x00, 0x00, 0x00,             // ack
            0xa0, 0x02, 0xfa, 0xf0,             // data offset 10, SYN, window 64240
            0x00, 0x00, 0x00, 0x00,             // checksum (zero), urgent
            0x02, 0x04, 0x05, 0xb4,             // MSS 1460
            0x04, 0x02, 0x08, 0x0a,             // SACK_PERM, timestamps
            0x11, 0x22, 0x33, 0x44,             // TSval
            0x00, 0x00, 0x00, 0x00,             // TSecr
            0x01, 0x03, 0x03, 0x07,             // NOP, window scale 7
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn linux_syn_ack_layouts() {
        // SYN-ACK from a peer with timestamps off (net.ipv4.tcp_timestamps=0).
        let mut syn_ack = header();
        syn_ack.flags = TcpFlags::SYN | TcpFlags::ACK;
        syn_ack.options = TcpOptions {
            mss: Some(1460),
            window_scale: Some(9),
            sack_permitted: true,
            ..TcpOptions::default()
        };
        let bytes = emit_vec(&syn_ack, &[]);
        assert_eq!(bytes[12], 0x80);
        assert_eq!(
            bytes[20..],
            [0x02, 0x04, 0x05, 0xb4, 0x01, 0x01, 0x04, 0x02, 0x01, 0x03, 0x03, 0x09]
        );

        // Timestamps without SACK (net.ipv4.tcp_sack=0): NOP NOP TS.
        syn_ack.options.sack_permitted = false;
        syn_ack.options.timestamps = Some((7, 0x0a0b_0c0d));
        let bytes = emit_vec(&syn_ack, &[]);
        assert_eq!(
            bytes[20..],
            [
                0x02, 0x04, 0x05, 0xb4, 0x01, 0x01, 0x08, 0x0a, 0, 0, 0, 7, 0x0a, 0x0b, 0x0c, 0x0d,
                0x01, 0x03, 0x03, 0x09
            ]
        );
    }

    #[test]
    fn linux_ack_with_sack_layout() {
        let mut ack = header();
        ack.flags = TcpFlags::ACK;
        ack.options.timestamps = Some((1, 2));
        ack.options.sack.push(SeqNumber(100), SeqNumber(200));
        let bytes = emit_vec(&ack, &[]);
        #[rustfmt::skip]
        assert_eq!(
            bytes[20..],
            [
                0x01, 0x01, 0x08, 0x0a, 0, 0, 0, 1, 0, 0, 0, 2,
                0x01, 0x01, 0x05, 0x0a, 0, 0, 0, 100, 0, 0, 0, 200,
            ]
        );
    }

    #[test]
    fn sack_blocks_beyond_the_option_space_are_left_off() {
        let mut ack = header();
        ack.flags = TcpFlags::ACK;
        for i in 0..4 {
            ack.options
                .sack
                .push(SeqNumber(i * 10), SeqNumber(i * 10 + 5));
        }
        assert_eq!(ack.options.sack_blocks_that_fit(), 4);
        assert_eq!(ack.header_len(), 20 + 4 + 32);
        ack.options.timestamps = Some((1, 2));
        assert_eq!(ack.options.sack_blocks_that_fit(), 3);
        assert_eq!(ack.header_len(), 20 + 12 + 4 + 24);
        let parsed = parse_bytes(&emit_vec(&ack, &[])).unwrap();
        assert_eq!(
            parsed.options.sack.as_slice(),
            &ack.options.sack.as_slice()[..3]
        );
        // With everything a SYN could carry, two blocks still fit.
        ack.options.mss = Some(1);
        ack.options.window_scale = Some(1);
        ack.options.sack_permitted = true;
        assert_eq!(ack.options.sack_blocks_that_fit(), 2);
        assert_eq!(ack.header_len(), 60);
    }

    #[test]
    fn emit_refuses_a_short_buffer() {
        let mut syn = header();
        syn.options.mss = Some(536);
        let mut out = [0u8; 23];
        assert_eq!(
            syn.emit(&mut out),
            Err(BufferTooShort {
                needed: 24,
                available: 23
            })
        );
        assert_eq!(out, [0; 23]);
    }

    #[test]
    fn window_scale_above_14_is_14() {
        let raw = tcp_with_options(&[1, 3, 3, 15]);
        assert_eq!(parse_bytes(&raw).unwrap().options.window_scale, Some(14));
        let raw = tcp_with_options(&[1, 3, 3, 255]);
        assert_eq!(parse_bytes(&raw).unwrap().options.window_scale, Some(14));
    }

    #[test]
    fn first_of_repeated_options_wins_and_unknown_are_ignored() {
        #[rustfmt::skip]
        let raw = tcp_with_options(&[
            2, 4, 0x05, 0xb4,           // MSS 1460
            2, 4, 0x02, 0x18,           // MSS 536
            3, 3, 2, 3, 3, 5,           // window scale 2, then 5
            30, 4, 0xab, 0xcd,          // unknown (MPTCP-like) option
            8, 10, 0, 0, 0, 1, 0, 0, 0, 2,
            8, 10, 0, 0, 0, 3, 0, 0, 0, 4,
            0, 0,                       // end of list and padding
        ]);
        let parsed = parse_bytes(&raw).unwrap();
        assert_eq!(parsed.options.mss, Some(1460));
        assert_eq!(parsed.options.window_scale, Some(2));
        assert_eq!(parsed.options.timestamps, Some((1, 2)));
        assert!(!parsed.options.sack_permitted);

        let mut raw = vec![1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        raw.extend_from_slice(&[1, 1, 5, 10, 0, 0, 0, 3, 0, 0, 0, 4]);
        let parsed = parse_bytes(&tcp_with_options(&raw)).unwrap();
        assert_eq!(
            parsed.options.sack.as_slice(),
            &[(SeqNumber(1), SeqNumber(2))]
        );
    }

    #[test]
    fn malformed_options_reject_the_segment() {
        let raw = tcp_with_options(&[2, 3, 0, 0]);
        assert_eq!(parse_bytes(&raw), Err(Malformed::TcpBadOption));
        let raw = tcp_with_options(&[1, 1, 30, 9]);
        assert_eq!(parse_bytes(&raw), Err(Malformed::TcpBadOption));
    }

    #[test]
    fn checksums_verify() {
        let mut rng = Rng::new(7);
        let v6_src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let v6_dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        for payload_len in [0usize, 1, 2, 3, 100, 1459] {
            let header = random_header(&mut rng);
            let payload: Vec<u8> = (0..payload_len).map(|_| rng.u32() as u8).collect();
            let mut bytes = emit_vec(&header, &payload);
            let (head, body) = bytes.split_at(header.header_len());
            let split_v4 = checksum_v4(head, body, SRC4, DST4);
            let split_v6 = checksum_v6(head, body, v6_src, v6_dst);

            fill_checksum_v4(&mut bytes, SRC4, DST4).unwrap();
            assert_eq!(stored_checksum(&bytes), split_v4);
            let segment = TcpSegment::new_checked(&bytes[..]).unwrap();
            assert!(segment.verify_checksum_v4(SRC4, DST4));

            // Filling again starts from the stored value, not from zero.
            fill_checksum_v6(&mut bytes, v6_src, v6_dst).unwrap();
            assert_eq!(stored_checksum(&bytes), split_v6);
            let segment = TcpSegment::new_checked(&bytes[..]).unwrap();
            assert!(segment.verify_checksum_v6(v6_src, v6_dst));
        }
        assert_eq!(
            fill_checksum_v4(&mut [0u8; 19], SRC4, DST4),
            Err(Malformed::TcpTruncated)
        );
    }
}
