//! Tollgate's data plane. `parse`, `flow`, `pipeline`, `rss` and `steering` are the
//! sans-IO core: plain Rust over byte slices, testable without DPDK. `worker`
//! and `daemon` drive it with DPDK.

pub mod config;
pub mod control;
pub mod counters;
pub mod daemon;
pub mod detect;
pub mod exporter;
pub mod flow;
pub mod flow_view;
pub mod ip_reassembly;
pub mod log;
pub mod notice;
pub mod parse;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod rss;
pub mod stats;
pub mod steering;
pub mod synth;
pub mod tcp;
#[cfg(test)]
mod test_rng;
pub mod worker;
