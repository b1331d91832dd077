//! certgate's benchmark tooling, shared by the criterion micro benchmarks
//! (`benches/engine.rs`) and the Envoy harness (`bench-envoy`): the synthetic tables and
//! certificates both measure, and the harness's parts (Envoy process, load generator,
//! report and chart).
//!
//! Nothing here is product code; it only builds inputs for `ruleset` and drives Envoy.

pub mod chart;
pub mod envoy;
pub mod load;
pub mod pki;
pub mod profile;
pub mod report;
pub mod tables;
