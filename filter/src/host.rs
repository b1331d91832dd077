//! The few host calls the filter makes, behind a trait so the glue can be tested
//! natively with a fake host.
//!
//! [`ProxyHost`] forwards to proxy-wasm's hostcalls. Those wrappers `panic!` on a status
//! they do not expect (a panic kills the VM, and with fail-closed that is an outage), so
//! each call here is one whose statuses are known for Envoy 1.40: properties are read
//! and written only from stream contexts (or a root context after a successful
//! [`Host::enter_context`]), and only `Downstream` is ever resumed or closed (Envoy
//! answers `Unimplemented` for `Upstream`, which proxy-wasm 0.2.5 turns into a panic).

/// A log level; mirrors proxy-wasm's levels the filter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Host calls, as the filter needs them. Methods never fail loudly: a host error
/// reads as "absent" and the decision engine fails closed on absent facts.
pub trait Host {
    /// Reads a property (`connection.peer_certificate`, `destination.port`, ...).
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Sets a property; `["certgate.audit"]` becomes filter state `wasm.certgate.audit`.
    fn set_property(&self, path: &[&str], value: &[u8]);
    /// Writes one line to the Envoy log.
    fn log(&self, level: Level, message: &str);
    /// Whether a message at `level` would be written (avoids building debug lines).
    fn log_enabled(&self, level: Level) -> bool;
    /// Defines (or finds) a counter; `None` if the host refused.
    fn define_counter(&self, name: &str) -> Option<u32>;
    /// Adds one to a counter defined by [`Host::define_counter`].
    fn increment_counter(&self, id: u32);
    /// Defines (or finds) a gauge; `None` if the host refused.
    fn define_gauge(&self, name: &str) -> Option<u32>;
    /// Sets a gauge defined by [`Host::define_gauge`].
    fn set_gauge(&self, id: u32, value: u64);
    /// Closes the downstream connection of the current (or entered) context.
    fn close_downstream(&self);
    /// Resumes a downstream connection paused in `on_new_connection`.
    fn resume_downstream(&self);
    /// Makes later calls act on stream context `context_id` (from a root-context
    /// tick); false if the context is gone.
    fn enter_context(&self, context_id: u32) -> bool;
    /// Answers the current HTTP request locally.
    fn send_http_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    /// Resets the current HTTP stream; on HTTP/1.1 that closes the connection.
    fn reset_http_stream(&self);
    /// Up to `max` bytes of the plugin configuration from byte `start` (`None` when
    /// there is none).
    fn plugin_configuration(&self, start: usize, max: usize) -> Option<Vec<u8>>;
    /// Wall-clock time in nanoseconds since the Unix epoch (0 if unknown). Only for
    /// what names a moment (decision ids, a table's expiry); intervals use
    /// [`Host::monotonic_nanos`], which an operator stepping the clock cannot move.
    fn now_nanos(&self) -> u64;
    /// Monotonic time in nanoseconds from an arbitrary origin fixed per VM.
    fn monotonic_nanos(&self) -> u64;
    /// Asks for `on_tick` every `millis` milliseconds.
    fn set_tick_period_millis(&self, millis: u64);
    /// Starts an HTTP call to `cluster` (from the root context); the token, or `None`
    /// if the host refused (unknown cluster, bad headers).
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_millis: u64,
    ) -> Option<u32>;
    /// A header of the HTTP call response being delivered (`:status`, `etag`).
    fn http_call_response_header(&self, name: &str) -> Option<Vec<u8>>;
    /// The body of the HTTP call response being delivered.
    fn http_call_response_body(&self, size: usize) -> Option<Vec<u8>>;
}

/// The real host: proxy-wasm hostcalls into Envoy.
#[cfg(target_arch = "wasm32")]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyHost;

