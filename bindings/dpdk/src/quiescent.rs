//! Quiescent states of the polling threads, and the one place the EAL's
//! interrupt thread waits for them: before it unmaps memory.
//!
//! DPDK's memif driver tears a link down on the interrupt thread when its peer
//! leaves (`memif_disconnect`): it clears the port's "connected" flag and then,
//! microseconds later, unmaps the shared regions whose rings and buffers a
//! worker may be copying from in `rte_eth_rx_burst` at that moment. A worker
//! that read the flag just before it was cleared faults on the unmapped
//! buffer. The driver offers no hook between the two steps and raises no
//! link-state event, so the wait happens in `munmap` itself: the executable
//! exports its own `munmap` (see the daemon's build script), and when the
//! caller is the interrupt thread it first waits a grace period, until every
//! registered [`Poller`] has reported a quiescent state (a point between
//! bursts) after the call began. Every burst started after that report sees
//! the cleared flag and returns without touching the rings.
//!
//! This is quiescent-state-based reclamation in the manner of
//! `rte_rcu_qsbr`: a poller copies the grace-period token it last saw into its
//! own cache line between bursts (one load of a line that is only written when
//! the interrupt thread unmaps something), and a poller that stops polling
//! goes offline so it never holds a grace period up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// More polling threads than DPDK has lcores (`RTE_MAX_LCORE` is 128 in Debian's build).
const MAX_POLLERS: usize = 256;

/// A slot's token while no thread polls through it.
const OFFLINE: u64 = u64::MAX;

/// How long a grace period may take before it is worth a warning on stderr.
const SLOW_GRACE: Duration = Duration::from_secs(1);

#[repr(align(64))]
struct Slot {
    seen: AtomicU64,
    taken: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE_SLOT: Slot = Slot {
    seen: AtomicU64::new(OFFLINE),
    taken: AtomicBool::new(false),
};

static SLOTS: [Slot; MAX_POLLERS] = [FREE_SLOT; MAX_POLLERS];

/// The grace period last started; pollers copy it to report they are between bursts.
static TOKEN: AtomicU64 = AtomicU64::new(0);

static DEFERRED_UNMAPS: AtomicU64 = AtomicU64::new(0);
static LONGEST_WAIT_NS: AtomicU64 = AtomicU64::new(0);

/// A thread that calls rx/tx bursts, registered for as long as it lives.
/// Dropping it takes the thread offline.
pub struct Poller {
    slot: &'static Slot,
}

impl Poller {
    /// Registers the calling thread, online from now on: call it before the first burst.
    ///
    /// # Panics
    /// With more than 256 pollers registered at once (more than DPDK has lcores).
    pub fn register() -> Poller {
        let slot = SLOTS
            .iter()
            .find(|s| {
                s.taken
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .expect("more than 256 threads polling DPDK queues at once");
        // A grace period that started while the token was being copied would not have
        // seen this slot online: copy again until the token holds still, so every
        // burst after this sees what that grace period's caller had done.
        loop {
            let token = TOKEN.load(Ordering::SeqCst);
            slot.seen.store(token, Ordering::SeqCst);
            if TOKEN.load(Ordering::SeqCst) == token {
                break;
            }
        }
        Poller { slot }
    }

    /// Reports that the thread is between bursts: it holds no pointer into any
    /// port's rings. The fast path's cost: one load of a line that is almost never written.
    #[inline(always)]
    pub fn quiescent(&self) {
        let token = TOKEN.load(Ordering::Acquire);
        if self.slot.seen.load(Ordering::Relaxed) != token {
            self.slot.seen.store(token, Ordering::Release);
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.slot.seen.store(OFFLINE, Ordering::Release);
        self.slot.taken.store(false, Ordering::Release);
    }
}

/// Returns once every poller online now has been between bursts since the call began.
/// Everything the caller did before the call is visible to every burst that follows.
pub fn wait_for_pollers() -> Duration {
    let start = Instant::now();
    let token = TOKEN.fetch_add(1, Ordering::SeqCst) + 1;
    let mut warned = false;
    for slot in &SLOTS {
        let mut spins = 0u32;
        while slot.seen.load(Ordering::SeqCst) < token {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                // A poller sleeping when idle reports on waking; its sleep is short.
                std::thread::sleep(Duration::from_micros(10));
            }
            if !warned && start.elapsed() > SLOW_GRACE {
                warned = true;
                // No logger here: this runs inside munmap on the interrupt thread.
                eprintln!(
                    "tollgate: the interrupt thread has waited {} s for a worker to finish its burst before unmapping a port's memory",
                    start.elapsed().as_secs()
                );
            }
        }
    }
    start.elapsed()
}

/// What the interrupt thread's unmaps cost: how many waited for a grace
/// period, and the longest wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeferredUnmaps {
    pub count: u64,
    pub longest_wait: Duration,
}

pub fn deferred_unmaps() -> DeferredUnmaps {
    DeferredUnmaps {
        count: DEFERRED_UNMAPS.load(Ordering::Relaxed),
        longest_wait: Duration::from_nanos(LONGEST_WAIT_NS.load(Ordering::Relaxed)),
    }
}

extern "C" {
    fn rte_thread_is_intr() -> libc::c_int;
}

/// The process's `munmap`, for an executable that exports it (its build script passes
/// `-Wl,--export-dynamic-symbol=munmap`): DPDK's drivers then call this one. Only calls from
/// the EAL's interrupt thread wait; every other thread unmaps at once. Nothing here allocates
/// or takes a lock, so an allocator that unmaps through it cannot recurse into it.
///
/// # Safety
/// As `munmap(2)`.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut libc::c_void, len: libc::size_t) -> libc::c_int {
    // SAFETY: compares the calling thread with the EAL's interrupt thread; before the
    // EAL starts, that thread id is zero and matches no thread.
    if unsafe { rte_thread_is_intr() } != 0 {
        let waited = wait_for_pollers();
        DEFERRED_UNMAPS.fetch_add(1, Ordering::Relaxed);
        LONGEST_WAIT_NS.fetch_max(waited.as_nanos() as u64, Ordering::Relaxed);
    }
    // SAFETY: the caller's arguments, passed on to the kernel.
    unsafe { libc::syscall(libc::SYS_munmap, addr, len) as libc::c_int }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// The handshake itself: a grace period does not end while a poller is inside a burst,
    /// and ends once it reports between bursts.
    #[test]
    fn a_grace_period_waits_for_a_poller_inside_a_burst() {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (leave_tx, leave_rx) = mpsc::channel::<()>();
        let poller = std::thread::spawn(move || {
            let p = Poller::register();
            p.quiescent();
            // Inside a burst: no quiescent state until told to leave it.
            entered_tx.send(()).unwrap();
            leave_rx.recv().unwrap();
            p.quiescent();
            // Between bursts from here on, as a worker's loop would be.
            while leave_rx.try_recv().is_err() {
                p.quiescent();
                std::thread::yield_now();
            }
        });
        entered_rx.recv().unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            wait_for_pollers();
            done_tx.send(()).unwrap();
        });
        // The grace period must still be running while the poller is in its burst; the
        // poller stays there until this side lets it go, so this is no race against time.
        assert!(
            done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the grace period ended while a poller was inside a burst"
        );
        leave_tx.send(()).unwrap();
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the grace period did not end after the poller left its burst");
        leave_tx.send(()).unwrap();
        poller.join().unwrap();
        waiter.join().unwrap();
    }

    #[test]
    fn an_offline_poller_holds_no_grace_period_up() {
        let p = Poller::register();
        drop(p);
        wait_for_pollers();
    }
}
