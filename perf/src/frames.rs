//! Synthetic flows and their prebuilt frames, laid out so a traffic generator
//! can stream them: one frame per cache line, flow after flow.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tollgate_core::synth::{self, Addressing, TcpHeader};
use tollgate_core::wire::tcp::flags;

/// A minimum-size Ethernet frame as software sees it: 64 bytes on the wire
/// less the 4-byte FCS the NIC adds and strips.
pub const FRAME_LEN: usize = 60;

/// Which way a frame goes through the bump in the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Client to server: arrives on the inside port.
    ToServer,
    /// Server to client: arrives on the outside port.
    ToClient,
}

/// The most flows [`flow`] can tell apart.
pub const MAX_FLOWS: u32 = 64_512 * 65_536;

/// Flow `i`: client `198.18.x.y` (the low 16 bits of `i`) with source port
/// `1024 + (i >> 16)`, to one of 65,536 servers in `198.19.0.0/16` on port
/// 443. Both ranges are RFC 2544's benchmarking block. Every `i` below
/// [`MAX_FLOWS`] is a distinct 5-tuple, and neighbouring flows differ in the
/// address bits, so any hash scatters them.
pub fn flow(i: u32) -> Addressing {
    debug_assert!(i < MAX_FLOWS);
    let client = Ipv4Addr::from(0xC612_0000 | (i & 0xffff));
    let server = Ipv4Addr::from(0xC613_0000 | (i.wrapping_mul(40_503) & 0xffff));
    Addressing::new(
        SocketAddr::V4(SocketAddrV4::new(client, 1024 + (i >> 16) as u16)),
        SocketAddr::V4(SocketAddrV4::new(server, 443)),
    )
}

/// Flow `i`'s frame going `way`: a valid IPv4/TCP ACK of an established
/// connection (no payload, checksums correct), padded to [`FRAME_LEN`].
pub fn frame(i: u32, way: Way) -> Vec<u8> {
    let a = flow(i);
    let (a, seq, ack) = match way {
        Way::ToServer => (a, 1_000, 5_000),
        Way::ToClient => (a.reversed(), 5_000, 1_000),
    };
    synth::tcp(
        &a,
        TcpHeader {
            seq,
            ack,
            flags: flags::ACK,
            window: 0,
        },
        b"",
    )
}

/// One frame in its own cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot([u8; 64]);

/// The frames of flows `0..len` going one way, in flow order: a generator
/// cycling through them reads memory sequentially, which the hardware
/// prefetcher streams, so generating costs the same at 1 flow as at 1 M.
pub struct FrameTable {
    slots: Vec<Slot>,
}

impl FrameTable {
    pub fn build(flows: u32, way: Way) -> FrameTable {
        let slots = (0..flows)
            .map(|i| {
                let f = frame(i, way);
                let mut slot = Slot([0; 64]);
                slot.0[..FRAME_LEN].copy_from_slice(&f[..FRAME_LEN]);
                slot
            })
            .collect();
        FrameTable { slots }
    }

    /// Flow `i`'s frame, [`FRAME_LEN`] bytes.
    #[inline(always)]
    pub fn frame(&self, i: usize) -> &[u8; FRAME_LEN] {
        self.slots[i].0[..FRAME_LEN]
            .try_into()
            .expect("a slot holds a frame")
    }

    /// Frame `i`, for code that may rewrite it in place (the shard translates some frames).
    pub fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.slots[i].0[..FRAME_LEN]
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use tollgate_core::pipeline::Pipeline;

    #[test]
    fn frames_are_minimum_size_valid_and_both_ways_share_a_flow() {
        for i in [0, 1, 65_535, 65_536, 1_000_000, MAX_FLOWS - 1] {
            let out = frame(i, Way::ToServer);
            let back = frame(i, Way::ToClient);
            assert_eq!(out.len(), FRAME_LEN);
            assert_eq!(back.len(), FRAME_LEN);
            let key = Pipeline::key_of(&out).expect("parses as IP");
            assert_eq!(Pipeline::key_of(&back), Some(key), "flow {i}");
        }
    }

    #[test]
    fn a_million_flows_are_a_million_keys() {
        // Every 7th, and all around the 16-bit boundary where the source
        // port starts to count.
        let flows: HashSet<u32> = (0..1_000_000u32).step_by(7).chain(65_400..65_700).collect();
        let keys: HashSet<_> = flows
            .iter()
            .map(|&i| Pipeline::key_of(&frame(i, Way::ToServer)).unwrap())
            .collect();
        assert_eq!(keys.len(), flows.len());
    }

    #[test]
    fn the_table_holds_the_frames_in_flow_order() {
        let table = FrameTable::build(100, Way::ToClient);
        assert_eq!(table.len(), 100);
        for i in [0, 42, 99] {
            assert_eq!(&table.frame(i)[..], &frame(i as u32, Way::ToClient)[..]);
        }
    }
}