#[cfg(target_arch = "wasm32")]
impl Host for ProxyHost {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        proxy_wasm::hostcalls::get_property(path.to_vec())
            .ok()
            .flatten()
    }

    fn set_property(&self, path: &[&str], value: &[u8]) {
        let _ = proxy_wasm::hostcalls::set_property(path.to_vec(), Some(value));
    }

    fn log(&self, level: Level, message: &str) {
        let _ = proxy_wasm::hostcalls::log(to_proxy_level(level), message);
    }

    fn log_enabled(&self, level: Level) -> bool {
        use proxy_wasm::types::LogLevel;
        let rank = |l: LogLevel| l as u32;
        match proxy_wasm::hostcalls::get_log_level() {
            Ok(current) => rank(to_proxy_level(level)) >= rank(current),
            Err(_) => true,
        }
    }

    fn define_counter(&self, name: &str) -> Option<u32> {
        proxy_wasm::hostcalls::define_metric(proxy_wasm::types::MetricType::Counter, name).ok()
    }

    fn increment_counter(&self, id: u32) {
        let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
    }

    fn define_gauge(&self, name: &str) -> Option<u32> {
        proxy_wasm::hostcalls::define_metric(proxy_wasm::types::MetricType::Gauge, name).ok()
    }

    fn set_gauge(&self, id: u32, value: u64) {
        let _ = proxy_wasm::hostcalls::record_metric(id, value);
    }

    fn close_downstream(&self) {
        let _ = proxy_wasm::hostcalls::close_downstream();
    }

    fn resume_downstream(&self) {
        let _ = proxy_wasm::hostcalls::resume_downstream();
    }

    fn enter_context(&self, context_id: u32) -> bool {
        proxy_wasm::hostcalls::set_effective_context(context_id).is_ok()
    }

    fn send_http_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let _ = proxy_wasm::hostcalls::send_http_response(status, headers.to_vec(), Some(body));
    }

    fn reset_http_stream(&self) {
        let _ = proxy_wasm::hostcalls::reset_http_request();
    }

    fn plugin_configuration(&self, start: usize, max: usize) -> Option<Vec<u8>> {
        proxy_wasm::hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            start,
            max,
        )
        .ok()
        .flatten()
    }

    fn now_nanos(&self) -> u64 {
        proxy_wasm::hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_nanos()).ok())
            .unwrap_or(0)
    }

    fn monotonic_nanos(&self) -> u64 {
        // std's `Instant` is WASI `clock_time_get(MONOTONIC)`, which proxy-wasm-cpp-host
        // answers from the host's monotonic clock (Envoy's dispatcher time source); the
        // hostcall API has no monotonic call of its own. The origin is the first call.
        thread_local! {
            static ORIGIN: std::time::Instant = std::time::Instant::now();
        }
        ORIGIN.with(|o| u64::try_from(o.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn set_tick_period_millis(&self, millis: u64) {
        let _ = proxy_wasm::hostcalls::set_tick_period(std::time::Duration::from_millis(millis));
    }

    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_millis: u64,
    ) -> Option<u32> {
        // Statuses Envoy returns here: Ok, BadArgument (unknown cluster), InternalFailure.
        proxy_wasm::hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            None,
            Vec::new(),
            std::time::Duration::from_millis(timeout_millis),
        )
        .ok()
    }

    fn http_call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        // The bytes variant: the string one panics on a header that is not UTF-8.
        proxy_wasm::hostcalls::get_map_value_bytes(
            proxy_wasm::types::MapType::HttpCallResponseHeaders,
            name,
        )
        .ok()
        .flatten()
    }

    fn http_call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        proxy_wasm::hostcalls::get_buffer(
            proxy_wasm::types::BufferType::HttpCallResponseBody,
            0,
            size,
        )
        .ok()
        .flatten()
    }
}

