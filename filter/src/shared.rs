//! The per-VM state the root context builds in `on_configure` and hands to every
//! stream context through an `Rc`. It composes the parts, each in its own module: the
//! table in force (`table.rs`), the open connections (`connections.rs`), the decision
//! pipeline (`decide.rs`) and the counters (`metrics.rs`); and it holds the operations
//! that span two of them: a fed table closing the connections it denies, and the
//! verdicts remembered per HTTP connection and table generation.

use std::rc::Rc;

use ruleset::Peer;

use crate::config::{Config, ConfigError};
use crate::connections::Connections;
use crate::decide::Decider;
use crate::host::Host;
use crate::log::Logging;
use crate::metrics::Metrics;
use crate::table::{Installed, Refusal, Tables};
use crate::verdict::Verdict;

/// Per-VM state: the table, the open connections, the decision pipeline, the counters.
#[derive(Debug)]
pub struct Shared {
    pub table: Tables,
    pub connections: Connections,
    pub decider: Decider,
    pub metrics: Metrics,
    /// `serverFirst`: network connections are paused until their handshake completes.
    pub server_first: bool,
}

impl Shared {
    /// Builds the per-VM state from validated configuration, defining the counters.
    pub fn new(mut config: Config, host: &dyn Host) -> Result<Shared, ConfigError> {
        let logging = Logging::new(config.log_all_decisions, host);
        let metrics = Metrics::define(host);
        let decider = Decider::new(config.cert_cache_size, logging);
        let table = Tables::new(&mut config, host)?;
        if let Some(active) = table.active() {
            metrics.table_in_force(host, active.engine.table());
        }
        Ok(Shared {
            connections: Connections::new(table.fed()),
            table,
            decider,
            metrics,
            server_first: config.server_first,
        })
    }

    /// Decides for the connection of the current (or entered) context.
    pub fn decide(&self, host: &dyn Host) -> Verdict {
        self.decide_peer(host).0
    }

    /// [`Shared::decide`], also returning the peer it decided for.
    pub fn decide_peer(&self, host: &dyn Host) -> (Verdict, Peer) {
        self.decider.decide_peer(host, &self.table, &self.metrics)
    }

    /// The HTTP verdict for the current connection, deciding once per connection and
    /// table. Returns the verdict and whether it was decided just now.
    pub fn http_verdict(&self, host: &dyn Host) -> (Rc<Verdict>, bool) {
        self.connections
            .http_verdict(host, self.table.generation(), &self.metrics, || {
                self.decide(host)
            })
    }

    /// Judges a table the feed delivered ([`Tables::install`]) and, when a newer one
    /// is in force, counts it and closes the open connections it denies.
    pub fn install(&self, host: &dyn Host, bytes: Vec<u8>) -> Result<Installed, Refusal> {
        let installed = self.table.install(host, bytes)?;
        if installed == Installed::New {
            Metrics::bump(host, self.metrics.feed_updates);
            if let Some(active) = self.table.active() {
                self.metrics.table_in_force(host, active.engine.table());
                self.connections
                    .close_denied(host, &active.engine, &self.metrics);
            }
        }
        Ok(installed)
    }
}
