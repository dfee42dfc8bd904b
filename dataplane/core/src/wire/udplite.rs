//! UDP-Lite datagrams (RFC 3828): UDP's ports, with a checksum coverage where UDP has its length.
//! The datagram runs to the end of the IP payload.

use super::field::be16;
use super::Malformed;

pub const HEADER_LEN: usize = 8;

/// A view of a UDP-Lite datagram; the buffer is the IP payload.
#[derive(Debug, Clone, Copy)]
pub struct UdpLiteDatagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpLiteDatagram<T> {
    /// Checks the header and that the coverage is 0 (everything) or from 8 up to the datagram
    /// length, as RFC 3828 section 3.1 requires.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let bytes = buffer.as_ref();
        let coverage = header_coverage(bytes)?;
        if coverage > bytes.len() {
            return Err(Malformed::UdpLiteBadCoverage);
        }
        Ok(UdpLiteDatagram { buffer })
    }

    /// For the first fragment of a fragmented datagram, where the coverage may reach into
    /// fragments still to come.
    #[inline]
    pub fn new_first_fragment(buffer: T) -> Result<Self, Malformed> {
        header_coverage(buffer.as_ref())?;
        Ok(UdpLiteDatagram { buffer })
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

    /// Bytes the checksum covers, from the start of the header; 0 means the whole datagram.
    #[inline]
    pub fn checksum_coverage(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpLiteDatagram<&'a T> {
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        &bytes[HEADER_LEN..]
    }
}

/// The coverage field, once the header is known to be present and the value legal on its own.
#[inline]
fn header_coverage(bytes: &[u8]) -> Result<usize, Malformed> {
    if bytes.len() < HEADER_LEN {
        return Err(Malformed::UdpLiteTruncated);
    }
    let coverage = usize::from(be16(bytes, 4));
    if coverage != 0 && coverage < HEADER_LEN {
        return Err(Malformed::UdpLiteBadCoverage);
    }
    Ok(coverage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(coverage: u16, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0x30, 0x39, 0x00, 0x35];
        bytes.extend_from_slice(&coverage.to_be_bytes());
        bytes.extend_from_slice(&[0xab, 0xcd]);
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn fields() {
        let bytes = datagram(8, b"voice");
        let view = UdpLiteDatagram::new_checked(&bytes[..]).unwrap();
        assert_eq!(view.src_port(), 12345);
        assert_eq!(view.dst_port(), 53);
        assert_eq!(view.checksum_coverage(), 8);
        assert_eq!(view.checksum(), 0xabcd);
        assert_eq!(view.payload(), b"voice");
        assert!(UdpLiteDatagram::new_checked(&datagram(0, b"")[..]).is_ok());
        assert!(UdpLiteDatagram::new_checked(&datagram(13, b"voice")[..]).is_ok());
    }

    #[test]
    fn bad_coverage() {
        for coverage in [1, 7, 14] {
            let bytes = datagram(coverage, b"voice");
            assert_eq!(
                UdpLiteDatagram::new_checked(&bytes[..]).unwrap_err(),
                Malformed::UdpLiteBadCoverage,
                "{coverage}"
            );
        }
        let bytes = datagram(1000, b"voice");
        assert!(UdpLiteDatagram::new_first_fragment(&bytes[..]).is_ok());
        assert_eq!(
            UdpLiteDatagram::new_checked(&bytes[..7]).unwrap_err(),
            Malformed::UdpLiteTruncated
        );
    }
}
