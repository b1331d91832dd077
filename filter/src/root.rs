//! The root context: parses the configuration once per VM, builds the shared state,
//! creates the per-connection contexts and, in `serverFirst` mode, polls paused
//! connections from a tick until their TLS handshake is complete.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;

use crate::config::Config;
use crate::decide::{Phase, Shared};
use crate::host::{Host, Level};
use crate::http::HttpFilter;
use crate::network::NetworkFilter;
use crate::peer;

/// Root id that selects the HTTP filter; any other root id (the default `certgate`)
/// makes network filter contexts. proxy-wasm creates a context before it knows which
/// callbacks it will get, so the root context has to be told.
pub const HTTP_ROOT_ID: &str = "certgate-http";
/// How often paused `serverFirst` connections are polled.
pub const TICK_MILLIS: u64 = 10;
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
        }
    }

    /// Parses and applies the plugin configuration. On error: one error log line and
    /// `false`, which makes Envoy refuse the filter (fail closed).
    pub fn configure(&mut self) -> bool {
        let host = &*self.host;
        let root_id = peer::string_property(host, &["plugin_root_id"]);
        self.kind = if root_id.as_deref() == Some(HTTP_ROOT_ID) {
            Kind::Http
        } else {
            Kind::Network
        };
        let loaded = host
            .plugin_configuration()
            .ok_or(crate::config::ConfigError::Empty)
            .and_then(|bytes| Config::parse(&bytes))
            .and_then(|config| Shared::new(config, host));
        match loaded {
            Ok(shared) => {
                if shared.server_first && self.kind == Kind::Network {
                    host.set_tick_period_millis(TICK_MILLIS);
                }
                host.log(
                    Level::Info,
                    &format!(
                        "configured ({} filter, mode {}, policy {}, {} rules)",
                        match self.kind {
                            Kind::Network => "network",
                            Kind::Http => "http",
                        },
                        if shared.audit_mode() {
                            "audit"
                        } else {
                            "enforce"
                        },
                        shared.policy_digest,
                        shared.engine.table().rules.len(),
                    ),
                );
                self.shared = Some(Rc::new(shared));
                true
            }
            Err(e) => {
                host.log(Level::Error, &format!("invalid configuration: {e}"));
                self.shared = None;
                false
            }
        }
    }

    /// Decides for paused `serverFirst` connections whose handshake has completed.
    pub fn tick(&self) {
        let Some(shared) = &self.shared else { return };
        let host = &*self.host;
        let now = host.now_nanos();
        let pending: Vec<_> = shared
            .pending
            .borrow()
            .iter()
            .map(|(id, p)| (*id, p.clone()))
            .collect();
        for (id, p) in pending {
            if p.phase.get() != Phase::Waiting || !host.enter_context(id) {
                shared.remove_pending(id);
                continue;
            }
            // `connection.mtls` is safe to poll before the handshake ends (it is not
            // cached, unlike `connection.tls_version`).
            let ready = peer::bool_property(host, peer::MTLS);
            let expired = now.saturating_sub(p.since_nanos) > SERVER_FIRST_TIMEOUT_NANOS;
            if !ready && !expired {
                continue;
            }
            shared.remove_pending(id);
            if !ready {
                // Seen in Envoy 1.40: without tcp_proxy `max_early_data_bytes`, tcp_proxy
                // disables reading until its upstream connects, so the handshake stalls.
                host.log(
                    Level::Warn,
                    "serverFirst: TLS handshake not complete after 10s; deciding without \
                     a client certificate (is tcp_proxy `max_early_data_bytes` set?)",
                );
            }
            let verdict = shared.decide(host);
            if verdict.admit {
                p.phase.set(Phase::Admitted);
                host.resume_downstream();
            } else {
                p.phase.set(Phase::Denied);
                host.close_downstream();
            }
        }
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

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.configure()
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
