//! The internet checksum (RFC 1071) and the pseudo-header sums TCP, UDP and ICMPv6 add to it.
//!
//! Sums are kept unfolded in a `u64` so pieces (pseudo-header, header, payload) can be added with
//! plain `+` and folded once. One's complement addition is addition modulo 0xffff, and
//! 2^16, 2^32 and 2^64 are all 1 modulo 0xffff, so adding 32-bit words into a wide accumulator
//! and folding at the end gives the same result as the 16-bit end-around-carry loop of RFC 1071.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Unfolded sum of `data` read as big-endian 16-bit words, an odd last byte padded with zero.
///
/// Sums of consecutive pieces add up to the sum of the whole only if every piece but the last has
/// even length. Each 8-byte step adds at most 2^33, so the accumulator cannot overflow below
/// 2^31 steps (16 GiB).
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_be_bytes(chunk.try_into().unwrap_or([0; 8]));
        acc += (word >> 32) + (word & 0xffff_ffff);
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        acc += u64::from(u32::from_be_bytes(rest[..4].try_into().unwrap_or([0; 4])));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [last] = rest {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds an unfolded sum to 16 bits with end-around carry.
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum to store in a header: the complement of the folded sum of `data`, which must
/// have its checksum field zeroed.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// True when `data`, checksum field included, sums to all ones, the receiver's check.
#[inline]
pub fn verify(data: &[u8]) -> bool {
    fold(sum(data)) == 0xffff
}

/// Sum of the IPv4 pseudo-header (RFC 9293 section 3.1, RFC 768): addresses, protocol and the
/// transport length.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u64 {
    u64::from(u32::from(src)) + u64::from(u32::from(dst)) + u64::from(protocol) + u64::from(length)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1); `length` is the upper-layer packet
/// length, which is 32 bits wide there.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u64 {
    sum(&src.octets()) + sum(&dst.octets()) + u64::from(length) + u64::from(next_header)
}

/// Checksum to store in a TCP, UDP or UDP-Lite header sent over IPv4; `segment` is the whole
/// transport message with its checksum field zeroed.
///
/// UDP callers must send a result of 0 as 0xffff, since 0 there means "no checksum".
#[inline]
pub fn transport_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> u16 {
    // An IPv4 datagram cannot carry more than 65535 bytes, so the length fits.
    let length = segment.len() as u16;
    !fold(pseudo_header_v4(src, dst, protocol, length) + sum(segment))
}

/// Checksum to store in a TCP, UDP or ICMPv6 header sent over IPv6; `segment` is the whole
/// upper-layer message with its checksum field zeroed.
#[inline]
pub fn transport_checksum_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, segment: &[u8]) -> u16 {
    let length = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    !fold(pseudo_header_v6(src, dst, next_header, length) + sum(segment))
}

/// True when a transport message received over IPv4, checksum field included, checks out.
#[inline]
pub fn verify_transport_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> bool {
    let Ok(length) = u16::try_from(segment.len()) else {
        return false;
    };
    fold(pseudo_header_v4(src, dst, protocol, length) + sum(segment)) == 0xffff
}

/// True when an upper-layer message received over IPv6, checksum field included, checks out.
#[inline]
pub fn verify_transport_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, segment: &[u8]) -> bool {
    let Ok(length) = u32::try_from(segment.len()) else {
        return false;
    };
    fold(pseudo_header_v6(src, dst, next_header, length) + sum(segment)) == 0xffff
}

/// New checksum after one 16-bit field changed from `old` to `new` (RFC 1624 eqn. 3), so that
/// rewriting a port or a sequence number does not mean summing the whole segment again.
#[inline]
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

