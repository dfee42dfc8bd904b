//! The TCP proxy in the data plane (issue 4): the engine of `tcp::proxy` per flow, framed onto
//! the wire and kept per worker.

mod counters;
pub mod frame;
pub mod limits;
pub mod table;
#[cfg(test)]
mod tests;

pub use counters::ProxyCounters;
pub use frame::{FlowAddressing, Inbound, Unusable, MAX_HEADERS_LEN};
pub use limits::{LimitCounters, LimitNow};
pub use table::{
    BudgetAction, ClearAction, Cleared, Disposition, FrameSink, MidstreamAction, ProxySettings,
    ProxyTable, ProxyTarget, RuleOptions,
};
