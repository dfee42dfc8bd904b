use std::ffi::CStr;

/// A failed DPDK call: which operation, DPDK's error number and its text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op}: {message} (errno {code})")]
pub struct DpdkError {
    pub op: String,
    pub code: i32,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, DpdkError>;

impl DpdkError {
    /// Builds an error from a negative return code (`-errno`) or, when the
    /// code is not negative, from `rte_errno`.
    pub fn from_code(op: impl Into<String>, ret: i32) -> Self {
        let code = if ret < 0 {
            -ret
        } else {
            // SAFETY: reads the calling thread's rte_errno; no arguments.
            unsafe { dpdk_sys::tg_errno() }
        };
        // SAFETY: rte_strerror returns a pointer to a static or per-lcore
        // NUL-terminated buffer, valid until the next call on this thread.
        let message = unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(code)) }
            .to_string_lossy()
            .into_owned();
        DpdkError {
            op: op.into(),
            code,
            message,
        }
    }

    /// Builds an error from `rte_errno` after a call that signals failure by
    /// returning NULL.
    pub fn from_errno(op: impl Into<String>) -> Self {
        Self::from_code(op, 0)
    }

    pub fn other(op: impl Into<String>, message: impl Into<String>) -> Self {
        DpdkError {
            op: op.into(),
            code: 0,
            message: message.into(),
        }
    }
}
