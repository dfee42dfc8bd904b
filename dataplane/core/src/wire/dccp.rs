//! DCCP packets (RFC 4340): the generic header, which carries the ports.

use super::field::{array, be16};
use super::Malformed;

/// Generic header with 24-bit sequence numbers (X = 0).
pub const SHORT_HEADER_LEN: usize = 12;
/// Generic header with 48-bit sequence numbers (X = 1).
pub const LONG_HEADER_LEN: usize = 16;

/// A view of a DCCP packet; the buffer is the IP payload.
#[derive(Debug, Clone, Copy)]
pub struct DccpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DccpPacket<T> {
    /// Checks the generic header and that the data offset covers it and stays in the packet.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let bytes = buffer.as_ref();
        if bytes.len() < SHORT_HEADER_LEN {
            return Err(Malformed::DccpTruncated);
        }
        let generic_len = if bytes[8] & 1 != 0 {
            LONG_HEADER_LEN
        } else {
            SHORT_HEADER_LEN
        };
        if bytes.len() < generic_len {
            return Err(Malformed::DccpTruncated);
        }
        let header_len = usize::from(bytes[4]) * 4;
        if header_len < generic_len || header_len > bytes.len() {
            return Err(Malformed::DccpBadDataOffset);
        }
        Ok(DccpPacket { buffer })
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

    /// Header length in bytes, type-specific fields and options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.bytes()[4]) * 4
    }

    #[inline]
    pub fn ccval(&self) -> u8 {
        self.bytes()[5] >> 4
    }

    #[inline]
    pub fn checksum_coverage(&self) -> u8 {
        self.bytes()[5] & 0x0f
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.bytes(), 6)
    }

    /// Request, Response, Data, Ack, ... (RFC 4340 section 5.1).
    #[inline]
    pub fn packet_type(&self) -> u8 {
        (self.bytes()[8] >> 1) & 0x0f
    }

    #[inline]
    pub fn extended_sequence_numbers(&self) -> bool {
        self.bytes()[8] & 1 != 0
    }

    #[inline]
    pub fn sequence_number(&self) -> u64 {
        let bytes = self.bytes();
        if self.extended_sequence_numbers() {
            let [a, b, c, d, e, f] = array::<6>(bytes, 10);
            u64::from_be_bytes([0, 0, a, b, c, d, e, f])
        } else {
            let [a, b, c] = array::<3>(bytes, 9);
            u64::from_be_bytes([0, 0, 0, 0, 0, a, b, c])
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> DccpPacket<&'a T> {
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        &bytes[self.header_len()..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_sequence_numbers() {
        // A Data packet (type 2) with 24-bit sequence numbers and no options.
        let mut bytes = vec![0x13, 0x88, 0x00, 0x50]; // ports 5000 -> 80
        bytes.extend_from_slice(&[3, 0x21, 0xaa, 0xbb]); // data offset, CCVal/CsCov, checksum
        bytes.extend_from_slice(&[2 << 1, 1, 2, 3]); // type, X = 0, sequence number
        bytes.extend_from_slice(b"hi");
        let packet = DccpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.src_port(), 5000);
        assert_eq!(packet.dst_port(), 80);
        assert_eq!(packet.header_len(), 12);
        assert_eq!(packet.ccval(), 2);
        assert_eq!(packet.checksum_coverage(), 1);
        assert_eq!(packet.checksum(), 0xaabb);
        assert_eq!(packet.packet_type(), 2);
        assert!(!packet.extended_sequence_numbers());
        assert_eq!(packet.sequence_number(), 0x010203);
        assert_eq!(packet.payload(), b"hi");
    }

    #[test]
    fn long_sequence_numbers() {
        // Request (type 0), X = 1, data offset 5 words (service code follows).
        let mut bytes = vec![0x13, 0x88, 0x00, 0x50, 5, 0, 0, 0, 1, 0, 1, 2, 3, 4, 5, 6];
        bytes.extend_from_slice(&[0; 4]);
        let packet = DccpPacket::new_checked(&bytes[..]).unwrap();
        assert!(packet.extended_sequence_numbers());
        assert_eq!(packet.sequence_number(), 0x0102_0304_0506);
        assert!(packet.payload().is_empty());

        assert_eq!(
            DccpPacket::new_checked(&bytes[..14]).unwrap_err(),
            Malformed::DccpTruncated
        );
        assert_eq!(
            DccpPacket::new_checked(&bytes[..19]).unwrap_err(),
            Malformed::DccpBadDataOffset
        );
        bytes[4] = 3;
        assert_eq!(
            DccpPacket::new_checked(&bytes[..]).unwrap_err(),
            Malformed::DccpBadDataOffset
        );
    }
}
