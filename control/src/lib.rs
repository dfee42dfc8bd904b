//! Tollgate's control-plane model, shared by the daemon and `tollgatectl`:
//! the policy model, the wire protocol and the counters snapshot.

pub mod policy;
pub mod protocol;
pub mod stats;

pub use stats::{MempoolStats, PortCounters, StatsSnapshot, WorkerStats};
