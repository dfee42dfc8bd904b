//! IPv4 packets (RFC 791).

use std::net::Ipv4Addr;

use super::checksum;
use super::field::{array, be16};
use super::ip::{Fragment, MAX_REASSEMBLED_LEN};
use super::Malformed;

/// The fixed header, without options.
pub const HEADER_LEN: usize = 20;
/// IHL is four bits of 32-bit words.
pub const MAX_HEADER_LEN: usize = 60;

pub const OPTION_END_OF_LIST: u8 = 0;
pub const OPTION_NO_OPERATION: u8 = 1;

const FLAG_DONT_FRAGMENT: u16 = 0x4000;
pub(crate) const FLAG_MORE_FRAGMENTS: u16 = 0x2000;
pub(crate) const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet. The buffer may run past the total length (Ethernet padding);
/// [`payload`](Ipv4Packet::payload) stops at the total length.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks version, header length, total length, option lengths and that a fragment cannot
    /// reassemble past 65535 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(Malformed::Ipv4Truncated);
        }
        if bytes[0] >> 4 != 4 {
            return Err(Malformed::Ipv4BadVersion);
        }
        let header_len = usize::from(bytes[0] & 0x0f) * 4;
        if header_len < HEADER_LEN {
            return Err(Malformed::Ipv4BadHeaderLength);
        }
        let total_len = usize::from(be16(bytes, 2));
        if total_len < header_len {
            return Err(Malformed::Ipv4BadTotalLength);
        }
        if total_len > bytes.len() {
            return Err(Malformed::Ipv4Truncated);
        }
        if header_len > HEADER_LEN {
            check_options(&bytes[HEADER_LEN..header_len])?;
        }
        let fragment_offset = usize::from(be16(bytes, 6) & FRAGMENT_OFFSET_MASK) * 8;
        if fragment_offset + (total_len - header_len) > MAX_REASSEMBLED_LEN {
            return Err(Malformed::Ipv4BadFragment);
        }
        Ok(Ipv4Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.bytes()[0] >> 4
    }

    /// Header length in bytes, options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.bytes()[0] & 0x0f) * 4
    }

    #[inline]
    pub fn dscp(&self) -> u8 {
        self.bytes()[1] >> 2
    }

    #[inline]
    pub fn ecn(&self) -> u8 {
        self.bytes()[1] & 0x03
    }

    /// Header plus payload, in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.bytes(), 2)
    }

    #[inline]
    pub fn identification(&self) -> u16 {
        be16(self.bytes(), 4)
    }

    #[inline]
    pub fn dont_fragment(&self) -> bool {
        be16(self.bytes(), 6) & FLAG_DONT_FRAGMENT != 0
    }

    #[inline]
    pub fn more_fragments(&self) -> bool {
        be16(self.bytes(), 6) & FLAG_MORE_FRAGMENTS != 0
    }

    /// Position of this fragment's data in the datagram, in bytes (the field counts 8-byte units).
    #[inline]
    pub fn fragment_offset(&self) -> u16 {
        (be16(self.bytes(), 6) & FRAGMENT_OFFSET_MASK) << 3
    }

    #[inline]
    pub fn fragment(&self) -> Fragment {
        Fragment::from_offset(self.fragment_offset(), self.more_fragments())
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.bytes()[8]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.bytes()[9]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.bytes(), 10)
    }

    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.bytes(), 12))
    }

    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.bytes(), 16))
    }

    /// True when the header checksum is correct. The data plane forwards without checking (the
    /// NIC usually has), so this is off the fast path.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(&self.bytes()[..self.header_len()])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The whole header, options included.
    #[inline]
    pub fn header(&self) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        &bytes[..self.header_len()]
    }

    /// The raw options, already checked to be well-formed TLVs.
    #[inline]
    pub fn options(&self) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        &bytes[HEADER_LEN..self.header_len()]
    }

    /// The bytes after the header, up to the total length: padding after it is not payload.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        &bytes[self.header_len()..usize::from(self.total_len())]
    }
}

