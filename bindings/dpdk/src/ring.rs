use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use dpdk_sys::{consts, rte_ring};

use crate::burst::Burst;
use crate::error::{DpdkError, Result};
use crate::mbuf::Mbuf;

/// A DPDK ring carrying mbufs. Freed (with any mbufs left in it) when the last
/// handle goes.
pub struct MbufRing {
    ptr: NonNull<rte_ring>,
    single: bool,
}

// SAFETY: a multi-producer/multi-consumer rte_ring is thread-safe. Single
// producer/consumer rings are only reachable through the non-Clone
// RingProducer/RingConsumer handles, one of each.
unsafe impl Send for MbufRing {}
// SAFETY: as above.
unsafe impl Sync for MbufRing {}

impl MbufRing {
    fn create(name: &str, count: u32, flags: u32) -> Result<Self> {
        let cname = CString::new(name)
            .map_err(|_| DpdkError::other("rte_ring_create", "ring name contains NUL"))?;
        // The ring holds count-1 entries; round to a power of two as DPDK wants.
        let size = count.max(2).next_power_of_two();
        // SAFETY: valid C string and plain values; SOCKET_ID_ANY is -1.
        let ptr = unsafe { dpdk_sys::rte_ring_create(cname.as_ptr(), size, -1, flags) };
        NonNull::new(ptr)
            .map(|ptr| MbufRing {
                ptr,
                single: flags != 0,
            })
            .ok_or_else(|| DpdkError::from_errno(format!("rte_ring_create({name}, {size})")))
    }

    /// A multi-producer/multi-consumer ring of at least `count` slots.
    pub fn new(name: &str, count: u32) -> Result<Arc<Self>> {
        Self::create(name, count, 0).map(Arc::new)
    }

    /// A single-producer/single-consumer ring: the cheapest way to hand frames
    /// from one thread to one other (no atomic read-modify-write).
    pub fn spsc(name: &str, count: u32) -> Result<(RingProducer, RingConsumer)> {
        let ring = Arc::new(Self::create(
            name,
            count,
            consts::RING_F_SP_ENQ | consts::RING_F_SC_DEQ,
        )?);
        Ok((RingProducer(ring.clone()), RingConsumer(ring)))
    }

    pub fn as_ptr(&self) -> *mut rte_ring {
        self.ptr.as_ptr()
    }

    /// Enqueues from the front of `burst`; what fit leaves the burst.
    #[inline]
    pub fn enqueue_burst(&self, burst: &mut Burst) -> usize {
        debug_assert!(!self.single, "use RingProducer for a single-producer ring");
        self.enqueue_raw(burst)
    }

    /// Dequeues into the burst's spare room.
    #[inline]
    pub fn dequeue_burst(&self, burst: &mut Burst) -> usize {
        debug_assert!(!self.single, "use RingConsumer for a single-consumer ring");
        self.dequeue_raw(burst)
    }

    #[inline]
    fn enqueue_raw(&self, burst: &mut Burst) -> usize {
        let n = burst.len() as u32;
        // SAFETY: the burst's first `n` slots are owned mbufs; those enqueued
        // become the ring's, and `consumed` forgets them.
        let done = unsafe {
            dpdk_sys::tg_ring_enqueue_burst(self.ptr.as_ptr(), burst.raw_ptr() as *const *mut _, n)
        } as usize;
        burst.consumed(done);
        done
    }

    #[inline]
    fn dequeue_raw(&self, burst: &mut Burst) -> usize {
        let room = burst.spare() as u32;
        // SAFETY: the ring holds only owned mbuf pointers; at most `room` are
        // written into the burst's spare slots, and `commit` takes them over.
        let done = unsafe {
            dpdk_sys::tg_ring_dequeue_burst(
                self.ptr.as_ptr(),
                burst.spare_ptr() as *mut *mut _,
                room,
            )
        } as usize;
        burst.commit(done);
        done
    }

    /// Entries in the ring now.
    pub fn count(&self) -> u32 {
        // SAFETY: reads the ring's indices.
        unsafe { dpdk_sys::tg_ring_count(self.ptr.as_ptr()) }
    }
}

impl Drop for MbufRing {
    fn drop(&mut self) {
        // Whoever drops the last handle is the only user left, so draining as
        // consumer is safe in either mode.
        let mut burst = Burst::new();
        while self.dequeue_raw(&mut burst) > 0 {
            burst.clear();
        }
        // SAFETY: no handle refers to the ring any more.
        unsafe { dpdk_sys::rte_ring_free(self.ptr.as_ptr()) }
    }
}

/// The one producer end of a single-producer/single-consumer ring.
pub struct RingProducer(Arc<MbufRing>);
/// The one consumer end of a single-producer/single-consumer ring.
pub struct RingConsumer(Arc<MbufRing>);

impl RingProducer {
    /// Enqueues from the front of `burst`; what fit leaves the burst.
    #[inline]
    pub fn enqueue_burst(&mut self, burst: &mut Burst) -> usize {
        self.0.enqueue_raw(burst)
    }

    /// Enqueues one mbuf, or gives it back when the ring is full.
    pub fn enqueue(&mut self, m: Mbuf) -> std::result::Result<(), Mbuf> {
        let mut b = Burst::new();
        b.push(m).ok();
        if self.0.enqueue_raw(&mut b) == 1 {
            Ok(())
        } else {
            Err(b.drain().next().expect("the mbuf is still in the burst"))
        }
    }
}

impl RingConsumer {
    /// Dequeues into the burst's spare room.
    #[inline]
    pub fn dequeue_burst(&mut self, burst: &mut Burst) -> usize {
        self.0.dequeue_raw(burst)
    }

    pub fn count(&self) -> u32 {
        self.0.count()
    }
}
