//! Raw bindings to the system DPDK (22.11 or later), generated at build time
//! by bindgen from the headers pkg-config names, and the `tg_*` shim that
//! exports DPDK's static-inline fast-path functions and macro constants.
//!
//! Nothing here is safe to call without reading DPDK's documentation; the
//! `dpdk` crate beside this one is the safe layer.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all, clippy::undocumented_unsafe_blocks)]
#![allow(unsafe_op_in_unsafe_fn, rust_2018_idioms)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// Compile-time copies of DPDK macro constants that bindgen cannot evaluate
/// (they are built with `RTE_BIT64()`). The fast path needs them as Rust
/// constants, not as loads of the shim's `TG_*` symbols; the tests below hold
/// each one equal to the value the C compiler computed from the headers.
pub mod consts {
    const fn bit(n: u32) -> u64 {
        1u64 << n
    }

    pub const ETH_RSS_IPV4: u64 = bit(2);
    pub const ETH_RSS_FRAG_IPV4: u64 = bit(3);
    pub const ETH_RSS_NONFRAG_IPV4_TCP: u64 = bit(4);
    pub const ETH_RSS_NONFRAG_IPV4_UDP: u64 = bit(5);
    pub const ETH_RSS_NONFRAG_IPV4_OTHER: u64 = bit(7);
    pub const ETH_RSS_IPV6: u64 = bit(8);
    pub const ETH_RSS_FRAG_IPV6: u64 = bit(9);
    pub const ETH_RSS_NONFRAG_IPV6_TCP: u64 = bit(10);
    pub const ETH_RSS_NONFRAG_IPV6_UDP: u64 = bit(11);
    pub const ETH_RSS_NONFRAG_IPV6_OTHER: u64 = bit(13);
    pub const ETH_RSS_IPV6_EX: u64 = bit(15);
    pub const ETH_RSS_IPV6_TCP_EX: u64 = bit(16);
    pub const ETH_RSS_IPV6_UDP_EX: u64 = bit(17);

    pub const ETH_RSS_IP: u64 = ETH_RSS_IPV4
        | ETH_RSS_FRAG_IPV4
        | ETH_RSS_NONFRAG_IPV4_OTHER
        | ETH_RSS_IPV6
        | ETH_RSS_FRAG_IPV6
        | ETH_RSS_NONFRAG_IPV6_OTHER
        | ETH_RSS_IPV6_EX;
    pub const ETH_RSS_TCP: u64 =
        ETH_RSS_NONFRAG_IPV4_TCP | ETH_RSS_NONFRAG_IPV6_TCP | ETH_RSS_IPV6_TCP_EX;
    pub const ETH_RSS_UDP: u64 =
        ETH_RSS_NONFRAG_IPV4_UDP | ETH_RSS_NONFRAG_IPV6_UDP | ETH_RSS_IPV6_UDP_EX;

    pub const ETH_RX_OFFLOAD_RSS_HASH: u64 = bit(19);
    pub const ETH_TX_OFFLOAD_MBUF_FAST_FREE: u64 = bit(16);
    pub const ETH_TX_OFFLOAD_MULTI_SEGS: u64 = bit(15);
    pub const MBUF_F_RX_RSS_HASH: u64 = bit(1);
    pub const PKTMBUF_HEADROOM: u16 = 128;
    pub const MBUF_DEFAULT_BUF_SIZE: u16 = 2048 + PKTMBUF_HEADROOM;
    pub const RING_F_SP_ENQ: u32 = 0x0001;
    pub const RING_F_SC_DEQ: u32 = 0x0002;
    pub const LCORE_ID_ANY: u32 = u32::MAX;
}

#[cfg(test)]
mod tests {
    use super::consts::*;
    use super::*;

    // SAFETY (for every block below): the TG_* statics are plain constants
    // defined in the shim's C file and initialised before main.

    #[test]
    fn rss_flow_type_masks_match_the_headers() {
        unsafe {
            assert_eq!(ETH_RSS_IP, TG_ETH_RSS_IP);
            assert_eq!(ETH_RSS_TCP, TG_ETH_RSS_TCP);
            assert_eq!(ETH_RSS_UDP, TG_ETH_RSS_UDP);
        }
    }

    #[test]
    fn offload_flags_match_the_headers() {
        unsafe {
            assert_eq!(ETH_RX_OFFLOAD_RSS_HASH, TG_ETH_RX_OFFLOAD_RSS_HASH);
            assert_eq!(
                ETH_TX_OFFLOAD_MBUF_FAST_FREE,
                TG_ETH_TX_OFFLOAD_MBUF_FAST_FREE
            );
            assert_eq!(ETH_TX_OFFLOAD_MULTI_SEGS, TG_ETH_TX_OFFLOAD_MULTI_SEGS);
            assert_eq!(MBUF_F_RX_RSS_HASH, TG_MBUF_F_RX_RSS_HASH);
        }
    }

    #[test]
    fn mbuf_sizes_match_the_headers() {
        unsafe {
            assert_eq!(PKTMBUF_HEADROOM, TG_PKTMBUF_HEADROOM);
            assert_eq!(u32::from(PKTMBUF_HEADROOM), RTE_PKTMBUF_HEADROOM);
            assert_eq!(MBUF_DEFAULT_BUF_SIZE, TG_MBUF_DEFAULT_BUF_SIZE);
        }
    }

    #[test]
    fn ring_flags_and_limits_match_the_headers() {
        unsafe {
            assert_eq!(RING_F_SP_ENQ, TG_RING_F_SP_ENQ);
            assert_eq!(RING_F_SC_DEQ, TG_RING_F_SC_DEQ);
            assert_eq!(RTE_MAX_ETHPORTS, TG_MAX_ETHPORTS);
            assert_eq!(LCORE_ID_ANY, TG_LCORE_ID_ANY);
        }
    }

    #[test]
    fn lcore_id_outside_the_eal_is_any() {
        // A thread the EAL does not know has no lcore id: the shim must read
        // the per-thread variable, not a constant.
        let id = std::thread::spawn(|| unsafe { tg_lcore_id() })
            .join()
            .unwrap();
        assert_eq!(id, LCORE_ID_ANY);
    }

    #[test]
    fn tsc_advances() {
        let a = unsafe { tg_rdtsc() };
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = unsafe { tg_rdtsc() };
        assert!(b > a, "rte_rdtsc did not advance: {a} then {b}");
    }

    #[test]
    fn mbuf_rss_hash_lies_where_the_headers_put_it() {
        // The fast path reads hash.rss through bindgen's layout; the shim's C
        // compiler is the authority on where it is.
        let mut m: rte_mbuf = Default::default();
        m.__bindgen_anon_2.hash.rss = 0xdead_beef;
        let base = &m as *const rte_mbuf as usize;
        let field = unsafe { &m.__bindgen_anon_2.hash.rss as *const u32 as usize };
        assert_eq!(field - base, unsafe { tg_mbuf_rss_offset() } as usize);
        assert_eq!(std::mem::size_of::<rte_mbuf>(), unsafe { tg_mbuf_size() }
            as usize);
    }
}
