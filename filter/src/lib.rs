//! certgate's proxy-wasm filter: Envoy (or Istio) loads this module to enforce a
//! compiled certgate table on every downstream mTLS connection.
//!
//! This file is the entry point only. The root context (`root.rs`) parses the
//! configuration and builds the shared state (`shared.rs`); `network.rs` and `http.rs`
//! are the two front ends; every decision goes through `decide.rs` to the `ruleset`
//! engine. ARCHITECTURE.md has the module map.
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

pub mod audit;
pub mod cache;
pub mod config;
pub mod connections;
pub mod decide;
pub mod delta;
pub mod feed;
pub mod host;
pub mod http;
pub mod json;
pub mod log;
pub mod memo;
pub mod metrics;
pub mod network;
pub mod peer;
pub mod root;
pub mod shared;
pub mod table;
pub mod verdict;

#[cfg(test)]
mod tests;

// proxy-wasm's `main!` expands to the `_initialize` export Envoy calls once per VM.
// Its `unsafe` block is inside the macro's own crate span, so `forbid(unsafe_code)`
// above still holds for every line written here.
#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    // No `set_log_level`: the filter logs through host calls, not the `log` crate, and
    // std's default panic hook already reaches the Envoy log through WASI stderr.
    proxy_wasm::set_root_context(|_context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::new(std::rc::Rc::new(host::ProxyHost)))
    });
}}