/// [`update_u16`] for a 32-bit field such as a TCP sequence or acknowledgment number.
#[inline]
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    let old_sum = u64::from(!(old >> 16) & 0xffff) + u64::from(!old & 0xffff);
    let new_sum = u64::from(new >> 16) + u64::from(new & 0xffff);
    !fold(u64::from(!checksum) + old_sum + new_sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071's loop, word by word, as the reference the fast sum must agree with.
    fn reference_checksum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let word = match pair {
                [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                [hi] => u16::from_be_bytes([*hi, 0]),
                _ => 0,
            };
            acc += u32::from(word);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to 2ddf0, folded ddf2. The
        // unfolded sum here differs (it adds 32-bit words) but is the same modulo 0xffff.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data) % 0xffff, 0x2ddf0 % 0xffff);
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn real_ipv4_header() {
        // 192.168.0.1 -> 192.168.0.199, UDP, as captured; checksum 0xb861.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verify(&header));
        header[10] = 0;
        header[11] = 0;
        assert_eq!(checksum(&header), 0xb861);
        assert!(!verify(&header));
    }

    #[test]
    fn agrees_with_reference_on_every_length_and_alignment() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 37 + 11) as u8).collect();
        for start in 0..8 {
            for end in start..data.len() {
                let piece = &data[start..end];
                assert_eq!(checksum(piece), reference_checksum(piece), "{start}..{end}");
            }
        }
        let ones = [0xffu8; 1001];
        assert_eq!(checksum(&ones), reference_checksum(&ones));
    }

    #[test]
    fn pieces_add_up() {
        let data: Vec<u8> = (0..64u8).collect();
        let (a, b) = data.split_at(22);
        assert_eq!(fold(sum(a) + sum(b)), fold(sum(&data)));
    }

    #[test]
    fn transport_v4_round_trip() {
        let src = Ipv4Addr::new(198, 18, 0, 1);
        let dst = Ipv4Addr::new(198, 19, 0, 2);
        let mut segment = vec![0u8; 31];
        for (i, byte) in segment.iter_mut().enumerate() {
            *byte = i as u8 ^ 0x5a;
        }
        segment[16] = 0;
        segment[17] = 0;
        let value = transport_checksum_v4(src, dst, 6, &segment);
        segment[16..18].copy_from_slice(&value.to_be_bytes());
        assert!(verify_transport_v4(src, dst, 6, &segment));
        assert!(!verify_transport_v4(src, dst, 17, &segment));
        segment[20] ^= 1;
        assert!(!verify_transport_v4(src, dst, 6, &segment));
    }

    #[test]
    fn transport_v6_round_trip() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut segment = vec![0x42u8; 40];
        segment[6] = 0;
        segment[7] = 0;
        let value = transport_checksum_v6(src, dst, 17, &segment);
        segment[6..8].copy_from_slice(&value.to_be_bytes());
        assert!(verify_transport_v6(src, dst, 17, &segment));
        assert!(!verify_transport_v6(src, dst, 6, &segment));
    }

    #[test]
    fn pseudo_header_v4_matches_bytes() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let bytes = [10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 40];
        assert_eq!(fold(pseudo_header_v4(src, dst, 6, 40)), fold(sum(&bytes)));
    }

    /// One's complement has two zeros, 0x0000 and 0xffff; incremental updates may pick either.
    fn same_value(a: u16, b: u16) -> bool {
        u32::from(a) % 0xffff == u32::from(b) % 0xffff
    }

    #[test]
    fn incremental_update_matches_recomputation() {
        let mut data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(29)).collect();
        data[16] = 0;
        data[17] = 0;
        for (old, new) in [
            (0x0102_0304u32, 0xfffe_fdfcu32),
            (0, u32::MAX),
            (0x1234, 0x1234),
        ] {
            data[4..8].copy_from_slice(&old.to_be_bytes());
            let old_checksum = checksum(&data);
            data[4..8].copy_from_slice(&new.to_be_bytes());
            let expected = checksum(&data);
            let updated = update_u32(old_checksum, old, new);
            assert!(same_value(updated, expected), "{old:x} {new:x}");

            let (lo_old, lo_new) = (old as u16, new as u16);
            data[4..8].copy_from_slice(&old.to_be_bytes());
            data[6..8].copy_from_slice(&lo_new.to_be_bytes());
            let expected = checksum(&data);
            let updated = update_u16(old_checksum, lo_old, lo_new);
            assert!(same_value(updated, expected), "{lo_old:x} {lo_new:x}");
        }
    }
}
