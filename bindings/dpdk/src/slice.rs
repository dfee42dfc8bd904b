//! Received payload kept where it arrived: a refcounted view of part of an
//! mbuf, and frames that carry such a view behind a new header without
//! copying it.
//!
//! A TCP proxy holds payload until the far side acknowledges it and may send
//! it more than once; copying it for every (re)transmission costs more than
//! the rest of the fast path. Instead the payload's mbuf stays alive, shared
//! by reference count, and each frame built from it gets an *indirect* mbuf
//! segment that points into the same buffer.
//!
//! Frames built with [`Mbuf::chain_slice`] have segments whose reference
//! count is above one, so they must not go to a TX queue configured with
//! `RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE` (which assumes a count of one).

use std::ptr::NonNull;

use dpdk_sys::rte_mbuf;

use crate::mbuf::Mbuf;
use crate::mempool::Mempool;

/// Past this many references a clone panics instead of risking the 16-bit
/// counter wrapping to zero, which would free a buffer still in use. The
/// margin covers threads racing past the check; nothing legitimate holds
/// tens of thousands of references to one frame.
const MAX_REFERENCES: u16 = u16::MAX - 1024;

/// A read-only, refcounted view of `len` bytes at `offset` past the data
/// start of a received mbuf's first segment.
///
/// Cloning and [`MbufSlice::slice`] add a reference to the mbuf; dropping
/// releases one, and the last release returns the mbuf to its pool. No
/// `Mbuf` can name the buffer any more, and appends refuse segments that
/// share it, so the bytes cannot change while a slice exists.
pub struct MbufSlice {
    mbuf: NonNull<rte_mbuf>,
    offset: u16,
    len: u16,
}

// SAFETY: mbuf reference counts are atomic in the DPDK build we bind
// (RTE_MBUF_REFCNT_ATOMIC), the bytes are never written while shared, and
// freeing may happen on any thread. Not Sync, like Mbuf: nothing needs
// shared references across threads, and clones are cheap.
unsafe impl Send for MbufSlice {}

/// Why [`Mbuf::chain_slice`] could not add a segment. The frame and the
/// slice are unchanged either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("mbuf pool exhausted: no mbuf left for the zero-copy segment (free frames, give the pool more mbufs, or copy instead)")]
    PoolEmpty,
    #[error("the frame already has as many segments as an mbuf chain can hold (65535)")]
    TooManySegments,
}

impl Mbuf {
    /// Keeps `len` bytes at `offset` past the first segment's data start and
    /// gives up the rest of the frame: segments after the first are freed at
    /// once. Out of range (past the first segment's `data_len`), the mbuf
    /// comes back untouched.
    pub fn into_slice(self, offset: usize, len: usize) -> Result<MbufSlice, Mbuf> {
        let data_len = self.data().len();
        match offset.checked_add(len) {
            Some(end) if end <= data_len => {}
            _ => return Err(self),
        }
        let mbuf = NonNull::new(self.into_raw()).expect("an Mbuf is never NULL");
        // Only the first segment is viewed. Releasing the others now keeps
        // the slice's mbuf a single segment, which the reference counting
        // below relies on: rte_pktmbuf_free walks the whole chain but the
        // count is only raised on the first segment.
        // SAFETY: we own the chain; each segment is unlinked and made a
        // consistent one-segment packet before it is freed.
        unsafe {
            let m = &mut *mbuf.as_ptr();
            let mut seg = std::mem::replace(&mut m.next, std::ptr::null_mut());
            m.nb_segs = 1;
            m.pkt_len = u32::from(m.data_len);
            while let Some(s) = seg.as_mut() {
                seg = std::mem::replace(&mut s.next, std::ptr::null_mut());
                s.nb_segs = 1;
                s.pkt_len = u32::from(s.data_len);
                dpdk_sys::tg_pktmbuf_free(s);
            }
        }
        Ok(MbufSlice {
            mbuf,
            // Both fit: their sum is at most data_len, a u16.
            offset: offset as u16,
            len: len as u16,
        })
    }

