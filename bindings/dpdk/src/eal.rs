use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{DpdkError, Result};

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// The DPDK Environment Abstraction Layer. It can be initialised once per
/// process; dropping it runs `rte_eal_cleanup`, after which it cannot come back.
pub struct Eal {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Eal {
    /// Initialises the EAL from an argument list (the program name first, as
    /// in `argv`). Bad arguments come back as an error, never as an exit.
    pub fn init<I, S>(args: I) -> Result<Eal>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::other(
                "rte_eal_init",
                "the EAL is already initialised in this process (it can be initialised once)",
            ));
        }
        let args: Vec<CString> = args
            .into_iter()
            .map(|a| CString::new(a.as_ref()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| DpdkError::other("rte_eal_init", "an EAL argument contains a NUL byte"))?;
        // The EAL keeps pointers into argv (getopt permutes it and some
        // drivers keep their devargs), so the strings live for the process.
        let args: &'static [CString] = Box::leak(args.into_boxed_slice());
        let mut argv: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr() as *mut c_char).collect();
        let argc = argv.len() as i32;
        argv.push(std::ptr::null_mut());
        let argv: &'static mut [*mut c_char] = Box::leak(argv.into_boxed_slice());
        // SAFETY: argc/argv describe NUL-terminated strings that outlive the EAL.
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(DpdkError::from_errno("rte_eal_init"));
        }
        Ok(Eal {
            _not_send: std::marker::PhantomData,
        })
    }

    /// Lets DPDK's packet capture framework copy this process's port traffic to a secondary
    /// process (`dpdk-dumpcap`, `dpdk-pdump`) while it runs. Copies are made only while a
    /// capture is active; until then the cost is a registered multi-process handler. The
    /// secondary process must be able to attach: hugepages, not `--no-huge`, and no thread
    /// registered with [`crate::register_thread`] (that turns multi-process support off).
    pub fn enable_packet_capture(&self) -> Result<()> {
        // SAFETY: the EAL is initialised (self exists); rte_pdump_init registers a
        // multi-process action and its memzone.
        let ret = unsafe { dpdk_sys::rte_pdump_init() };
        if ret < 0 {
            return Err(DpdkError::from_errno("rte_pdump_init"));
        }
        Ok(())
    }

    /// The DPDK version string of the library actually loaded.
    pub fn version() -> String {
        // SAFETY: rte_version returns a pointer to a static NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(dpdk_sys::rte_version()) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: the EAL was initialised by this value; ports and pools that
        // outlive it are only memory the cleanup releases. rte_pdump_uninit only unregisters
        // what rte_pdump_init registered, if it ran.
        unsafe {
            dpdk_sys::rte_pdump_uninit();
            dpdk_sys::rte_eal_cleanup();
        }
    }
}
