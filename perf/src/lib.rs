//! Benchmarks, harnesses and traffic tools for Tollgate.
//!
//! - [`frames`]: synthetic flows and their prebuilt frames (also used by the
//!   criterion benchmarks in `benches/`).
//! - [`wire`]: a traffic generator and sink thread working on ring devices.
//! - [`io_forward`]: plain io-forward, the ceiling for forwarding benchmarks.
//! - [`ipsec_over_tcp`]: the wire formats of IPsec over TCP (cTCP, RFC 8229) as the
//!   `ctcp-peer` emulator speaks them, also used by `pcap-gen`.
//!
//! The `bench-fwd` binary (`scripts/bench fwd`) puts the first three together.

#![forbid(unsafe_code)]

pub mod frames;
pub mod io_forward;
pub mod ipsec_over_tcp;
pub mod wire;
