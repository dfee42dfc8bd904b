//! A thin safe layer over `dpdk-sys`: the EAL, packet mempools, owned mbufs,
//! bursts, ports with their queues, and rings.
//!
//! Ownership follows DPDK's rules, expressed in types: an [`Mbuf`] frees itself
//! on drop; a [`Burst`] owns up to [`BURST_SIZE`] of them and, after a
//! transmit, keeps only what the driver refused; an [`RxQueue`] or [`TxQueue`]
//! is handed to exactly one thread, because DPDK queues are not thread-safe.
//! An [`MbufSlice`] keeps received payload in its mbuf, shared by reference
//! count, so a frame can carry it on behind a new header without a copy.

mod burst;
mod eal;
mod error;
mod lcore;
mod mbuf;
mod mempool;
mod port;
mod quiescent;
mod ring;
mod slice;
mod telemetry;

pub use burst::{Burst, BURST_SIZE};
pub use eal::Eal;
pub use error::{DpdkError, Result};
pub use lcore::{
    launch_on_lcore, lcore_available, prefetch, register_thread, tsc, tsc_hz, LcoreTask,
};
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use port::{
    DeviceInfo, Link, Port, PortConfig, PortStats, RingPort, RssSetup, RxQueue, Steering, TxQueue,
    SYMMETRIC_RSS_KEY,
};
pub use quiescent::{deferred_unmaps, DeferredUnmaps, Poller};
pub use ring::{MbufRing, RingConsumer, RingProducer};
pub use slice::{ChainError, MbufSlice};
pub use telemetry::{register_telemetry, TelemetryReply, TelemetryValue};

/// The raw bindings, for the few callers that need a constant or a type.
pub use dpdk_sys as sys;
