use std::ptr::NonNull;

use dpdk_sys::{consts, rte_mbuf, RTE_MBUF_F_EXTERNAL, RTE_MBUF_F_INDIRECT};

use crate::mempool::Mempool;

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

    /// The first segment's bytes, writable. Sound because the first segment
    /// of an `Mbuf` never shares its buffer: [`Mbuf::into_slice`] gives up
    /// the whole mbuf, and [`Mbuf::chain_slice`] only adds segments after it.
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

    /// Gives the frame an RSS hash as a driver would: for frames that reach a port from
    /// software (a ring port in a test) as if a NIC had hashed them.
    pub fn set_rss_hash(&mut self, hash: u32) {
        // SAFETY: we own the mbuf; the flag says which member of the union is written.
        unsafe {
            let m = self.0.as_mut();
            m.__bindgen_anon_2.hash.rss = hash;
            m.ol_flags |= consts::MBUF_F_RX_RSS_HASH;
        }
    }

    /// Pointer to the first byte of packet data, for prefetching.
    #[inline(always)]
    pub fn data_ptr(&self) -> *const u8 {
        let m = self.raw();
        (m.buf_addr as *const u8).wrapping_add(m.data_off as usize)
    }

    /// A fresh mbuf from `pool`, or `None` when the pool is empty.
    #[inline(always)]
    pub fn alloc(pool: &Mempool) -> Option<Mbuf> {
        pool.alloc()
    }

    /// The segment the packet ends in.
    #[inline(always)]
    fn last_segment(&self) -> NonNull<rte_mbuf> {
        let mut seg = self.0;
        // SAFETY: every `next` in a chain we own is NULL or a valid segment.
        while let Some(next) = NonNull::new(unsafe { seg.as_ref() }.next) {
            seg = next;
        }
        seg
    }

    /// Grows the last segment by `len` bytes and returns where they start.
    ///
    /// Refuses a last segment that shares its buffer (an indirect segment
    /// from [`Mbuf::chain_slice`], an external buffer, or a buffer with more
    /// than one reference): its tailroom holds bytes that other slices and
    /// frames still read, which DPDK's own append would overwrite.
    fn grow_tail(&mut self, len: usize) -> Option<*mut u8> {
        let len = u16::try_from(len).ok()?;
        let last = self.last_segment();
        // SAFETY: `last` is a valid segment of the chain we own.
        let shared = unsafe {
            last.as_ref().ol_flags & (RTE_MBUF_F_INDIRECT | RTE_MBUF_F_EXTERNAL) != 0
                || dpdk_sys::tg_mbuf_refcnt_read(last.as_ptr()) != 1
        };
        if shared {
            return None;
        }
        // SAFETY: rte_pktmbuf_append returns NULL or a pointer to `len`
        // writable bytes at the tail of the last segment (which we just saw
        // to be ours alone), and accounts for them in pkt_len and data_len.
        let tail = unsafe { dpdk_sys::tg_pktmbuf_append(self.0.as_ptr(), len) };
        (!tail.is_null()).then_some(tail as *mut u8)
    }

    /// Appends `bytes` to the packet's tail. Fails, giving the length back,
    /// when the last segment lacks the room or shares its buffer.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), usize> {
        let tail = self.grow_tail(bytes.len()).ok_or(bytes.len())?;
        // SAFETY: `tail` points to bytes.len() writable bytes of our buffer,
        // which cannot overlap `bytes` (borrowed from elsewhere).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), tail, bytes.len()) };
        Ok(())
    }

    /// Grows the packet by `len` zeroed bytes at its tail and returns them
    /// for writing (a header built in place). `None` when the last segment
    /// lacks the room or shares its buffer.
    pub fn append_uninit(&mut self, len: usize) -> Option<&mut [u8]> {
        let tail = self.grow_tail(len)?;
        // SAFETY: `tail` points to `len` bytes of our buffer, exclusively
        // ours while `&mut self` is borrowed. Zeroing first makes them
        // initialised, so handing them out as `&mut [u8]` is sound.
        unsafe {
            std::ptr::write_bytes(tail, 0, len);
            Some(std::slice::from_raw_parts_mut(tail, len))
        }
    }

    /// Each segment's bytes, in packet order.
    pub fn segment_bytes(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut seg = self.0.as_ptr() as *const rte_mbuf;
        std::iter::from_fn(move || {
            // SAFETY: `seg` is NULL or a segment of the chain `self` owns,
            // alive and unchanged while `self` is borrowed.
            let m = unsafe { seg.as_ref() }?;
            seg = m.next;
            // SAFETY: as in `data`, for this segment.
            Some(unsafe {
                std::slice::from_raw_parts(
                    (m.buf_addr as *const u8).add(m.data_off as usize),
                    m.data_len as usize,
                )
            })
        })
    }

    /// The whole packet, every segment, as one copied buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pkt_len() as usize);
        for seg in self.segment_bytes() {
            out.extend_from_slice(seg);
        }
        out
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
