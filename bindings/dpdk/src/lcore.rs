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

pub use hw::prefetch;

/// A closure running on an EAL worker lcore, launched by [`launch_on_lcore`].
pub struct LcoreTask<T> {
    lcore: u32,
    result: std::sync::Arc<std::sync::Mutex<Option<std::thread::Result<T>>>>,
}

type LcoreJob = Box<dyn FnOnce() + Send>;

/// Whether `lcore` is an EAL worker lcore of this process (given with `--lcores` or `-l`, and
/// not the main one) that is free to run a task.
pub fn lcore_available(lcore: u32) -> bool {
    // SAFETY: plain queries of the EAL's lcore table.
    unsafe {
        dpdk_sys::rte_lcore_is_enabled(lcore) == 1
            && dpdk_sys::rte_get_main_lcore() != lcore
            && dpdk_sys::rte_eal_get_lcore_state(lcore) == dpdk_sys::WAIT
    }
}

/// Runs `f` on the EAL worker lcore `lcore`: a thread the EAL made and pinned at start-up,
/// which, unlike a thread registered with [`register_thread`], leaves DPDK's multi-process
/// support on (secondary processes such as `dpdk-dumpcap` can attach). A panic in `f` is
/// caught there and handed to [`LcoreTask::join`].
pub fn launch_on_lcore<T: Send + 'static>(
    lcore: u32,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<LcoreTask<T>> {
    if !lcore_available(lcore) {
        return Err(DpdkError::other(
            "rte_eal_remote_launch",
            format!("lcore {lcore} is not a free worker lcore of this process"),
        ));
    }
    let result = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = result.clone();
    let job: LcoreJob = Box::new(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        if let Ok(mut slot) = slot.lock() {
            *slot = Some(outcome);
        }
    });
    let arg = Box::into_raw(Box::new(job));
    // SAFETY: `run_job` takes back the box behind `arg` exactly once, on the lcore; the lcore
    // is a free worker lcore (checked above).
    let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(run_job), arg.cast(), lcore) };
    if ret < 0 {
        // SAFETY: the launch failed, so `run_job` never got `arg`: it is still ours.
        drop(unsafe { Box::from_raw(arg) });
        return Err(DpdkError::other(
            "rte_eal_remote_launch",
            format!("lcore {lcore} refused the task ({ret})"),
        ));
    }
    Ok(LcoreTask { lcore, result })
}

extern "C" fn run_job(arg: *mut std::ffi::c_void) -> std::ffi::c_int {
    // SAFETY: `arg` is the Box<LcoreJob> leaked by launch_on_lcore, handed over once.
    let job = unsafe { Box::from_raw(arg.cast::<LcoreJob>()) };
    // The job catches its own panics; this guards the boundary regardless.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

impl<T> LcoreTask<T> {
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// Waits for the task to end; `Err` carries its panic, as `JoinHandle::join` does.
    pub fn join(self) -> std::thread::Result<T> {
        // SAFETY: waits for the lcore this task was launched on.
        unsafe { dpdk_sys::rte_eal_wait_lcore(self.lcore) };
        let taken = self.result.lock().ok().and_then(|mut r| r.take());
        taken.unwrap_or_else(|| Err(Box::new("the lcore task left no result")))
    }
}
