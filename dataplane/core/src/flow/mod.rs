//! Per-worker flow state: the canonical flow key, the flow entry with its
//! counters and TCP phase, the table that finds an entry in one hash lookup
//! per packet, and the timer wheel that ages idle flows out.
//!
//! Each worker owns one `FlowTable`; nothing here locks or uses atomics.

mod entry;
mod index;
mod key;
mod slab;
mod table;
mod timer;
pub mod view;

pub use entry::{Direction, FlowEntry, FlowMode, HandoverCause, ProxyLink, TcpPhase, TcpTracker};
pub use key::{FlowKey, Orientation};
pub use table::{EntryHint, FlowTable, FlowTableConfig, FlowTimeouts, Observation, PacketMeta};
