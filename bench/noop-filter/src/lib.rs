//! A proxy-wasm network filter that lets every connection through without looking at
//! it. Envoy still creates a stream context per connection and calls
//! `on_new_connection` and `on_downstream_data` across the V8 boundary, so this module
//! measures the wasm host's own floor (case (w) of `make bench-envoy`): whatever
//! certgate costs beyond it is ours. With the root id `noop-http` it is an HTTP filter
//! that continues every request (case (hw)), the same floor for HTTP.
//!
//! With the configuration `read <attribute>` (such as `read
//! connection.sha256_peer_certificate_digest`) the network filter reads that one
//! attribute from Envoy at each connection's first data and ignores it (case (wd)): the
//! floor of any filter that has to tell which certificate a connection presents.
#![forbid(unsafe_code)]

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType};

/// The root id that selects the HTTP front end.
pub const HTTP_ROOT_ID: &str = "noop-http";

/// The root context: accepts any configuration and creates a [`Noop`] per connection
/// (or per HTTP request).
#[derive(Debug, Default)]
pub struct NoopRoot {
    http: bool,
    /// The attribute path to read per connection, from `read <a.b.c>`.
    read: Option<Rc<[String]>>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // The root id tells which front end the plugin is (as in certgate's filter).
        let root_id = self
            .get_property(vec!["plugin_root_id"])
            .and_then(|b| String::from_utf8(b).ok());
        self.http = root_id.as_deref() == Some(HTTP_ROOT_ID);
        let configuration = self
            .get_plugin_configuration()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        self.read = configuration
            .trim()
            .strip_prefix("read ")
            .map(|path| path.trim().split('.').map(str::to_string).collect());
        true
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Noop {
            read: self.read.clone(),
        }))
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop { read: None }))
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

/// The per-connection context: continues at every event, after reading the configured
/// attribute once.
#[derive(Debug, Default)]
pub struct Noop {
    read: Option<Rc<[String]>>,
}

impl Context for Noop {}

impl StreamContext for Noop {
    fn on_new_connection(&mut self) -> Action {
        Action::Continue
    }

    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        if let Some(path) = self.read.take() {
            let _ = self.get_property(path.iter().map(String::as_str).collect());
        }
        Action::Continue
    }
}

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::<NoopRoot>::default() });
}}
