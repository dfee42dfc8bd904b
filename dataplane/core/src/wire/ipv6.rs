//! IPv6 packets (RFC 8200) and the walk over their extension headers to the upper layer.

use std::net::Ipv6Addr;

use super::field::{array, be16, be32};
use super::ip::{
    Fragment, MAX_REASSEMBLED_LEN, PROTO_AH, PROTO_HIP, PROTO_HOPOPT, PROTO_IPV6_FRAG,
    PROTO_IPV6_OPTS, PROTO_IPV6_ROUTE, PROTO_MOBILITY_HEADER, PROTO_SHIM6,
};
use super::Malformed;

pub const HEADER_LEN: usize = 40;
/// Real traffic carries two or three; a long chain is an attempt to push the transport header
/// out of reach of whoever inspects it (RFC 7112), so the walk gives up past this many.
pub const MAX_EXTENSION_HEADERS: usize = 8;
pub const FRAGMENT_HEADER_LEN: usize = 8;

/// Hop-by-hop option carrying a jumbogram's real length (RFC 2675).
const OPTION_JUMBO_PAYLOAD: u8 = 0xc2;
const OPTION_PAD1: u8 = 0;

/// True for the headers the walk steps over to reach the upper layer. ESP is not one: what
/// follows it is encrypted, so it is the upper layer as far as the data plane can see.
#[inline]
pub fn is_extension_header(protocol: u8) -> bool {
    matches!(
        protocol,
        PROTO_HOPOPT
            | PROTO_IPV6_ROUTE
            | PROTO_IPV6_FRAG
            | PROTO_IPV6_OPTS
            | PROTO_AH
            | PROTO_MOBILITY_HEADER
            | PROTO_HIP
            | PROTO_SHIM6
    )
}

/// A view of an IPv6 packet. The buffer may run past the payload length (Ethernet padding);
/// [`payload`](Ipv6Packet::payload) stops at the payload length.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Checks version and payload length. Extension headers are checked by the walk
    /// ([`upper_layer`](Ipv6Packet::upper_layer)), which every user of the payload needs anyway.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(Malformed::Ipv6Truncated);
        }
        if bytes[0] >> 4 != 6 {
            return Err(Malformed::Ipv6BadVersion);
        }
        let payload_len = usize::from(be16(bytes, 4));
        if HEADER_LEN + payload_len > bytes.len() {
            return Err(Malformed::Ipv6Truncated);
        }
        // A jumbogram says payload length 0 and puts its length in a hop-by-hop option.
        if payload_len == 0 && bytes[6] == PROTO_HOPOPT && has_jumbo_option(&bytes[HEADER_LEN..]) {
            return Err(Malformed::Ipv6Jumbogram);
        }
        Ok(Ipv6Packet { buffer })
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

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (be16(self.bytes(), 0) >> 4) as u8
    }

    #[inline]
    pub fn flow_label(&self) -> u32 {
        be32(self.bytes(), 0) & 0x000f_ffff
    }

    /// Bytes after the fixed header, extension headers included.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.bytes(), 4)
    }

    /// Fixed header plus payload, in bytes.
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// The header after the fixed one: an extension header or the upper layer.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.bytes()[6]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.bytes()[7]
    }

    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.bytes(), 8))
    }

    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.bytes(), 24))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6Packet<&'a T> {
    /// The bytes after the fixed header, up to the payload length.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        &bytes[HEADER_LEN..self.total_len()]
    }

    /// The extension headers in order, each checked as it is reached.
    #[inline]
    pub fn extension_headers(&self) -> Ipv6ExtensionHeaders<'a> {
        let bytes: &'a [u8] = self.buffer.as_ref();
        Ipv6ExtensionHeaders {
            packet: &bytes[..self.total_len()],
            next_header: self.next_header(),
            offset: HEADER_LEN,
            count: 0,
            fragment: Fragment::None,
            ended: false,
        }
    }

    /// Walks the extension headers to the upper-layer protocol.
    #[inline]
    pub fn upper_layer(&self) -> Result<UpperLayer, Malformed> {
        self.extension_headers().upper_layer()
    }

    /// The upper-layer bytes (or, for a non-first fragment, the fragment data) that
    /// `upper_layer` located.
    #[inline]
    pub fn upper_layer_bytes(&self, upper_layer: &UpperLayer) -> &'a [u8] {
        let bytes: &'a [u8] = self.buffer.as_ref();
        bytes
            .get(upper_layer.offset..self.total_len())
            .unwrap_or_default()
    }
}

