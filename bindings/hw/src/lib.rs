//! What the I/O-free core needs to know of the machine, without DPDK: a prefetch hint (the
//! one instruction the flow table's lookups need that safe Rust cannot issue) and the
//! symmetric RSS key the ports are programmed with (which the core's software RSS must
//! reproduce bit for bit).

/// Asks the CPU to bring the cache line at `ptr` closer. Never faults, even for an address
/// that is not mapped; on targets without the hint it does nothing.
#[inline(always)]
pub fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it does not dereference in the language sense and cannot
    // fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch(ptr as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// A Toeplitz key made of one repeated 16-bit pattern: swapping source and destination
/// (addresses and ports) leaves the hash unchanged, so both directions of a flow land on the
/// same queue (Woo and Park, "Scalable TCP Session Monitoring with Symmetric Receive-side
/// Scaling", 2012).
pub const SYMMETRIC_RSS_KEY: [u8; 52] = {
    let mut key = [0u8; 52];
    let mut i = 0;
    while i < 52 {
        key[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    key
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_symmetric_key_repeats_one_16_bit_pattern() {
        assert!(SYMMETRIC_RSS_KEY.chunks(2).all(|pair| pair == [0x6d, 0x5a]));
    }

    #[test]
    fn prefetch_of_an_unmapped_address_does_not_fault() {
        prefetch(std::ptr::null::<u8>());
        prefetch(usize::MAX as *const u64);
    }
}
