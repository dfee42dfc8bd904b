//! The sans-IO TCP proxy engine: each proxied flow is two TCP endpoints relaying one byte stream
//! (issue 4). Nothing here touches DPDK or does I/O; payload is any [`payload::Payload`].

pub mod congestion;
pub mod cookie;
pub mod endpoint;
pub mod inspect;
pub mod owed;
pub mod payload;
pub mod proxy;
pub mod reassembly;
pub mod rtt;
pub mod sack;
pub mod segment;
pub mod send_queue;
pub mod seq;
#[cfg(test)]
pub(crate) mod testkit;
