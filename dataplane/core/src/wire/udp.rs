//! UDP datagrams (RFC 768).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::field::be16;
use super::ip::PROTO_UDP;
use super::Malformed;

pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram over the IP payload. The UDP length may be shorter than the IP
/// payload (the rest is ignored, as Linux does) but not longer.
#[derive(Debug, Clone, Copy)]
pub struct UdpDatagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    /// Checks the header and that the UDP length lies between 8 and the buffer length.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(Malformed::UdpTruncated);
        }
        let length = usize::from(be16(bytes, 4));
        if length < HEADER_LEN || length > bytes.len() {
            return Err(Malformed::UdpBadLength);
        }
        Ok(UdpDatagram { buffer })
    }

    /// For the first fragment of a fragmented datagram, whose UDP length counts bytes still to
    /// come: checks only the header. The payload then stops at the end of the buffer.
    #[inline]
    pub fn new_first_fragment(buffer: T) -> Result<Self, Malformed> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(Malformed::UdpTruncated);
        }
        if usize::from(be16(bytes, 4)) < HEADER_LEN {
            return Err(Malformed::UdpBadLength);
        }
        Ok(UdpDatagram { buffer })
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

    /// Header plus payload, in bytes, as the header states it.
    #[inline]
    pub fn length(&self) -> u16 {
        be16(self.bytes(), 4)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.bytes(), 6)
    }

    /// The datagram as the UDP length bounds it (or the buffer, for a first fragment).
    #[inline]
    fn datagram(&self) -> &[u8] {
        let bytes = self.bytes();
        &bytes[..usize::from(self.length()).min(bytes.len())]
    }

    /// Over IPv4 a zero checksum means the sender did not compute one (RFC 768), which passes.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0 || checksum::verify_transport_v4(src, dst, PROTO_UDP, self.datagram())
    }

    /// Over IPv6 the checksum is mandatory (RFC 8200 section 8.1), so zero fails.
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        self.checksum() != 0 && checksum::verify_transport_v6(src, dst, PROTO_UDP, self.datagram())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpDatagram<&'a T> {
    /// The bytes after the header, up to the UDP length.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        let end = usize::from(self.length()).min(bytes.len());
        bytes.get(HEADER_LEN..end).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_frames::{udp, V4_A, V4_B, V6_A, V6_B};

    #[test]
    fn fields() {
        let bytes = udp(5353, 53, b"query");
        let datagram = UdpDatagram::new_checked(&bytes[..]).unwrap();
        assert_eq!(datagram.src_port(), 5353);
        assert_eq!(datagram.dst_port(), 53);
        assert_eq!(datagram.length(), 13);
        assert_eq!(datagram.checksum(), 0);
        assert_eq!(datagram.payload(), b"query");
    }

    #[test]
    fn length_bounds_payload() {
        let mut bytes = udp(1, 2, b"abcdef");
        bytes[5] = 10;
        let datagram = UdpDatagram::new_checked(&bytes[..]).unwrap();
        assert_eq!(datagram.payload(), b"ab");
    }

    #[test]
    fn bad_length() {
        let good = udp(1, 2, b"abc");
        for len in 0..HEADER_LEN {
            assert_eq!(
                UdpDatagram::new_checked(&good[..len]).unwrap_err(),
                Malformed::UdpTruncated
            );
        }
        for len in HEADER_LEN..good.len() {
            assert_eq!(
                UdpDatagram::new_checked(&good[..len]).unwrap_err(),
                Malformed::UdpBadLength
            );
        }
        let mut bytes = good.clone();
        bytes[5] = 7;
        assert_eq!(
            UdpDatagram::new_checked(&bytes[..]).unwrap_err(),
            Malformed::UdpBadLength
        );
    }

    #[test]
    fn first_fragment() {
        let mut bytes = udp(1, 2, &[0; 16]);
        bytes[4..6].copy_from_slice(&3000u16.to_be_bytes());
        assert!(UdpDatagram::new_checked(&bytes[..]).is_err());
        let datagram = UdpDatagram::new_first_fragment(&bytes[..]).unwrap();
        assert_eq!(datagram.length(), 3000);
        assert_eq!(datagram.payload().len(), 16);
        assert!(!datagram.verify_checksum_v6(V6_A.into(), V6_B.into()));
        bytes[5] = 0;
        bytes[4] = 0;
        assert_eq!(
            UdpDatagram::new_first_fragment(&bytes[..]).unwrap_err(),
            Malformed::UdpBadLength
        );
    }

    #[test]
    fn checksums() {
        let (src, dst) = (Ipv4Addr::from(V4_A), Ipv4Addr::from(V4_B));
        let mut bytes = udp(1, 2, b"xyz");
        assert!(UdpDatagram::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum_v4(src, dst));
        assert!(!UdpDatagram::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum_v6(V6_A.into(), V6_B.into()));

        let value = checksum::transport_checksum_v4(src, dst, PROTO_UDP, &bytes);
        bytes[6..8].copy_from_slice(&value.to_be_bytes());
        let datagram = UdpDatagram::new_checked(&bytes[..]).unwrap();
        assert!(datagram.verify_checksum_v4(src, dst));
        assert!(!datagram.verify_checksum_v4(dst, dst));

        let (src6, dst6) = (Ipv6Addr::from(V6_A), Ipv6Addr::from(V6_B));
        bytes[6..8].copy_from_slice(&[0, 0]);
        let value = checksum::transport_checksum_v6(src6, dst6, PROTO_UDP, &bytes);
        bytes[6..8].copy_from_slice(&value.to_be_bytes());
        assert!(UdpDatagram::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum_v6(src6, dst6));
    }
}
