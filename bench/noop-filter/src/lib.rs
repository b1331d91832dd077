//! A proxy-wasm network filter that lets every connection through without looking at
//! it. Envoy still creates a stream context per connection and calls
//! `on_new_connection` and `on_downstream_data` across the V8 boundary, so this module
//! measures the wasm host's own floor (case (w) of `make bench-envoy`): whatever
//! certgate costs beyond it is ours.
#![forbid(unsafe_code)]

use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType};

/// The root context: accepts any configuration and creates a [`Noop`] per connection.
#[derive(Debug, Default)]
pub struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        true
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Noop))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

/// The per-connection context: continues at every event.
#[derive(Debug, Default)]
pub struct Noop;

impl Context for Noop {}

impl StreamContext for Noop {
    fn on_new_connection(&mut self) -> Action {
        Action::Continue
    }

    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}
