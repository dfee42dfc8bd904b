//! Tollgate's control-plane model, shared by the daemon and `tollgatectl`:
//! the policy model, the wire protocol and the counters snapshot.

pub mod classifier;
pub mod client;
pub mod persist;
pub mod policy;
pub mod protocol;
pub mod server;
pub mod stats;

pub use stats::{
    ControlSocketCounters, LimitCounters, MempoolStats, PortCounters, Prometheus, ProxyCounters,
    ReassemblyCounters, RuleStats, StatsSnapshot, WorkerStats,
};
