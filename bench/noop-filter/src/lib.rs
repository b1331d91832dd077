//! A proxy-wasm network filter that lets every connection through without looking at
//! it. Envoy still creates a stream context per connection and calls
//! `on_new_connection` and `on_downstream_data` across the V8 boundary, so this module
//! measures the wasm host's own floor (case (w) of `make bench-envoy`): whatever
//! certgate costs beyond it is ours. With the root id `noop-http` it is an HTTP filter
//! that continues every request (case (hw)), the same floor for HTTP.
#![forbid(unsafe_code)]

use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType};

/// The root id that selects the HTTP front end.
pub const HTTP_ROOT_ID: &str = "noop-http";

/// The root context: accepts any configuration and creates a [`Noop`] per connection
/// (or per HTTP request).
#[derive(Debug, Default)]
pub struct NoopRoot {
    http: bool,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // The root id tells which front end the plugin is (as in certgate's filter).
        let root_id = self
            .get_property(vec!["plugin_root_id"])
            .and_then(|b| String::from_utf8(b).ok());
        self.http = root_id.as_deref() == Some(HTTP_ROOT_ID);
        true
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Noop))
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(if self.http {
            ContextType::HttpContext
        } else {
            ContextType::StreamContext
        })
    }
}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
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
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::<NoopRoot>::default() });
}}