/// Where the extension-header walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// Upper-layer protocol number; ESP (50) and no-next-header (59) end the walk too.
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header; for a non-first
    /// fragment, of the fragment data.
    pub offset: usize,
    pub fragment: Fragment,
    pub extension_headers: u8,
}

/// One extension header as found by the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6ExtensionHeader<'a> {
    /// This header's own protocol number (0 hop-by-hop, 43 routing, 44 fragment, ...).
    pub protocol: u8,
    /// What follows it.
    pub next_header: u8,
    /// Offset from the start of the IPv6 header.
    pub offset: usize,
    /// The whole header, next-header and length bytes included.
    pub bytes: &'a [u8],
}

/// Iterator over a packet's extension headers. It stops after an error, at the upper layer, and
/// after the fragment header of a non-first fragment, since what follows that is fragment data.
#[derive(Debug, Clone)]
pub struct Ipv6ExtensionHeaders<'a> {
    /// Fixed header and payload, cut at the payload length.
    packet: &'a [u8],
    next_header: u8,
    offset: usize,
    count: u8,
    fragment: Fragment,
    ended: bool,
}

impl<'a> Ipv6ExtensionHeaders<'a> {
    /// Runs the walk to its end.
    #[inline]
    pub fn upper_layer(mut self) -> Result<UpperLayer, Malformed> {
        for header in self.by_ref() {
            header?;
        }
        Ok(UpperLayer {
            protocol: self.next_header,
            offset: self.offset,
            fragment: self.fragment,
            extension_headers: self.count,
        })
    }

    fn step(&mut self) -> Result<Option<Ipv6ExtensionHeader<'a>>, Malformed> {
        let protocol = self.next_header;
        if !is_extension_header(protocol) {
            return Ok(None);
        }
        if usize::from(self.count) == MAX_EXTENSION_HEADERS {
            return Err(Malformed::Ipv6TooManyExtensionHeaders);
        }
        // Hop-by-hop options are read by every router, so RFC 8200 allows them only first.
        if protocol == PROTO_HOPOPT && self.count > 0 {
            return Err(Malformed::Ipv6BadExtensionHeader);
        }
        let rest = &self.packet[self.offset..];
        if rest.len() < 2 {
            return Err(Malformed::Ipv6BadExtensionHeader);
        }
        let len = match protocol {
            PROTO_IPV6_FRAG => FRAGMENT_HEADER_LEN,
            // RFC 4302: AH counts 4-byte words, minus 2.
            PROTO_AH => (usize::from(rest[1]) + 2) * 4,
            _ => (usize::from(rest[1]) + 1) * 8,
        };
        let Some(bytes) = rest.get(..len) else {
            return Err(Malformed::Ipv6BadExtensionHeader);
        };
        let header = Ipv6ExtensionHeader {
            protocol,
            next_header: bytes[0],
            offset: self.offset,
            bytes,
        };
        self.offset += len;
        self.next_header = header.next_header;
        self.count += 1;
        if protocol == PROTO_IPV6_FRAG {
            // A second fragment header means nested fragmentation, which no stack produces;
            // evasion tools do.
            if self.fragment != Fragment::None {
                return Err(Malformed::Ipv6BadExtensionHeader);
            }
            let field = be16(bytes, 2);
            let fragment_offset = field & 0xfff8;
            let more_fragments = field & 1 != 0;
            let data_len = self.packet.len() - self.offset;
            if usize::from(fragment_offset) + data_len > MAX_REASSEMBLED_LEN {
                return Err(Malformed::Ipv6BadFragment);
            }
            self.fragment = Fragment::from_offset(fragment_offset, more_fragments);
            if self.fragment == Fragment::NonFirst {
                self.ended = true;
            }
        }
        Ok(Some(header))
    }
}

