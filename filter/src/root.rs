//! The root context: parses the configuration once per VM, builds the shared state,
//! creates the per-connection contexts and, from a tick, polls the live table feed
//! (`feed`) and, in `serverFirst` mode, paused connections until their TLS handshake
//! is complete.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;

use crate::config::Config;
use crate::connections::Phase;
use crate::feed::Feed;
use crate::host::{Host, Level};
use crate::http::HttpFilter;
use crate::network::NetworkFilter;
use crate::peer;
use crate::shared::Shared;

/// Root id that selects the HTTP filter; any other root id (the default `certgate`)
/// makes network filter contexts. proxy-wasm creates a context before it knows which
/// callbacks it will get, so the root context has to be told.
pub const HTTP_ROOT_ID: &str = "certgate-http";
/// How often paused `serverFirst` connections are polled.
pub const TICK_MILLIS: u64 = 10;
/// The longest tick otherwise: Envoy's log level is read once per tick, not once per
/// decision (a host call on every connection), so debug lines start at most this long
/// after the level is raised.
pub const LOG_LEVEL_TICK_MILLIS: u64 = 1000;
/// A paused connection whose handshake has not completed by then is decided anyway
/// (without a client certificate that is a deny): nothing waits forever.
pub const SERVER_FIRST_TIMEOUT_NANOS: u64 = 10_000_000_000;

/// Which front end this root context serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Network,
    Http,
}

/// The root context of one plugin configuration in one VM (one per worker thread).
pub struct Root {
    host: Rc<dyn Host>,
    kind: Kind,
    shared: Option<Rc<Shared>>,
    feed: Option<Feed>,
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Root")
            .field("kind", &self.kind)
            .field("configured", &self.shared.is_some())
            .finish()
    }
}

impl Root {
    pub fn new(host: Rc<dyn Host>) -> Self {
        Root {
            host,
            kind: Kind::Network,
            shared: None,
            feed: None,
        }
    }

    /// Parses and applies the plugin configuration (`size` bytes, as the host
    /// announced). On error: one error log line and `false`, which makes Envoy refuse
    /// the filter (fail closed).
    pub fn configure(&mut self, size: usize) -> bool {
        let host = &*self.host;
        let root_id = peer::string_property(host, &["plugin_root_id"]);
        self.kind = if root_id.as_deref() == Some(HTTP_ROOT_ID) {
            Kind::Http
        } else {
            Kind::Network
        };
        let loaded = Config::read(size, |start, max| host.plugin_configuration(start, max))
            .and_then(|config| {
                // Worker VMs share their context ids; the moment each was configured
                // tells them apart (the jitter's seed and the poller's name).
                let seed = host.now_nanos() ^ host.monotonic_nanos().rotate_left(32);
                let plugin = peer::string_property(host, &["plugin_name"])
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "certgate".to_owned());
                let feed = config.feed.clone().map(|f| Feed::new(f, seed, &plugin));
                Shared::new(config, host).map(|s| (s, feed))
            });
        match loaded {
            Ok((shared, feed)) => {
                host.set_tick_period_millis(if shared.server_first && self.kind == Kind::Network {
                    TICK_MILLIS
                } else {
                    feed.as_ref()
                        .map_or(LOG_LEVEL_TICK_MILLIS, |f| f.tick_millis())
                        .min(LOG_LEVEL_TICK_MILLIS)
                });
                let rules = shared
                    .table
                    .active()
                    .map_or(0, |a| a.engine.table().rules.len());
                host.log(
                    Level::Info,
                    &format!(
                        "configured ({} filter, mode {}, policy {}, {} rules{})",
                        match self.kind {
                            Kind::Network => "network",
                            Kind::Http => "http",
                        },
                        if shared.table.audit_mode() {
                            "audit"
                        } else {
                            "enforce"
                        },
                        shared
                            .table
                            .active()
                            .map_or_else(|| "none yet".to_owned(), |a| a.policy_digest.clone()),
                        rules,
                        if feed.is_some() { ", live feed" } else { "" },
                    ),
                );
                self.shared = Some(Rc::new(shared));
                self.feed = feed;
                true
            }
            Err(e) => {
                host.log(Level::Error, &format!("invalid configuration: {e}"));
                self.shared = None;
                self.feed = None;
                false
            }
        }
    }

    /// Reads Envoy's log level, polls the feed, then decides for paused `serverFirst`
    /// connections whose handshake has completed.
    pub fn tick(&self) {
        let Some(shared) = &self.shared else { return };
        let host = &*self.host;
        shared.decider.log.read_level(host);
        // First: the HTTP call must be dispatched from the root context, before the
        // loop below enters stream contexts.
        if let Some(feed) = &self.feed {
            feed.tick(host, shared);
        }
        shared.table.log_staleness(host);
        let now = host.monotonic_nanos();
        for (id, p) in shared.connections.pending() {
            if p.phase.get() != Phase::Waiting || !host.enter_context(id) {
                shared.connections.remove_pending(id);
                continue;
            }
            // `connection.mtls` is safe to poll before the handshake ends (it is not
            // cached, unlike `connection.tls_version`).
            let ready = peer::bool_property(host, peer::MTLS);
            let expired = now.saturating_sub(p.since_nanos) > SERVER_FIRST_TIMEOUT_NANOS;
            if !ready && !expired {
                continue;
            }
            shared.connections.remove_pending(id);
            if !ready {
                // Seen in Envoy 1.40: without tcp_proxy `max_early_data_bytes`, tcp_proxy
                // disables reading until its upstream connects, so the handshake stalls.
                host.log(
                    Level::Warn,
                    "serverFirst: TLS handshake not complete after 10s; deciding without \
                     a client certificate (is tcp_proxy `max_early_data_bytes` set?)",
                );
            }
            let (verdict, peer) = shared.decide_peer(host);
            if verdict.admit {
                p.phase.set(Phase::Admitted);
                shared.connections.add_live(id, Rc::clone(&p.phase), peer);
                host.resume_downstream();
            } else {
                p.phase.set(Phase::Denied);
                host.close_downstream();
            }
        }
    }

    /// A feed poll answered (or failed: no headers).
    pub fn http_call_response(&self, token: u32, num_headers: usize, body_size: usize) {
        if let (Some(shared), Some(feed)) = (&self.shared, &self.feed) {
            feed.response(&*self.host, shared, token, num_headers, body_size);
        }
    }

    pub fn shared(&self) -> Option<&Rc<Shared>> {
        self.shared.as_ref()
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn network_filter(&self, context_id: u32) -> NetworkFilter {
        NetworkFilter::new(Rc::clone(&self.host), self.shared.clone(), context_id)
    }

    pub fn http_filter(&self) -> HttpFilter {
        HttpFilter::new(Rc::clone(&self.host), self.shared.clone())
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.http_call_response(token_id, num_headers, body_size);
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        self.configure(plugin_configuration_size)
    }

    fn on_tick(&mut self) {
        self.tick();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(self.http_filter()))
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(self.network_filter(context_id)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(match self.kind {
            Kind::Network => ContextType::StreamContext,
            Kind::Http => ContextType::HttpContext,
        })
    }
}
