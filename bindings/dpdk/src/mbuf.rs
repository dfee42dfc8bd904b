use std::ptr::NonNull;

use dpdk_sys::{consts, rte_mbuf};

/// One owned packet buffer. Dropping it returns it to its pool.
///
/// `repr(transparent)` over a non-null pointer, so an array of `Mbuf` has the
/// layout of the `struct rte_mbuf *` arrays DPDK's burst calls take.
#[repr(transparent)]
pub struct Mbuf(NonNull<rte_mbuf>);

// SAFETY: an mbuf belongs to whichever thread holds the pointer; DPDK allows
// freeing it on any thread (mempools are thread-safe).
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `ptr` must be a valid mbuf that nothing else owns or will free.
    #[inline(always)]
    pub unsafe fn from_raw(ptr: *mut rte_mbuf) -> Option<Mbuf> {
        NonNull::new(ptr).map(Mbuf)
    }

    /// Gives up ownership without freeing.
    #[inline(always)]
    pub fn into_raw(self) -> *mut rte_mbuf {
        let ptr = self.0.as_ptr();
        std::mem::forget(self);
        ptr
    }

    #[inline(always)]
    pub fn as_ptr(&self) -> *mut rte_mbuf {
        self.0.as_ptr()
    }

    #[inline(always)]
    fn raw(&self) -> &rte_mbuf {
        // SAFETY: we own a valid mbuf for as long as `self` lives.
        unsafe { self.0.as_ref() }
    }

    /// The first segment's bytes (all of them for the single-segment frames
    /// tollgate receives; ports are configured without scatter).
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: buf_addr + data_off .. + data_len is the segment's data,
        // inside the buffer the pool allocated.
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// The first segment's bytes, writable. Only sound while this mbuf is not
    /// shared (refcount 1), which holds for every mbuf tollgate has not cloned.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and `&mut self` makes the access exclusive.
        unsafe {
            let m = self.0.as_mut();
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    #[inline(always)]
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
    }

    #[inline(always)]
    pub fn segments(&self) -> u16 {
        self.raw().nb_segs
    }

    /// The port the driver received this mbuf on.
    #[inline(always)]
    pub fn port(&self) -> u16 {
        self.raw().port
    }

    /// Records which port this frame belongs to. Not every driver stamps
    /// received mbufs (the ring PMD does not), so code that hands frames
    /// between threads stamps them itself.
    #[inline(always)]
    pub fn set_port(&mut self, port: u16) {
        // SAFETY: we own the mbuf; `port` is a plain field.
        unsafe { self.0.as_mut().port = port };
    }

    /// The NIC's RSS hash, when the driver filled one in.
    #[inline(always)]
    pub fn rss_hash(&self) -> Option<u32> {
        let m = self.raw();
        if m.ol_flags & consts::MBUF_F_RX_RSS_HASH != 0 {
            // SAFETY: the flag says the driver wrote the rss member of the union.
            Some(unsafe { m.__bindgen_anon_2.hash.rss })
        } else {
            None
        }
    }

    /// Pointer to the first byte of packet data, for prefetching.
    #[inline(always)]
    pub fn data_ptr(&self) -> *const u8 {
        let m = self.raw();
        (m.buf_addr as *const u8).wrapping_add(m.data_off as usize)
    }

    /// Appends `bytes` to the packet's tail.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), usize> {
        let len = u16::try_from(bytes.len()).map_err(|_| bytes.len())?;
        // SAFETY: rte_pktmbuf_append returns NULL or a pointer to `len`
        // writable bytes at the tail of the last segment.
        unsafe {
            let tail = dpdk_sys::tg_pktmbuf_append(self.0.as_ptr(), len);
            if tail.is_null() {
                return Err(bytes.len());
            }
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), tail as *mut u8, bytes.len());
        }
        Ok(())
    }

    /// How many owners this buffer has.
    pub fn refcnt(&self) -> u16 {
        // SAFETY: reads the refcount of a valid mbuf.
        unsafe { dpdk_sys::tg_mbuf_refcnt_read(self.0.as_ptr()) }
    }
}

impl Drop for Mbuf {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; freeing returns it (and its chain) to its pool.
        unsafe { dpdk_sys::tg_pktmbuf_free(self.0.as_ptr()) }
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("ptr", &self.0)
            .field("pkt_len", &self.pkt_len())
            .finish()
    }
}
