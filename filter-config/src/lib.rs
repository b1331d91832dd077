//! The certgate filter's configuration: the JSON object inside the plugin's
//! `google.protobuf.StringValue` (what Istio makes of a WasmPlugin's `pluginConfig`).
//!
//! One crate for both ends, so they cannot disagree: the filter reads its configuration
//! with [`Config::read`], and `certgate emit` builds a [`Config`], refuses what the
//! filter would refuse ([`Config::check`], which runs the filter's parser on the
//! serialised configuration) and writes it with [`Config::serialise`]. Every limit is a
//! named constant and one test in the parser.
//!
//! The crate is built into the filter's wasm module, so it has no serde_json: its JSON
//! reader and writer are [`json`], and the inline table is base64-decoded while the
//! configuration streams in ([`lift`]).
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod config;
pub mod json;
pub mod lift;
pub mod stats;

pub use config::{Config, ConfigError, FeedConfig};
