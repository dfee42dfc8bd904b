//! Tollgate's I/O-free core: everything a worker does to a frame that needs no DPDK. Plain
//! Rust over byte slices and a small payload trait, so each part is tested segment by segment
//! and fuzzed on a machine without DPDK; the daemon's worker drives it with bursts of mbufs.
//!
//! - [`wire`]: zero-copy header views, the frame parser and header emitters;
//! - [`flow`]: canonical keys, entries, the prefetchable index, slab, timer wheel and the
//!   views the control plane shows;
//! - [`policy`]: the rules, the compiled classifier and its publication to workers;
//! - [`tcp`]: the sans-IO TCP endpoint and its parts;
//! - [`proxy`]: a proxied flow as two endpoints, the per-worker proxy table and its limits;
//! - [`bypass`]: the translation of a handed-over flow's segments between the legs' spaces;
//! - [`pipeline`]: a worker's packet path: parse, look up, classify, decide;
//! - [`shard`]: one worker's share of all that, frames in and out, as the daemon drives it;
//! - [`ip_reassembly`], [`detect`], [`rss`], [`steering`], [`counters`], [`notice`], [`synth`],
//!   [`pcap`] (capture files, for replays and traffic tools).

#![forbid(unsafe_code)]

pub mod bypass;
pub mod counters;
pub mod detect;
pub mod flow;
pub mod ip_reassembly;
pub mod notice;
pub mod pcap;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod rss;
pub mod shard;
pub mod steering;
pub mod synth;
pub mod tcp;
#[cfg(test)]
mod test_rng;
pub mod wire;
