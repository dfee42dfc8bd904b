//! Tollgate's control-plane model, shared by the daemon and its clients. For
//! now: the counters snapshot the daemon publishes (stats file, exit report);
//! the policy model and the control socket build on it.

pub mod stats;

pub use stats::{MempoolStats, PortCounters, StatsSnapshot, WorkerStats};
