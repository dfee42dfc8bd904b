use dpdk_sys::rte_mbuf;

use crate::mbuf::Mbuf;

/// DPDK's idiomatic burst: enough frames to amortise a queue access, few
/// enough to stay in L1.
pub const BURST_SIZE: usize = 32;

/// Up to [`BURST_SIZE`] owned mbufs in a fixed array, laid out as the
/// `struct rte_mbuf *` array that the burst calls read and write. Dropping a
/// burst frees whatever it still holds.
pub struct Burst {
    len: usize,
    pkts: [*mut rte_mbuf; BURST_SIZE],
}

// SAFETY: a burst owns its mbufs exactly as a Vec<Mbuf> would.
unsafe impl Send for Burst {}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    pub const fn new() -> Self {
        Burst {
            len: 0,
            pkts: [std::ptr::null_mut(); BURST_SIZE],
        }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    pub fn is_full(&self) -> bool {
        self.len == BURST_SIZE
    }

    #[inline(always)]
    pub fn spare(&self) -> usize {
        BURST_SIZE - self.len
    }

    #[inline(always)]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: the first `len` slots hold owned, non-null mbufs, and Mbuf is
        // repr(transparent) over a non-null pointer.
        unsafe { std::slice::from_raw_parts(self.pkts.as_ptr() as *const Mbuf, self.len) }
    }

    #[inline(always)]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: as in `as_slice`, with exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.pkts.as_mut_ptr() as *mut Mbuf, self.len) }
    }

    /// Adds an mbuf, or hands it back when the burst is full.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == BURST_SIZE {
            return Err(m);
        }
        self.pkts[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Takes every mbuf out, in order, leaving the burst empty.
    #[inline(always)]
    pub fn drain(&mut self) -> Drain<'_> {
        let len = self.len;
        self.len = 0;
        Drain {
            pkts: &self.pkts[..len],
            next: 0,
        }
    }

    /// Frees everything the burst holds.
    pub fn clear(&mut self) {
        for m in self.drain() {
            drop(m);
        }
    }

    /// Where a producer (an RX call, a ring dequeue) writes new mbufs; pair
    /// with [`Burst::commit`].
    #[inline(always)]
    pub(crate) fn spare_ptr(&mut self) -> *mut *mut rte_mbuf {
        // SAFETY: len <= BURST_SIZE, so the pointer is within or one past the array.
        unsafe { self.pkts.as_mut_ptr().add(self.len) }
    }

    /// Records that a producer wrote `n` owned mbufs after the current ones.
    #[inline(always)]
    pub(crate) fn commit(&mut self, n: usize) {
        debug_assert!(self.len + n <= BURST_SIZE);
        self.len += n;
    }

    #[inline(always)]
    pub(crate) fn raw_ptr(&mut self) -> *mut *mut rte_mbuf {
        self.pkts.as_mut_ptr()
    }

    /// Forgets the first `n` mbufs (a consumer such as TX or a ring enqueue
    /// now owns them) and moves the rest to the front, order kept.
    #[inline(always)]
    pub(crate) fn consumed(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.pkts.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Owned mbufs taken out of a [`Burst`]; any not consumed are freed on drop.
pub struct Drain<'a> {
    pkts: &'a [*mut rte_mbuf],
    next: usize,
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;

    #[inline(always)]
    fn next(&mut self) -> Option<Mbuf> {
        let p = *self.pkts.get(self.next)?;
        self.next += 1;
        // SAFETY: the burst gave up ownership of these slots when the drain
        // started; each is yielded exactly once.
        unsafe { Mbuf::from_raw(p) }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.pkts.len() - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Drain<'_> {}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        for m in self.by_ref() {
            drop(m);
        }
    }
}
