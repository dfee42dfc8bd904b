//! Zero-copy views over packet headers, in the style of smoltcp's `wire` module.
//!
//! Each view wraps a byte buffer (`T: AsRef<[u8]>`), checks its lengths once in `new_checked`,
//! and reads fields in place; nothing allocates and no input makes anything panic. Rejections
//! are [`Malformed`] values, one per reason, so the data plane can count them.
//!
//! The worker calls [`parse_frame`] once per frame; the views are for code that needs more
//! than the summary (the TCP proxy reads options and rewrites headers).

pub mod checksum;
pub mod common;
pub mod dccp;
pub mod emit;
pub mod ethernet;
#[cfg(any(test, feature = "fuzzing"))]
pub mod exercise;
mod field;
pub mod frame;
pub mod icmp;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod malformed;
pub mod sctp;
pub mod tcp;
#[cfg(test)]
mod test_frames;
pub mod udp;
pub mod udplite;

pub use common::{common_ipv4, CommonIpv4};
pub use dccp::DccpPacket;
pub use ethernet::{EthernetFrame, VlanTag};
pub use frame::{parse_frame, FrameSummary, IpSummary};
pub use icmp::{Icmpv4Packet, Icmpv6Packet};
pub use ip::Fragment;
pub use ipv4::Ipv4Packet;
pub use ipv6::{Ipv6ExtensionHeader, Ipv6ExtensionHeaders, Ipv6Packet, UpperLayer};
pub use malformed::Malformed;
pub use sctp::SctpPacket;
pub use tcp::{SackBlocks, TcpOption, TcpOptions, TcpSegment};
pub use udp::UdpDatagram;
pub use udplite::UdpLiteDatagram;
