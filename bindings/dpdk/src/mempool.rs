use std::ffi::CString;
use std::ptr::NonNull;

use dpdk_sys::rte_mempool;

use crate::error::{DpdkError, Result};
use crate::mbuf::Mbuf;

/// A pool of packet buffers. Pools live until EAL cleanup: DPDK offers no
/// safe way to know that no port or queue still refers to one.
pub struct Mempool(NonNull<rte_mempool>);

// SAFETY: DPDK mempools are multi-producer/multi-consumer and thread-safe;
// per-lcore caches are selected by the calling thread's lcore id.
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `count` packet mbufs with `data_room` bytes each
    /// (headroom included) and a per-lcore cache of `cache` mbufs.
    pub fn pktmbuf(
        name: &str,
        count: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Self> {
        let cname = CString::new(name)
            .map_err(|_| DpdkError::other("rte_pktmbuf_pool_create", "pool name contains NUL"))?;
        // SAFETY: all arguments are plain values and a valid C string.
        let ptr = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), count, cache, 0, data_room, socket)
        };
        NonNull::new(ptr).map(Mempool).ok_or_else(|| {
            DpdkError::from_errno(format!("rte_pktmbuf_pool_create({name}, {count} mbufs)"))
        })
    }

    pub fn as_ptr(&self) -> *mut rte_mempool {
        self.0.as_ptr()
    }

    /// One mbuf, reset, or `None` when the pool is empty.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is valid; a non-NULL result is an mbuf we now own.
        unsafe { Mbuf::from_raw(dpdk_sys::tg_pktmbuf_alloc(self.0.as_ptr())) }
    }

    /// Mbufs free in the pool (its ring plus every lcore cache).
    pub fn available(&self) -> u32 {
        // SAFETY: reads counters of a valid pool.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.0.as_ptr()) }
    }

    /// Mbufs currently allocated from the pool.
    pub fn in_use(&self) -> u32 {
        // SAFETY: reads counters of a valid pool.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.0.as_ptr()) }
    }

    /// The pool's size in mbufs.
    pub fn size(&self) -> u32 {
        // SAFETY: reads a field of a valid pool.
        unsafe { self.0.as_ref().size }
    }
}
