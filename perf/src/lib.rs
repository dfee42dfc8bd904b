//! Benchmarks, harnesses and traffic tools for Tollgate.
//!
//! - [`frames`]: synthetic flows and their prebuilt frames (also used by the
//!   criterion benchmarks in `benches/`).
//! - [`wire`]: a traffic generator and sink thread working on ring devices.
//! - [`io_forward`]: plain io-forward, the ceiling for forwarding benchmarks.
//!
//! The `bench-fwd` binary (`scripts/bench fwd`) puts them together.

pub mod frames;
pub mod io_forward;
pub mod wire;