/// Walks the option TLVs so that anything later reading them can trust every length byte.
fn check_options(options: &[u8]) -> Result<(), Malformed> {
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        match kind {
            // What follows the end-of-list option is padding.
            OPTION_END_OF_LIST => return Ok(()),
            OPTION_NO_OPERATION => at += 1,
            _ => {
                let len = usize::from(*options.get(at + 1).ok_or(Malformed::Ipv4BadOption)?);
                if len < 2 || at + len > options.len() {
                    return Err(Malformed::Ipv4BadOption);
                }
                at += len;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::PROTO_UDP;
    use crate::wire::test_frames::{ipv4, ipv4_with, V4_A, V4_B};

    #[test]
    fn fields() {
        let bytes = ipv4(PROTO_UDP, &[1, 2, 3, 4, 5]);
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.total_len(), 25);
        assert_eq!(packet.protocol(), PROTO_UDP);
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.identification(), 0x1234);
        assert_eq!(packet.dscp(), 0);
        assert_eq!(packet.ecn(), 0);
        assert_eq!(packet.src(), Ipv4Addr::from(V4_A));
        assert_eq!(packet.dst(), Ipv4Addr::from(V4_B));
        assert!(!packet.dont_fragment());
        assert!(!packet.more_fragments());
        assert_eq!(packet.fragment_offset(), 0);
        assert_eq!(packet.fragment(), Fragment::None);
        assert!(packet.options().is_empty());
        assert_eq!(packet.header().len(), 20);
        assert_eq!(packet.payload(), &[1, 2, 3, 4, 5]);
        assert!(packet.verify_checksum());
        assert_ne!(packet.checksum(), 0);
    }

    #[test]
    fn bad_checksum() {
        let mut bytes = ipv4(PROTO_UDP, &[]);
        bytes[8] = 1;
        assert!(!Ipv4Packet::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum());
    }

    #[test]
    fn padding_is_not_payload() {
        let mut bytes = ipv4(PROTO_UDP, &[7; 6]);
        bytes.extend_from_slice(&[0; 20]);
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload(), &[7; 6]);
    }

    #[test]
    fn valid_options() {
        // NOP, NOP, record route with one slot (len 7), end of list.
        let options = [1, 1, 7, 7, 4, 0, 0, 0, 0, 0, 0, 0];
        let bytes = ipv4_with(PROTO_UDP, &options, 0, &[0xaa]);
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.header_len(), 32);
        assert_eq!(packet.options(), &options);
        assert_eq!(packet.payload(), &[0xaa]);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn bad_options() {
        let cases: [&[u8]; 5] = [
            &[7, 1, 0, 0],               // length below 2
            &[7, 0, 0, 0],               // length 0
            &[1, 1, 1, 7],               // kind with no length byte
            &[7, 5, 0, 0],               // runs past the header
            &[1, 68, 40, 0, 0, 0, 0, 0], // timestamp longer than the options
        ];
        for options in cases {
            let bytes = ipv4_with(PROTO_UDP, options, 0, &[]);
            assert_eq!(
                Ipv4Packet::new_checked(&bytes[..]).unwrap_err(),
                Malformed::Ipv4BadOption,
                "{options:?}"
            );
        }
        // Garbage after end-of-list is padding.
        let bytes = ipv4_with(PROTO_UDP, &[0, 99, 1, 2], 0, &[]);
        assert!(Ipv4Packet::new_checked(&bytes[..]).is_ok());
    }

    #[test]
    fn fragments() {
        let first = ipv4_with(PROTO_UDP, &[], 0x2000, &[0; 16]);
        let packet = Ipv4Packet::new_checked(&first[..]).unwrap();
        assert!(packet.more_fragments());
        assert_eq!(packet.fragment(), Fragment::First);

        let middle = ipv4_with(PROTO_UDP, &[], 0x2000 | 185, &[0; 16]);
        let packet = Ipv4Packet::new_checked(&middle[..]).unwrap();
        assert_eq!(packet.fragment_offset(), 1480);
        assert_eq!(packet.fragment(), Fragment::NonFirst);

        let last = ipv4_with(PROTO_UDP, &[], 370, &[0; 16]);
        let packet = Ipv4Packet::new_checked(&last[..]).unwrap();
        assert!(!packet.more_fragments());
        assert_eq!(packet.fragment(), Fragment::NonFirst);

        let whole = ipv4_with(PROTO_UDP, &[], 0x4000, &[0; 16]);
        let packet = Ipv4Packet::new_checked(&whole[..]).unwrap();
        assert!(packet.dont_fragment());
        assert_eq!(packet.fragment(), Fragment::None);
    }

    #[test]
    fn ping_of_death() {
        // Offset 65528 plus 16 data bytes ends past 65535.
        let bytes = ipv4_with(PROTO_UDP, &[], 0x1fff, &[0; 16]);
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).unwrap_err(),
            Malformed::Ipv4BadFragment
        );
        let bytes = ipv4_with(PROTO_UDP, &[], 0x1fff, &[0; 7]);
        assert!(Ipv4Packet::new_checked(&bytes[..]).is_ok());
    }

    #[test]
    fn bad_headers() {
        let good = ipv4(PROTO_UDP, &[0; 8]);

        let mut bytes = good.clone();
        bytes[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).unwrap_err(),
            Malformed::Ipv4BadVersion
        );

        let mut bytes = good.clone();
        bytes[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).unwrap_err(),
            Malformed::Ipv4BadHeaderLength
        );

        let mut bytes = good.clone();
        bytes[3] = 19;
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).unwrap_err(),
            Malformed::Ipv4BadTotalLength
        );

        let mut bytes = good.clone();
        bytes[3] = 29;
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).unwrap_err(),
            Malformed::Ipv4Truncated
        );

        // IHL of 15 words in a 28-byte packet: the header outruns the total length.
        let mut bytes = good.clone();
        bytes[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).unwrap_err(),
            Malformed::Ipv4BadTotalLength
        );

        for len in 0..good.len() {
            assert_eq!(
                Ipv4Packet::new_checked(&good[..len]).unwrap_err(),
                Malformed::Ipv4Truncated,
                "{len}"
            );
        }
    }
}
