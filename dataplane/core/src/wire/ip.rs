//! What IPv4 and IPv6 share: protocol numbers and fragment state.
//!
//! Protocol numbers are IANA's "Assigned Internet Protocol Numbers"; IPv6 extension headers are
//! numbered from the same space.

pub const PROTO_HOPOPT: u8 = 0;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_DCCP: u8 = 33;
pub const PROTO_IPV6: u8 = 41;
pub const PROTO_IPV6_ROUTE: u8 = 43;
pub const PROTO_IPV6_FRAG: u8 = 44;
pub const PROTO_GRE: u8 = 47;
pub const PROTO_ESP: u8 = 50;
pub const PROTO_AH: u8 = 51;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_IPV6_NONXT: u8 = 59;
pub const PROTO_IPV6_OPTS: u8 = 60;
pub const PROTO_SCTP: u8 = 132;
pub const PROTO_MOBILITY_HEADER: u8 = 135;
pub const PROTO_UDPLITE: u8 = 136;
pub const PROTO_HIP: u8 = 139;
pub const PROTO_SHIM6: u8 = 140;

/// Where a packet sits in a fragmented datagram, as far as the transport header is concerned.
///
/// Only the first fragment carries the transport header; later ones cannot be keyed by port.
/// A fragment with offset 0 and no more fragments (an IPv6 "atomic fragment", RFC 6946) is
/// `None`: it holds the whole datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Fragment {
    #[default]
    None,
    First,
    NonFirst,
}

impl Fragment {
    #[inline]
    pub(crate) fn from_offset(offset: u16, more_fragments: bool) -> Fragment {
        if offset != 0 {
            Fragment::NonFirst
        } else if more_fragments {
            Fragment::First
        } else {
            Fragment::None
        }
    }
}

/// Largest IP datagram a fragment may reassemble into; anything longer is the "ping of death".
pub(crate) const MAX_REASSEMBLED_LEN: usize = 65535;
