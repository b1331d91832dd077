//! The JSON reader and writer live in the `certgate-filter-config` crate (the
//! configuration is read with them); the filter writes its audit records with them too.

pub use filter_config::json::*;
