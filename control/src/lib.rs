//! Tollgate's control plane, shared by the daemon and `tollgatectl`: the wire protocol, the
//! counters snapshot, the socket server and client, and policy persistence. The policy model
//! itself is the core's ([`policy`]), which the protocol carries.

#![forbid(unsafe_code)]

pub mod client;
pub mod persist;
pub mod protocol;
pub mod server;
pub mod stats;

pub use tollgate_core::policy;

pub use stats::{
    ControlSocketCounters, LimitCounters, MempoolStats, PortCounters, Prometheus, ProxyCounters,
    ReassemblyCounters, RuleStats, StatsSnapshot, WorkerStats,
};
