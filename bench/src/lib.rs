//! certgate's benchmark tooling, shared by the criterion micro benchmarks
//! (`benches/engine.rs`), the Envoy harness (`bench-envoy`) and the feed load test
//! (`bench-feed`): the synthetic tables and certificates they measure, and the harnesses'
//! parts (Envoy process, load generators, the feed servers, `/proc` readings, report and
//! chart).
//!
//! Nothing here is product code; it only builds inputs for `ruleset` and drives Envoy, `certgate
//! serve` and nginx.

pub mod chart;
pub mod envoy;
pub mod feedserver;
pub mod load;
pub mod pki;
pub mod poll;
pub mod procstat;
pub mod profile;
pub mod report;
pub mod tables;
