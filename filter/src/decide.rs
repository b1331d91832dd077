//! One decision for one connection: gather the peer, evaluate, count, record, log.
//! Shared by the network and the HTTP front ends so both act the same.
//!
//! [`Shared`] is the per-VM state the root context builds in `on_configure` and hands
//! to every stream context through an `Rc`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use ruleset::{Engine, Mode};

use crate::audit;
use crate::cache::CertCache;
use crate::config::{Config, ConfigError};
use crate::host::{Host, Level};
use crate::metrics::Metrics;
use crate::peer;

/// HTTP verdicts remembered per connection id, newest first; an evicted connection is
/// decided again. Searched linearly: a few microseconds at most, and a map would cost
/// the module several kilobytes of hash table code.
const HTTP_VERDICTS: usize = 1024;

/// A connection waiting in `serverFirst` mode for its handshake to complete.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The stream context's view of its own state; the tick writes the outcome here.
    pub phase: Rc<Cell<Phase>>,
    /// When the connection was paused (host nanoseconds).
    pub since_nanos: u64,
}

/// Where a network connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not decided yet.
    Waiting,
    /// Let through.
    Admitted,
    /// Closed.
    Denied,
}

/// What the front end must do, and the id it may show to a refused client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Let the connection (request) through.
    pub admit: bool,
    /// Unique decision id (also in the audit record and the warn log line).
    pub decision_id: String,
    /// The audit record, when `audit.log` asked for one.
    pub record: Option<String>,
}

/// Per-VM state: the engine, the options and the caches.
#[derive(Debug)]
pub struct Shared {
    pub engine: Engine,
    pub policy_digest: String,
    pub server_first: bool,
    pub log_all: bool,
    pub metrics: Metrics,
    pub certs: RefCell<CertCache>,
    /// Connections paused in `on_new_connection` (serverFirst), by context id. Only
    /// connections inside their TLS handshake are here, so a list is enough.
    pub pending: RefCell<Vec<(u32, Pending)>>,
    /// HTTP: one decision per connection, by `connection.id`, newest first.
    http_verdicts: RefCell<VecDeque<(u64, Rc<Verdict>)>>,
    decisions: Cell<u64>,
}

impl Shared {
    /// Builds the per-VM state from validated configuration, defining the counters.
    pub fn new(config: Config, host: &dyn Host) -> Result<Shared, ConfigError> {
        let mut table =
            ruleset::decode(&config.table).map_err(|e| ConfigError::BadTable(e.to_string()))?;
        if let Some(mode) = config.mode {
            table.mode = mode;
        }
        if let Some(log) = config.audit_log {
            table.audit_log = log;
        }
        let policy_digest = ruleset::cert::hex_lower(&table.policy_digest);
        Ok(Shared {
            engine: Engine::new(table),
            policy_digest,
            server_first: config.server_first,
            log_all: config.log_all_decisions,
            metrics: Metrics::define(host),
            certs: RefCell::new(CertCache::new(config.cert_cache_size)),
            pending: RefCell::new(Vec::new()),
            http_verdicts: RefCell::new(VecDeque::new()),
            decisions: Cell::new(0),
        })
    }

    /// Decides for the connection of the current (or entered) context.
    pub fn decide(&self, host: &dyn Host) -> Verdict {
        let peer = peer::gather(host, &self.certs);
        let decision = self.engine.evaluate(&peer);
        let admit = decision.admits();
        self.metrics.count(host, &decision);

        let seq = self.decisions.get().wrapping_add(1);
        self.decisions.set(seq);
        let connection = peer::int_property(host, peer::CONNECTION_ID).unwrap_or(0);
        // Time first so ids sort by time across workers; the connection id and a
        // per-VM sequence keep them unique within one Envoy process.
        let decision_id = format!("{:x}-{connection:x}-{seq:x}", host.now_nanos());

        let table = self.engine.table();
        let wanted = audit::wanted(table.audit_log, &decision);
        // Deny records go to the Envoy log at warn; every other decision at info with
        // `logAllDecisions`, else at debug (built only when debug is on: it costs).
        let log_level = if wanted && decision.action == ruleset::Action::Deny {
            Some(Level::Warn)
        } else if self.log_all {
            Some(Level::Info)
        } else if host.log_enabled(Level::Debug) {
            Some(Level::Debug)
        } else {
            None
        };
        let text = (wanted || log_level.is_some()).then(|| {
            audit::record(
                &decision,
                &peer,
                audit::Context {
                    policy_digest: &self.policy_digest,
                    decision_id: &decision_id,
                },
            )
        });
        if let Some(text) = &text {
            if wanted {
                host.set_property(&[audit::FILTER_STATE_KEY], text.as_bytes());
            }
            if let Some(level) = log_level {
                host.log(level, text);
            }
        }
        Verdict {
            admit,
            decision_id,
            record: text.filter(|_| wanted),
        }
    }

    /// The HTTP verdict for `connection`, deciding once per connection.
    /// Returns the verdict and whether it was decided just now.
    pub fn http_verdict(&self, host: &dyn Host) -> (Rc<Verdict>, bool) {
        let connection = peer::int_property(host, peer::CONNECTION_ID);
        if let Some(id) = connection {
            let verdicts = self.http_verdicts.borrow();
            if let Some((_, v)) = verdicts.iter().find(|(c, _)| *c == id) {
                return (Rc::clone(v), false);
            }
        }
        let verdict = Rc::new(self.decide(host));
        if let Some(id) = connection {
            let mut verdicts = self.http_verdicts.borrow_mut();
            verdicts.truncate(HTTP_VERDICTS.saturating_sub(1));
            verdicts.push_front((id, Rc::clone(&verdict)));
        }
        (verdict, true)
    }

    /// Starts polling `context_id` (serverFirst).
    pub fn add_pending(&self, context_id: u32, pending: Pending) {
        let mut list = self.pending.borrow_mut();
        list.retain(|(id, _)| *id != context_id);
        list.push((context_id, pending));
    }

    /// Stops polling `context_id`.
    pub fn remove_pending(&self, context_id: u32) {
        self.pending
            .borrow_mut()
            .retain(|(id, _)| *id != context_id);
    }

    /// Whether the table (after overrides) is in audit mode.
    pub fn audit_mode(&self) -> bool {
        self.engine.table().mode == Mode::Audit
    }
}
