use crate::error::{DpdkError, Result};

/// Registers the calling (non-EAL) thread with DPDK so it gets an lcore id,
/// and with it per-lcore mempool caches: without one every mbuf alloc and
/// free would hit the shared pool ring.
pub fn register_thread() -> Result<u32> {
    // SAFETY: no arguments; registers the calling thread.
    let ret = unsafe { dpdk_sys::rte_thread_register() };
    if ret < 0 {
        return Err(DpdkError::from_errno("rte_thread_register"));
    }
    // SAFETY: reads the calling thread's lcore id.
    Ok(unsafe { dpdk_sys::tg_lcore_id() })
}

/// The time-stamp counter, in cycles.
#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: reads the TSC; no memory is touched.
    unsafe { dpdk_sys::tg_rdtsc() }
}

/// Cycles per second of [`tsc`], as the EAL measured it at start-up.
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value the EAL computed at initialisation.
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}

/// Asks the CPU to bring the cache line at `ptr` closer. Never faults, even for
/// an address that is not mapped.
#[inline(always)]
pub fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it does not dereference in the language
    // sense and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch(ptr as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as above; the shim's rte_prefetch0 is a hint.
    unsafe {
        dpdk_sys::tg_prefetch0(ptr as *const std::ffi::c_void)
    };
}