#[cfg(target_arch = "wasm32")]
fn to_proxy_level(level: Level) -> proxy_wasm::types::LogLevel {
    use proxy_wasm::types::LogLevel;
    match level {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

/// An in-memory host for native tests: properties per context, recorded effects.
#[cfg(test)]
pub mod fake {
    use std::cell::{Cell, RefCell};
    use std::collections::{BTreeMap, HashMap};

    use super::{Host, Level};

    /// A local HTTP response the filter sent.
    #[derive(Debug, Clone)]
    pub struct Response {
        pub context: u32,
        pub status: u32,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    /// An HTTP call the filter dispatched: cluster, headers, timeout in milliseconds.
    pub type Call = (String, Vec<(String, String)>, u64);

    /// What the fake host saw and holds. Context 0 is the root.
    #[derive(Debug, Default)]
    pub struct FakeHost {
        pub config: RefCell<Option<Vec<u8>>>,
        /// Reads of the configuration so far.
        pub config_reads: Cell<usize>,
        /// Properties per context id, keyed by the dotted path.
        pub props: RefCell<HashMap<u32, HashMap<String, Vec<u8>>>>,
        /// Properties set, per context id.
        pub set_props: RefCell<HashMap<u32, HashMap<String, Vec<u8>>>>,
        pub logs: RefCell<Vec<(Level, String)>>,
        pub counters: RefCell<BTreeMap<String, u64>>,
        counter_ids: RefCell<Vec<String>>,
        /// Gauges by name, and their ids (the index).
        pub gauges: RefCell<BTreeMap<String, u64>>,
        gauge_ids: RefCell<Vec<String>>,
        pub closed: RefCell<Vec<u32>>,
        pub resumed: RefCell<Vec<u32>>,
        pub responses: RefCell<Vec<Response>>,
        /// Contexts whose HTTP stream was reset.
        pub resets: RefCell<Vec<u32>>,
        /// Every property read, in order, as (context, path).
        pub reads: RefCell<Vec<(u32, String)>>,
        pub current: Cell<u32>,
        pub tick_millis: Cell<Option<u64>>,
        /// Wall clock (Unix nanoseconds); tests step it back and forth.
        pub now: Cell<u64>,
        /// Monotonic clock; only ever moves forward.
        pub mono: Cell<u64>,
        /// Lowest level logged; `None` means info.
        pub log_level: Cell<Option<Level>>,
        /// HTTP calls dispatched: (cluster, headers, timeout ms).
        pub calls: RefCell<Vec<Call>>,
        /// Makes `dispatch_http_call` fail.
        pub refuse_calls: Cell<bool>,
        /// The response being delivered: headers and body.
        pub response_headers: RefCell<Vec<(String, Vec<u8>)>>,
        pub response_body: RefCell<Option<Vec<u8>>>,
    }

    impl FakeHost {
        pub fn set(&self, ctx: u32, path: &str, value: impl Into<Vec<u8>>) {
            self.props
                .borrow_mut()
                .entry(ctx)
                .or_default()
                .insert(path.to_owned(), value.into());
        }

        /// What `set` stored for `ctx`, without counting it as a read.
        pub fn get(&self, ctx: u32, path: &str) -> Option<Vec<u8>> {
            self.props
                .borrow()
                .get(&ctx)
                .and_then(|m| m.get(path).cloned())
        }

        pub fn counter(&self, name: &str) -> u64 {
            self.counters.borrow().get(name).copied().unwrap_or(0)
        }

        /// The sum of the labelled counters named `name` whose tags include every
        /// `(tag, value)` of `tags` (`[("reason", "default_deny")]`).
        pub fn labelled(&self, name: &str, tags: &[(&str, &str)]) -> u64 {
            self.counters
                .borrow()
                .iter()
                .filter(|(n, _)| {
                    n.ends_with(&format!(";.;{name}"))
                        && tags
                            .iter()
                            .all(|(t, v)| n.contains(&format!("{t}=.={v};.;")))
                })
                .map(|(_, c)| *c)
                .sum()
        }

        pub fn audit(&self, ctx: u32) -> Option<String> {
            self.set_props
                .borrow()
                .get(&ctx)
                .and_then(|m| m.get("certgate.audit"))
                .map(|v| String::from_utf8(v.clone()).unwrap())
        }

        pub fn reads_of(&self, path: &str) -> usize {
            self.reads
                .borrow()
                .iter()
                .filter(|(_, p)| p == path)
                .count()
        }

        pub fn logged(&self, level: Level) -> Vec<String> {
            self.logs
                .borrow()
                .iter()
                .filter(|(l, _)| *l == level)
                .map(|(_, m)| m.clone())
                .collect()
        }
    }

    impl Host for FakeHost {
        fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
            let key = path.join(".");
            let ctx = self.current.get();
            self.reads.borrow_mut().push((ctx, key.clone()));
            self.props
                .borrow()
                .get(&ctx)
                .and_then(|m| m.get(&key).cloned())
        }
        fn set_property(&self, path: &[&str], value: &[u8]) {
            let ctx = self.current.get();
            assert_ne!(ctx, 0, "set_property from the root context");
            self.set_props
                .borrow_mut()
                .entry(ctx)
                .or_default()
                .insert(path.join("."), value.to_vec());
        }
        fn log(&self, level: Level, message: &str) {
            self.logs.borrow_mut().push((level, message.to_owned()));
        }
        fn log_enabled(&self, level: Level) -> bool {
            level >= self.log_level.get().unwrap_or(Level::Info)
        }
        fn define_counter(&self, name: &str) -> Option<u32> {
            let mut ids = self.counter_ids.borrow_mut();
            let id = match ids.iter().position(|n| n == name) {
                Some(i) => i,
                None => {
                    ids.push(name.to_owned());
                    self.counters.borrow_mut().insert(name.to_owned(), 0);
                    ids.len() - 1
                }
            };
            Some(id as u32)
        }
        fn increment_counter(&self, id: u32) {
            let name = self.counter_ids.borrow()[id as usize].clone();
            *self.counters.borrow_mut().get_mut(&name).unwrap() += 1;
        }
        fn define_gauge(&self, name: &str) -> Option<u32> {
            let mut ids = self.gauge_ids.borrow_mut();
            let id = match ids.iter().position(|n| n == name) {
                Some(i) => i,
                None => {
                    ids.push(name.to_owned());
                    self.gauges.borrow_mut().insert(name.to_owned(), 0);
                    ids.len() - 1
                }
            };
            Some(id as u32)
        }
        fn set_gauge(&self, id: u32, value: u64) {
            let name = self.gauge_ids.borrow()[id as usize].clone();
            self.gauges.borrow_mut().insert(name, value);
        }
        fn close_downstream(&self) {
            self.closed.borrow_mut().push(self.current.get());
        }
        fn resume_downstream(&self) {
            self.resumed.borrow_mut().push(self.current.get());
        }
        fn enter_context(&self, context_id: u32) -> bool {
            if self.props.borrow().contains_key(&context_id) {
                self.current.set(context_id);
                true
            } else {
                false
            }
        }
        fn send_http_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
            let headers = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            self.responses.borrow_mut().push(Response {
                context: self.current.get(),
                status,
                headers,
                body: body.to_vec(),
            });
        }
        fn reset_http_stream(&self) {
            self.resets.borrow_mut().push(self.current.get());
        }
        fn plugin_configuration(&self, start: usize, max: usize) -> Option<Vec<u8>> {
            self.config_reads.set(self.config_reads.get() + 1);
            crate::config::chunk_of(self.config.borrow().as_ref()?, start, max)
        }
        fn now_nanos(&self) -> u64 {
            self.now.get()
        }
        fn monotonic_nanos(&self) -> u64 {
            self.mono.get()
        }
        fn set_tick_period_millis(&self, millis: u64) {
            self.tick_millis.set(Some(millis));
        }
        fn dispatch_http_call(
            &self,
            cluster: &str,
            headers: &[(&str, &str)],
            timeout_millis: u64,
        ) -> Option<u32> {
            assert_eq!(self.current.get(), 0, "http call from a stream context");
            if self.refuse_calls.get() {
                return None;
            }
            let mut calls = self.calls.borrow_mut();
            calls.push((
                cluster.to_owned(),
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                timeout_millis,
            ));
            Some(calls.len() as u32)
        }
        fn http_call_response_header(&self, name: &str) -> Option<Vec<u8>> {
            // Envoy answers BadArgument without a response, and proxy-wasm panics on it.
            assert!(
                !self.response_headers.borrow().is_empty(),
                "response header read after a failed call"
            );
            self.response_headers
                .borrow()
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
        fn http_call_response_body(&self, size: usize) -> Option<Vec<u8>> {
            let body = self.response_body.borrow().clone()?;
            Some(body.into_iter().take(size).collect())
        }
    }
}