    /// Appends `slice` to the frame without copying it: an indirect mbuf
    /// from `pool` is attached to the slice's buffer, narrowed to exactly
    /// the slice, and chained after the frame's last segment. It holds a
    /// reference to the slice's mbuf until it is freed (after TX).
    ///
    /// `pool` may be a pool with no data room, as indirect mbufs carry no
    /// bytes of their own. Sending the result needs a port with
    /// [`Port::tx_multi_seg`](crate::Port::tx_multi_seg); otherwise use
    /// [`Mbuf::append_slice_copy`]. An empty slice adds nothing.
    ///
    /// # Panics
    /// If the slice's mbuf already has tens of thousands of references (a
    /// leak; see [`MbufSlice`]'s `Clone`).
    pub fn chain_slice(&mut self, slice: &MbufSlice, pool: &Mempool) -> Result<(), ChainError> {
        if slice.is_empty() {
            // Zero-length segments upset some NICs and carry nothing.
            return Ok(());
        }
        if self.segments() == u16::MAX {
            // Checked before allocating so failure leaves nothing to undo.
            return Err(ChainError::TooManySegments);
        }
        slice.check_references();
        // SAFETY: the slice's mbuf is a valid single-segment mbuf we hold a
        // reference to; rte_pktmbuf_clone returns NULL or a one-segment
        // indirect mbuf we own, attached to the slice's buffer (the
        // attachment raises the buffer's reference count).
        let seg = unsafe { dpdk_sys::rte_pktmbuf_clone(slice.mbuf.as_ptr(), pool.as_ptr()) };
        let Some(mut seg) = NonNull::new(seg) else {
            return Err(ChainError::PoolEmpty);
        };
        // SAFETY: `seg` is ours and covers the slice's mbuf's whole data;
        // narrowing a single segment is rte_pktmbuf_adj plus trim, and stays
        // inside that data. Chaining hands `seg` to the frame we own; on
        // failure it is still ours to free.
        unsafe {
            let s = seg.as_mut();
            s.data_off += slice.offset;
            s.data_len = slice.len;
            s.pkt_len = u32::from(slice.len);
            if dpdk_sys::tg_pktmbuf_chain(self.as_ptr(), s) < 0 {
                dpdk_sys::tg_pktmbuf_free(s);
                return Err(ChainError::TooManySegments);
            }
        }
        Ok(())
    }

    /// Appends a copy of the slice's bytes to the frame's last segment, for
    /// ports without multi-segment TX. Fails, giving the length back, when
    /// the last segment lacks the room or shares its buffer.
    pub fn append_slice_copy(&mut self, slice: &MbufSlice) -> Result<(), usize> {
        self.append(slice.bytes())
    }
}

impl MbufSlice {
    #[inline(always)]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: we hold a reference, so the mbuf and its buffer are alive;
        // offset + len lies inside the first segment's data (checked when
        // the slice was made), and nothing writes those bytes while shared.
        unsafe {
            let m = self.mbuf.as_ref();
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(usize::from(m.data_off) + usize::from(self.offset)),
                usize::from(self.len),
            )
        }
    }

    /// The bytes `start..end` of this slice, as a slice of its own sharing
    /// the mbuf.
    ///
    /// # Panics
    /// If `start > end` or `end > self.len()`; callers check lengths taken
    /// from packets first. Also as [`MbufSlice`]'s `Clone` does.
    pub fn slice(&self, start: usize, end: usize) -> MbufSlice {
        assert!(
            start <= end && end <= self.len(),
            "MbufSlice::slice({start}, {end}) out of range for a slice of {} bytes",
            self.len()
        );
        self.retain();
        MbufSlice {
            mbuf: self.mbuf,
            // Within the parent's range, so within u16.
            offset: self.offset + start as u16,
            len: (end - start) as u16,
        }
    }

    /// References to the underlying mbuf: slices, and indirect segments of
    /// frames not yet freed.
    pub fn mbuf_refcnt(&self) -> u16 {
        // SAFETY: reads the count of an mbuf we hold a reference to.
        unsafe { dpdk_sys::tg_mbuf_refcnt_read(self.mbuf.as_ptr()) }
    }

    fn check_references(&self) {
        let refs = self.mbuf_refcnt();
        assert!(
            refs < MAX_REFERENCES,
            "mbuf {:p} has {refs} references; refusing to add one (leaked slices?)",
            self.mbuf
        );
    }

    fn retain(&self) {
        self.check_references();
        // SAFETY: we hold a reference, so the count is at least one and the
        // mbuf stays valid; the update is atomic.
        unsafe { dpdk_sys::tg_mbuf_refcnt_update(self.mbuf.as_ptr(), 1) };
    }
}

impl Clone for MbufSlice {
    /// Adds a reference to the mbuf.
    ///
    /// # Panics
    /// If the mbuf already has tens of thousands of references: its 16-bit
    /// count would soon wrap and free a buffer in use. Only a leak gets
    /// there, so this is treated like `Arc`'s overflow abort.
    fn clone(&self) -> Self {
        self.retain();
        MbufSlice {
            mbuf: self.mbuf,
            offset: self.offset,
            len: self.len,
        }
    }
}

impl Drop for MbufSlice {
    fn drop(&mut self) {
        // SAFETY: releases the reference this value holds; the single
        // segment returns to its pool when the count reaches zero.
        unsafe { dpdk_sys::tg_pktmbuf_free(self.mbuf.as_ptr()) }
    }
}

impl std::fmt::Debug for MbufSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MbufSlice")
            .field("mbuf", &self.mbuf)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("refcnt", &self.mbuf_refcnt())
            .finish()
    }
}
