//! Fuzz targets for Tollgate: the checks each target runs, the input formats of the
//! structured ones, and their seed corpora. The targets themselves (`fuzz_targets/`) only hand
//! libFuzzer's input to [`frames::check`], [`shard::run`], [`engine::run`], [`detect::check`]
//! and [`control::check`], so the same checks also replay the corpora under `cargo test`.

pub mod control;
pub mod coverage;
pub mod cursor;
pub mod detect;
pub mod engine;
pub mod frames;
pub mod seeds;
pub mod shard;

#[cfg(test)]
mod tests;
