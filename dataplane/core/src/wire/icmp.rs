//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages: type, code, checksum, and the identifier and
//! sequence number of echo messages, which stand in for ports when keying ping flows.

use std::net::Ipv6Addr;

use super::checksum;
use super::field::be16;
use super::ip::PROTO_ICMPV6;
use super::Malformed;

pub const ICMPV4_ECHO_REPLY: u8 = 0;
pub const ICMPV4_DEST_UNREACHABLE: u8 = 3;
pub const ICMPV4_ECHO_REQUEST: u8 = 8;
pub const ICMPV4_TIME_EXCEEDED: u8 = 11;

pub const ICMPV6_DEST_UNREACHABLE: u8 = 1;
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
pub const ICMPV6_PARAMETER_PROBLEM: u8 = 4;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// Every ICMPv4 message has 8 header bytes: type, code, checksum and four type-specific ones.
pub const ICMPV4_HEADER_LEN: usize = 8;
/// ICMPv6 guarantees only type, code and checksum.
pub const ICMPV6_HEADER_LEN: usize = 4;
/// Type, code, checksum, identifier, sequence number.
pub const ECHO_HEADER_LEN: usize = 8;

/// A view of an ICMPv4 message; the buffer is the IP payload.
#[derive(Debug, Clone, Copy)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        if buffer.as_ref().len() < ICMPV4_HEADER_LEN {
            return Err(Malformed::IcmpTruncated);
        }
        Ok(Icmpv4Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    #[inline]
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), ICMPV4_ECHO_REQUEST | ICMPV4_ECHO_REPLY)
    }

    /// The identifier of an echo request or reply; `None` for other messages.
    #[inline]
    pub fn echo_identifier(&self) -> Option<u16> {
        self.is_echo().then(|| be16(self.buffer.as_ref(), 4))
    }

    #[inline]
    pub fn echo_sequence(&self) -> Option<u16> {
        self.is_echo().then(|| be16(self.buffer.as_ref(), 6))
    }

    /// ICMPv4 sums the message alone, with no pseudo-header.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.buffer.as_ref())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Icmpv4Packet<&'a T> {
    /// What follows the 8-byte header: echo data, or the start of the packet an error is about.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        &bytes[ICMPV4_HEADER_LEN..]
    }
}

/// A view of an ICMPv6 message; the buffer is the upper-layer bytes after any extension headers.
#[derive(Debug, Clone, Copy)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Checks type, code and checksum are present, and for echo messages the identifier and
    /// sequence number too.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let bytes = buffer.as_ref();
        let needed = match bytes.first() {
            Some(&(ICMPV6_ECHO_REQUEST | ICMPV6_ECHO_REPLY)) => ECHO_HEADER_LEN,
            _ => ICMPV6_HEADER_LEN,
        };
        if bytes.len() < needed {
            return Err(Malformed::Icmpv6Truncated);
        }
        Ok(Icmpv6Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    #[inline]
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), ICMPV6_ECHO_REQUEST | ICMPV6_ECHO_REPLY)
    }

    #[inline]
    pub fn echo_identifier(&self) -> Option<u16> {
        self.is_echo().then(|| be16(self.buffer.as_ref(), 4))
    }

    #[inline]
    pub fn echo_sequence(&self) -> Option<u16> {
        self.is_echo().then(|| be16(self.buffer.as_ref(), 6))
    }

    /// ICMPv6 includes the IPv6 pseudo-header in its checksum.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        checksum::verify_transport_v6(src, dst, PROTO_ICMPV6, self.buffer.as_ref())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Icmpv6Packet<&'a T> {
    /// The message body after type, code and checksum.
    #[inline]
    pub fn body(&self) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        &bytes[ICMPV6_HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_frames::{icmp_echo, V6_A, V6_B};

    #[test]
    fn v4_echo() {
        for msg_type in [ICMPV4_ECHO_REQUEST, ICMPV4_ECHO_REPLY] {
            let bytes = icmp_echo(msg_type, 0x4242, 7, b"ping");
            let packet = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(packet.msg_type(), msg_type);
            assert_eq!(packet.code(), 0);
            assert!(packet.is_echo());
            assert_eq!(packet.echo_identifier(), Some(0x4242));
            assert_eq!(packet.echo_sequence(), Some(7));
            assert_eq!(packet.payload(), b"ping");
            assert!(packet.verify_checksum());
            assert_ne!(packet.checksum(), 0);
        }
    }

    #[test]
    fn v4_error_has_no_identifier() {
        let mut bytes = icmp_echo(ICMPV4_DEST_UNREACHABLE, 0, 0, &[0x45; 28]);
        bytes[1] = 3;
        let packet = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.code(), 3);
        assert_eq!(packet.echo_identifier(), None);
        assert_eq!(packet.echo_sequence(), None);
        for len in 0..ICMPV4_HEADER_LEN {
            assert_eq!(
                Icmpv4Packet::new_checked(&bytes[..len]).unwrap_err(),
                Malformed::IcmpTruncated
            );
        }
    }

    #[test]
    fn v6_echo() {
        let (src, dst) = (Ipv6Addr::from(V6_A), Ipv6Addr::from(V6_B));
        let mut bytes = icmp_echo(ICMPV6_ECHO_REQUEST, 99, 1, b"abc");
        bytes[2..4].copy_from_slice(&[0, 0]);
        let value = checksum::transport_checksum_v6(src, dst, PROTO_ICMPV6, &bytes);
        bytes[2..4].copy_from_slice(&value.to_be_bytes());
        let packet = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.echo_identifier(), Some(99));
        assert_eq!(packet.echo_sequence(), Some(1));
        assert_eq!(packet.body().len(), 7);
        assert!(packet.verify_checksum(src, dst));
        assert!(!packet.verify_checksum(dst, dst));
        for len in 0..ECHO_HEADER_LEN {
            assert_eq!(
                Icmpv6Packet::new_checked(&bytes[..len]).unwrap_err(),
                Malformed::Icmpv6Truncated
            );
        }
    }

    #[test]
    fn v6_short_non_echo() {
        let bytes = [ICMPV6_PACKET_TOO_BIG, 0, 0, 0];
        let packet = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.msg_type(), ICMPV6_PACKET_TOO_BIG);
        assert_eq!(packet.echo_identifier(), None);
        assert!(packet.body().is_empty());
        assert!(Icmpv6Packet::new_checked(&bytes[..3]).is_err());
    }
}
