//! certgate's benchmark tooling, shared by the criterion micro benchmarks
//! (`benches/engine.rs`), the Envoy harness (`bench-envoy`), the feed load test
//! (`bench-feed`) and the fleet simulation (`bench-fleet`): the synthetic tables and
//! certificates they measure, and the harnesses' parts (Envoy process, load generators,
//! the feed servers and the fleet's pollers, `/proc` readings, report and chart).
//!
//! Nothing here is product code; it only builds inputs for `ruleset` and drives Envoy, `certgate
//! serve` and nginx.

pub mod chart;
pub mod envoy;
pub mod feedserver;
pub mod fleet;
pub mod load;
pub mod pki;
pub mod poll;
pub mod procstat;
pub mod profile;
pub mod report;
pub mod tables;
