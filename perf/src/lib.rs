//! Benchmarks, harnesses and traffic tools for Tollgate.
