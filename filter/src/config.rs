//! The plugin configuration lives in the `certgate-filter-config` crate, shared with
//! `certgate emit` so that what emit writes is what the filter reads.

pub use filter_config::config::*;
