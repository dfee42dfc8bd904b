//! The `tollgate` daemon: the configuration, the DPDK worker loop (bursts, mbufs, ports, TX)
//! that drives the I/O-free core (`tollgate-core`), the control-socket handler, stats,
//! exporters and logs.

#![forbid(unsafe_code)]

pub mod config;
pub mod control_socket;
pub mod daemon;
pub mod exporter;
pub mod log;
pub mod snapshot;
pub mod worker;