impl<'a> Iterator for Ipv6ExtensionHeaders<'a> {
    type Item = Result<Ipv6ExtensionHeader<'a>, Malformed>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        match self.step() {
            Ok(Some(header)) => Some(Ok(header)),
            Ok(None) => {
                self.ended = true;
                None
            }
            Err(malformed) => {
                self.ended = true;
                Some(Err(malformed))
            }
        }
    }
}

/// Looks for a jumbo payload option in the hop-by-hop header at the start of `rest`, reading
/// only what is there: the header's own length is not trusted.
fn has_jumbo_option(rest: &[u8]) -> bool {
    let Some(&len_field) = rest.get(1) else {
        return false;
    };
    let end = ((usize::from(len_field) + 1) * 8).min(rest.len());
    let mut at = 2;
    while at < end {
        match rest[at] {
            OPTION_PAD1 => at += 1,
            OPTION_JUMBO_PAYLOAD => return true,
            _ => match rest.get(at + 1) {
                Some(&len) => at += 2 + usize::from(len),
                None => return false,
            },
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::{PROTO_ESP, PROTO_IPV6_NONXT, PROTO_TCP, PROTO_UDP};
    use crate::wire::test_frames::{ah, extension, fragment_header, ipv6, V6_A, V6_B};

    fn walk(bytes: &[u8]) -> Result<UpperLayer, Malformed> {
        Ipv6Packet::new_checked(bytes)?.upper_layer()
    }

    #[test]
    fn fields() {
        let mut bytes = ipv6(PROTO_UDP, &[1, 2, 3]);
        bytes[0] = 0x6a;
        bytes[1] = 0xb1;
        bytes[2] = 0x23;
        bytes[3] = 0x45;
        let packet = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0xab);
        assert_eq!(packet.flow_label(), 0x12345);
        assert_eq!(packet.payload_len(), 3);
        assert_eq!(packet.total_len(), 43);
        assert_eq!(packet.next_header(), PROTO_UDP);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.src(), Ipv6Addr::from(V6_A));
        assert_eq!(packet.dst(), Ipv6Addr::from(V6_B));
        assert_eq!(packet.payload(), &[1, 2, 3]);
        let upper = packet.upper_layer().unwrap();
        assert_eq!(
            upper,
            UpperLayer {
                protocol: PROTO_UDP,
                offset: 40,
                fragment: Fragment::None,
                extension_headers: 0
            }
        );
        assert_eq!(packet.upper_layer_bytes(&upper), &[1, 2, 3]);
    }

    #[test]
    fn padding_is_not_payload() {
        let mut bytes = ipv6(PROTO_UDP, &[5; 8]);
        bytes.extend_from_slice(&[0; 10]);
        let packet = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload(), &[5; 8]);
    }

    #[test]
    fn bad_fixed_header() {
        let good = ipv6(PROTO_UDP, &[0; 8]);
        for len in 0..good.len() {
            assert_eq!(
                Ipv6Packet::new_checked(&good[..len]).unwrap_err(),
                Malformed::Ipv6Truncated,
                "{len}"
            );
        }
        let mut bytes = good.clone();
        bytes[0] = 0x40;
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap_err(),
            Malformed::Ipv6BadVersion
        );
    }

    #[test]
    fn hop_by_hop_routing_destination() {
        let mut payload = extension(PROTO_IPV6_ROUTE, &[1, 4, 0, 0, 0, 0]);
        payload.extend(extension(PROTO_IPV6_OPTS, &[0; 14]));
        payload.extend(extension(PROTO_TCP, &[1, 4, 0, 0, 0, 0]));
        payload.extend_from_slice(&[0xee; 20]);
        let bytes = ipv6(PROTO_HOPOPT, &payload);
        let packet = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        let headers: Vec<_> = packet.extension_headers().map(Result::unwrap).collect();
        let kinds: Vec<_> = headers.iter().map(|h| h.protocol).collect();
        assert_eq!(kinds, [PROTO_HOPOPT, PROTO_IPV6_ROUTE, PROTO_IPV6_OPTS]);
        assert_eq!(headers[1].offset, 48);
        assert_eq!(headers[1].bytes.len(), 16);
        assert_eq!(headers[2].next_header, PROTO_TCP);
        let upper = packet.upper_layer().unwrap();
        assert_eq!(upper.protocol, PROTO_TCP);
        assert_eq!(upper.offset, 40 + 8 + 16 + 8);
        assert_eq!(upper.extension_headers, 3);
        assert_eq!(packet.upper_layer_bytes(&upper), &[0xee; 20]);
    }

    #[test]
    fn hop_by_hop_must_come_first() {
        let mut payload = extension(PROTO_HOPOPT, &[1, 4, 0, 0, 0, 0]);
        payload.extend(extension(PROTO_UDP, &[1, 4, 0, 0, 0, 0]));
        let bytes = ipv6(PROTO_IPV6_OPTS, &payload);
        assert_eq!(walk(&bytes).unwrap_err(), Malformed::Ipv6BadExtensionHeader);
    }

    #[test]
    fn fragment_headers() {
        let mut first = fragment_header(PROTO_UDP, 0, true, 7);
        first.extend_from_slice(&[0; 16]);
        let upper = walk(&ipv6(PROTO_IPV6_FRAG, &first)).unwrap();
        assert_eq!(upper.fragment, Fragment::First);
        assert_eq!(upper.protocol, PROTO_UDP);
        assert_eq!(upper.offset, 48);

        let mut later = fragment_header(PROTO_UDP, 1448, false, 7);
        later.extend_from_slice(&[0; 16]);
        let bytes = ipv6(PROTO_IPV6_FRAG, &later);
        let upper = walk(&bytes).unwrap();
        assert_eq!(upper.fragment, Fragment::NonFirst);
        assert_eq!(upper.protocol, PROTO_UDP);
        assert_eq!(upper.offset, 48);

        // Whatever follows a non-first fragment header is data, even if it looks like a header.
        let mut later = fragment_header(PROTO_IPV6_OPTS, 8, true, 7);
        later.extend_from_slice(&[0xff; 3]);
        let upper = walk(&ipv6(PROTO_IPV6_FRAG, &later)).unwrap();
        assert_eq!(upper.fragment, Fragment::NonFirst);
        assert_eq!(upper.protocol, PROTO_IPV6_OPTS);

        let mut atomic = fragment_header(PROTO_TCP, 0, false, 7);
        atomic.extend_from_slice(&[0; 20]);
        let upper = walk(&ipv6(PROTO_IPV6_FRAG, &atomic)).unwrap();
        assert_eq!(upper.fragment, Fragment::None);
        assert_eq!(upper.protocol, PROTO_TCP);
    }

    #[test]
    fn nested_fragment_header() {
        let mut payload = fragment_header(PROTO_IPV6_FRAG, 0, true, 1);
        payload.extend(fragment_header(PROTO_UDP, 0, true, 2));
        payload.extend_from_slice(&[0; 8]);
        assert_eq!(
            walk(&ipv6(PROTO_IPV6_FRAG, &payload)).unwrap_err(),
            Malformed::Ipv6BadExtensionHeader
        );
    }

    #[test]
    fn fragment_past_65535() {
        let mut payload = fragment_header(PROTO_UDP, 65528, false, 1);
        payload.extend_from_slice(&[0; 16]);
        assert_eq!(
            walk(&ipv6(PROTO_IPV6_FRAG, &payload)).unwrap_err(),
            Malformed::Ipv6BadFragment
        );
    }

    #[test]
    fn authentication_header() {
        let mut payload = ah(PROTO_TCP, 12);
        payload.extend_from_slice(&[0; 20]);
        let upper = walk(&ipv6(PROTO_AH, &payload)).unwrap();
        assert_eq!(upper.protocol, PROTO_TCP);
        assert_eq!(upper.offset, 40 + 24);
    }

    #[test]
    fn esp_and_no_next_header_end_the_walk() {
        let mut payload = extension(PROTO_ESP, &[0; 6]);
        payload.extend_from_slice(&[0x11; 30]);
        let upper = walk(&ipv6(PROTO_IPV6_OPTS, &payload)).unwrap();
        assert_eq!(upper.protocol, PROTO_ESP);
        assert_eq!(upper.offset, 48);

        let upper = walk(&ipv6(PROTO_IPV6_NONXT, &[])).unwrap();
        assert_eq!(upper.protocol, PROTO_IPV6_NONXT);
        assert_eq!(upper.offset, 40);
    }

    fn chain(count: usize) -> Vec<u8> {
        let mut payload = Vec::new();
        for i in 0..count {
            let next = if i + 1 == count {
                PROTO_UDP
            } else {
                PROTO_IPV6_OPTS
            };
            payload.extend(extension(next, &[0; 6]));
        }
        payload.extend_from_slice(&[0; 8]);
        ipv6(PROTO_IPV6_OPTS, &payload)
    }

    #[test]
    fn extension_header_limit() {
        assert_eq!(walk(&chain(8)).unwrap().extension_headers, 8);
        assert_eq!(
            walk(&chain(9)).unwrap_err(),
            Malformed::Ipv6TooManyExtensionHeaders
        );
        let bytes = chain(9);
        let packet = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        let results: Vec<_> = packet.extension_headers().collect();
        assert_eq!(results.len(), 9);
        assert!(results[8].is_err());
    }

    #[test]
    fn extension_header_past_payload() {
        // Claims 16 bytes, has 8.
        let mut bytes = ipv6(PROTO_IPV6_ROUTE, &extension(PROTO_UDP, &[0; 6]));
        bytes[41] = 1;
        assert_eq!(walk(&bytes).unwrap_err(), Malformed::Ipv6BadExtensionHeader);
        // Only the next-header byte present.
        assert_eq!(
            walk(&ipv6(PROTO_IPV6_OPTS, &[PROTO_UDP])).unwrap_err(),
            Malformed::Ipv6BadExtensionHeader
        );
        // The header is in the buffer but past the payload length.
        let mut bytes = ipv6(PROTO_IPV6_OPTS, &[]);
        bytes.extend(extension(PROTO_UDP, &[0; 6]));
        assert_eq!(walk(&bytes).unwrap_err(), Malformed::Ipv6BadExtensionHeader);
    }

    #[test]
    fn jumbogram() {
        // Hop-by-hop header with a jumbo payload option, payload length 0.
        let mut hop_by_hop = vec![PROTO_UDP, 0, OPTION_JUMBO_PAYLOAD, 4, 0, 1, 0, 0];
        hop_by_hop.extend_from_slice(&[0; 8]);
        let mut bytes = ipv6(PROTO_HOPOPT, &hop_by_hop);
        bytes[4] = 0;
        bytes[5] = 0;
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap_err(),
            Malformed::Ipv6Jumbogram
        );
        // Payload length 0 with a hop-by-hop header but no jumbo option: just a bad header.
        bytes[2 + 40] = 1;
        assert_eq!(walk(&bytes).unwrap_err(), Malformed::Ipv6BadExtensionHeader);
    }
}
