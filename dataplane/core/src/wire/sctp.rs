//! SCTP packets (RFC 9260): only the common header, which carries the ports. Chunks are left
//! to whoever needs them; the data plane keys flows and forwards.

use super::field::{be16, be32};
use super::Malformed;

/// The common header.
pub const HEADER_LEN: usize = 12;

/// A view of an SCTP packet.
#[derive(Debug, Clone, Copy)]
pub struct SctpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SctpPacket<T> {
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Malformed::SctpTruncated);
        }
        Ok(SctpPacket { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    #[inline]
    pub fn verification_tag(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    /// The CRC32c as it appears on the wire; not verified here.
    #[inline]
    pub fn checksum(&self) -> u32 {
        be32(self.buffer.as_ref(), 8)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> SctpPacket<&'a T> {
    /// The chunks after the common header.
    #[inline]
    pub fn chunks(&self) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        &bytes[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let bytes = [
            0x0b, 0x59, 0x0b, 0x5a, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 0x01, 0x00, 0x00, 0x04,
        ];
        let packet = SctpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.src_port(), 2905);
        assert_eq!(packet.dst_port(), 2906);
        assert_eq!(packet.verification_tag(), 0xdead_beef);
        assert_eq!(packet.checksum(), 0x0102_0304);
        assert_eq!(packet.chunks(), &[1, 0, 0, 4]);
        assert_eq!(
            SctpPacket::new_checked(&bytes[..11]).unwrap_err(),
            Malformed::SctpTruncated
        );
    }
}
