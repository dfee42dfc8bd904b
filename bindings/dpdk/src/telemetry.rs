//! Commands of our own on DPDK's telemetry socket (`dpdk-telemetry.py`, or anything that speaks
//! its JSON over `/var/run/dpdk/<file-prefix>/dpdk_telemetry.v2`).
//!
//! DPDK calls a command's callback on its telemetry thread with the command's name; one
//! trampoline finds the Rust handler registered under that name and copies its answer, a flat
//! dictionary, into DPDK's reply.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::{Mutex, OnceLock};

use crate::error::{DpdkError, Result};

/// A value in a telemetry reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TelemetryValue {
    U64(u64),
    Str(String),
}

/// What a handler answers: a dictionary of at most 256 entries (DPDK's limit), names of
/// letters, digits, `_` and `/`. `None` answers the command with an error.
pub type TelemetryReply = Option<Vec<(String, TelemetryValue)>>;

type Handler = Box<dyn Fn(&str) -> TelemetryReply + Send + Sync>;

fn handlers() -> &'static Mutex<HashMap<String, Handler>> {
    static HANDLERS: OnceLock<Mutex<HashMap<String, Handler>>> = OnceLock::new();
    HANDLERS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Registers `command` (e.g. `/tollgate/stats`, at most 56 bytes, starting with '/') with
/// `help`; `handler` gets the parameters that follow the command after a comma. Call it after
/// the EAL is initialised (the telemetry library starts with it).
pub fn register_telemetry(
    command: &str,
    help: &str,
    handler: impl Fn(&str) -> TelemetryReply + Send + Sync + 'static,
) -> Result<()> {
    let (Ok(c_command), Ok(c_help)) = (CString::new(command), CString::new(help)) else {
        return Err(DpdkError::other(
            "rte_telemetry_register_cmd",
            "a command or its help contains a NUL byte",
        ));
    };
    handlers()
        .lock()
        .map_err(|_| DpdkError::other("rte_telemetry_register_cmd", "handler table poisoned"))?
        .insert(command.to_owned(), Box::new(handler));
    // SAFETY: both strings are NUL-terminated; DPDK copies them into its own table, and the
    // trampoline is a valid callback for the process's life.
    let ret = unsafe {
        dpdk_sys::rte_telemetry_register_cmd(c_command.as_ptr(), Some(trampoline), c_help.as_ptr())
    };
    if ret < 0 {
        return Err(DpdkError::other(
            "rte_telemetry_register_cmd",
            format!("DPDK refused {command:?} ({ret}): a name of at most 56 bytes starting with '/', not registered twice, at most 64 commands"),
        ));
    }
    Ok(())
}

extern "C" fn trampoline(
    cmd: *const c_char,
    params: *const c_char,
    data: *mut dpdk_sys::rte_tel_data,
) -> c_int {
    // A panic must not unwind into C: it becomes an error reply.
    std::panic::catch_unwind(|| {
        if cmd.is_null() || data.is_null() {
            return -1;
        }
        // SAFETY: DPDK passes NUL-terminated strings (params may be null) valid for the call.
        let cmd = unsafe { CStr::from_ptr(cmd) }.to_string_lossy();
        let params = if params.is_null() {
            String::new()
        } else {
            // SAFETY: as above.
            unsafe { CStr::from_ptr(params) }
                .to_string_lossy()
                .into_owned()
        };
        let reply = match handlers().lock() {
            Ok(table) => match table.get(cmd.as_ref()) {
                Some(handler) => handler(&params),
                None => None,
            },
            Err(_) => None,
        };
        let Some(entries) = reply else {
            return -1;
        };
        // SAFETY: `data` is the reply DPDK handed us, valid for the call.
        unsafe { dpdk_sys::rte_tel_data_start_dict(data) };
        for (name, value) in entries {
            let Ok(name) = CString::new(name) else {
                continue;
            };
            // SAFETY: as above; DPDK copies name and value.
            unsafe {
                match value {
                    TelemetryValue::U64(v) => {
                        dpdk_sys::rte_tel_data_add_dict_u64(data, name.as_ptr(), v);
                    }
                    TelemetryValue::Str(s) => {
                        if let Ok(s) = CString::new(s) {
                            dpdk_sys::rte_tel_data_add_dict_string(data, name.as_ptr(), s.as_ptr());
                        }
                    }
                }
            }
        }
        0
    })
    .unwrap_or(-1)
}
