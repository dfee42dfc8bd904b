//! Every reason the parser rejects a frame.
//!
//! Malformed input is a verdict, not an exceptional condition: the data plane drops the frame and
//! bumps one counter per reason, so the enum doubles as the index into a fixed counter array.

/// Why a frame was rejected.
///
/// Keep the variants in the same order as [`Malformed::ALL`]; `index` relies on the
/// discriminants running 0, 1, 2, ... without gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum Malformed {
    /// Offsets in [`FrameSummary`](super::FrameSummary) are `u16`, as is a DPDK mbuf segment's
    /// length, so a longer contiguous frame cannot come from the NIC.
    #[error("frame is longer than 65535 bytes, more than one mbuf segment can hold")]
    FrameTooLong,
    #[error("Ethernet frame is shorter than its 14-byte header")]
    EthernetTruncated,
    #[error("frame ends inside a VLAN tag or before the EtherType after it")]
    VlanTruncated,
    #[error("frame carries more than two VLAN tags")]
    VlanTooManyTags,
    #[error("IPv4 packet is shorter than its header or than its total length")]
    Ipv4Truncated,
    #[error("IPv4 header has a version other than 4")]
    Ipv4BadVersion,
    #[error("IPv4 header length (IHL) is below 5 words")]
    Ipv4BadHeaderLength,
    #[error("IPv4 total length is smaller than the header length")]
    Ipv4BadTotalLength,
    #[error("IPv4 option has a missing, too small or overlong length byte")]
    Ipv4BadOption,
    #[error("IPv4 fragment would end beyond 65535 bytes when reassembled")]
    Ipv4BadFragment,
    #[error("IPv6 packet is shorter than its 40-byte header or than its payload length")]
    Ipv6Truncated,
    #[error("IPv6 header has a version other than 6")]
    Ipv6BadVersion,
    #[error("IPv6 extension header is cut short, misplaced or repeated")]
    Ipv6BadExtensionHeader,
    #[error("IPv6 packet has more than 8 extension headers")]
    Ipv6TooManyExtensionHeaders,
    #[error("IPv6 jumbogram (RFC 2675), which is not supported")]
    Ipv6Jumbogram,
    #[error("IPv6 fragment would end beyond 65535 bytes when reassembled")]
    Ipv6BadFragment,
    #[error("TCP segment is shorter than its 20-byte header")]
    TcpTruncated,
    #[error("TCP data offset is below 5 words or beyond the segment")]
    TcpBadDataOffset,
    #[error("TCP option has a bad length")]
    TcpBadOption,
    #[error("UDP datagram is shorter than its 8-byte header")]
    UdpTruncated,
    #[error("UDP length is below 8 or beyond the IP payload")]
    UdpBadLength,
    #[error("UDP-Lite datagram is shorter than its 8-byte header")]
    UdpLiteTruncated,
    #[error("UDP-Lite checksum coverage is 1 to 7 or beyond the datagram")]
    UdpLiteBadCoverage,
    #[error("SCTP packet is shorter than its 12-byte common header")]
    SctpTruncated,
    #[error("DCCP packet is shorter than its generic header")]
    DccpTruncated,
    #[error("DCCP data offset is shorter than the generic header or beyond the packet")]
    DccpBadDataOffset,
    #[error("ICMP message is shorter than its 8-byte header")]
    IcmpTruncated,
    #[error("ICMPv6 message is shorter than its header")]
    Icmpv6Truncated,
}

impl Malformed {
    pub const COUNT: usize = 28;

    /// Every reason, in index order, for walking the counter array.
    pub const ALL: [Malformed; Self::COUNT] = [
        Malformed::FrameTooLong,
        Malformed::EthernetTruncated,
        Malformed::VlanTruncated,
        Malformed::VlanTooManyTags,
        Malformed::Ipv4Truncated,
        Malformed::Ipv4BadVersion,
        Malformed::Ipv4BadHeaderLength,
        Malformed::Ipv4BadTotalLength,
        Malformed::Ipv4BadOption,
        Malformed::Ipv4BadFragment,
        Malformed::Ipv6Truncated,
        Malformed::Ipv6BadVersion,
        Malformed::Ipv6BadExtensionHeader,
        Malformed::Ipv6TooManyExtensionHeaders,
        Malformed::Ipv6Jumbogram,
        Malformed::Ipv6BadFragment,
        Malformed::TcpTruncated,
        Malformed::TcpBadDataOffset,
        Malformed::TcpBadOption,
        Malformed::UdpTruncated,
        Malformed::UdpBadLength,
        Malformed::UdpLiteTruncated,
        Malformed::UdpLiteBadCoverage,
        Malformed::SctpTruncated,
        Malformed::DccpTruncated,
        Malformed::DccpBadDataOffset,
        Malformed::IcmpTruncated,
        Malformed::Icmpv6Truncated,
    ];

    /// Position of this reason's counter in a `[_; Malformed::COUNT]` array.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// The counter's name as exported over the control socket.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::FrameTooLong => "frame_too_long",
            Malformed::EthernetTruncated => "ethernet_truncated",
            Malformed::VlanTruncated => "vlan_truncated",
            Malformed::VlanTooManyTags => "vlan_too_many_tags",
            Malformed::Ipv4Truncated => "ipv4_truncated",
            Malformed::Ipv4BadVersion => "ipv4_bad_version",
            Malformed::Ipv4BadHeaderLength => "ipv4_bad_header_length",
            Malformed::Ipv4BadTotalLength => "ipv4_bad_total_length",
            Malformed::Ipv4BadOption => "ipv4_bad_option",
            Malformed::Ipv4BadFragment => "ipv4_bad_fragment",
            Malformed::Ipv6Truncated => "ipv6_truncated",
            Malformed::Ipv6BadVersion => "ipv6_bad_version",
            Malformed::Ipv6BadExtensionHeader => "ipv6_bad_extension_header",
            Malformed::Ipv6TooManyExtensionHeaders => "ipv6_too_many_extension_headers",
            Malformed::Ipv6Jumbogram => "ipv6_jumbogram",
            Malformed::Ipv6BadFragment => "ipv6_bad_fragment",
            Malformed::TcpTruncated => "tcp_truncated",
            Malformed::TcpBadDataOffset => "tcp_bad_data_offset",
            Malformed::TcpBadOption => "tcp_bad_option",
            Malformed::UdpTruncated => "udp_truncated",
            Malformed::UdpBadLength => "udp_bad_length",
            Malformed::UdpLiteTruncated => "udplite_truncated",
            Malformed::UdpLiteBadCoverage => "udplite_bad_coverage",
            Malformed::SctpTruncated => "sctp_truncated",
            Malformed::DccpTruncated => "dccp_truncated",
            Malformed::DccpBadDataOffset => "dccp_bad_data_offset",
            Malformed::IcmpTruncated => "icmp_truncated",
            Malformed::Icmpv6Truncated => "icmpv6_truncated",
        }
    }
}

// With contiguous discriminants, this plus the per-entry index test proves ALL lists every variant.
const _: () = assert!(Malformed::Icmpv6Truncated as usize + 1 == Malformed::COUNT);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn all_is_in_index_order() {
        for (i, reason) in Malformed::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
    }

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = HashSet::new();
        for reason in Malformed::ALL {
            let name = reason.name();
            assert!(seen.insert(name), "duplicate {name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert!(!reason.to_string().is_empty());
        }
    }

    #[test]
    fn is_an_error() {
        let error: Box<dyn std::error::Error> = Box::new(Malformed::TcpTruncated);
        assert!(error.to_string().contains("TCP"));
    }
}
